"""Evaluating the payer rules: one order line in, one :class:`Determination` out.

Pure and quick (no I/O, a dictionary lookup plus a few compiled FHIRPath conditions), so CRD can run
it inline on every hook call and PAS on every Claim item.

Steps, each written to ``Determination.trace`` in plain language:
1. is the Coverage this payer's? (identifier, reference, resolved payor Organization or name)
2. is it active on the service date?
3. which rule: exact code before range, plan-specific before general, then ``priority``, then file order
4. the rule's conditions (FHIRPath over the order, patient, coverage, encounter, ...), in order
5. gold-carding: an auth-needed service ordered by a gold-carded provider is "satisfied"
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any, Iterable

from server.rules import codes as codesys
from server.rules.definitions import Condition, GoldCard, Payer, Rule, _ref_id
from server.rules.model import CRD_TEMP, Determination, EvaluationInput

log = logging.getLogger("precert.rules")

MEMBER_ID = "http://terminology.hl7.org/CodeSystem/v2-0203"

_FALLBACK = {"covered": "covered", "pa_needed": "no-auth", "review": "auto"}
_LIST_FIELDS = ("doc_needed", "doc_purpose", "info_needed", "questionnaires", "billing_codes", "alternatives")
_APPEND_FIELDS = ("instructions", "links")


def _reason(code: str | None, display: str, system: str | None = CRD_TEMP) -> dict:
    return {"code": code, "system": system if code else None, "display": display}


def _parse_date(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        parts = value[:10].split("-")
        y = int(parts[0])
        m = int(parts[1]) if len(parts) > 1 else 1
        d = int(parts[2]) if len(parts) > 2 else 1
        return date(y, m, d)
    except (ValueError, IndexError):
        return None


def _age(birth: date | None, on: date) -> int | None:
    if birth is None:
        return None
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def plan_of(coverage: dict | None) -> str | None:
    """The Coverage.class value whose type is 'plan'."""
    for cls in _list((coverage or {}).get("class")):
        if not isinstance(cls, dict):
            continue
        ctype = cls.get("type") if isinstance(cls.get("type"), dict) else {}
        for coding in _list(ctype.get("coding")):
            if isinstance(coding, dict) and coding.get("code") == "plan" and isinstance(cls.get("value"), str):
                return cls["value"]
    return None


class RuleSet:
    """The active, validated rules. Built by :func:`server.rules.loader.load_directory`."""

    def __init__(self, payer: Payer, defaults: dict, gold_cards: list[GoldCard], rules: list[Rule],
                 source: str = "", files: list[str] | None = None, version: str = ""):
        self.payer = payer
        self.defaults = {**_FALLBACK, **defaults}
        self.gold_cards = gold_cards
        self.rules = rules
        self.source = source
        self.files = files or []
        self.version = version
        self.by_id = {r.id: r for r in rules}
        # (family, code) -> rules, and the range matchers, for the lookup in step 3.
        self._exact: dict[tuple[str, str], list[Rule]] = {}
        self._ranges: list[tuple[str, str, str, Rule]] = []
        for rule in rules:
            for m in rule.matchers:
                if m.code is not None:
                    self._exact.setdefault((m.family, m.code), []).append(rule)
                else:
                    self._ranges.append((m.family, m.low, m.high, rule))
        self._choices: dict[tuple, tuple[Rule | None, int]] = {}  # (codes, plan) -> chosen rule, memoised
        self._gold: dict[str, list[GoldCard]] = {}
        for g in gold_cards:
            self._gold.setdefault(g.npi, []).append(g)
        self._payer_idents = {(s, v) for s, v in payer.identifiers}
        self._payer_values = {v for _, v in payer.identifiers}
        self._payer_names = {n.lower() for n in (payer.name, *payer.aliases) if n}
        self._payer_refs = {_ref_id(r) for r in payer.references}

    # ------------------------------------------------------------------ payer and coverage
    def payer_status(self, coverage: dict | None, payer_org: dict | None = None) -> tuple[str, str]:
        """('yes' | 'no' | 'unknown', why) for whether ``coverage`` is with this payer."""
        if not coverage:
            return "yes", "no Coverage was given; evaluated as this payer's member"
        payors = [p for p in _list(coverage.get("payor")) if isinstance(p, dict)]
        contained = {f"#{c.get('id')}": c for c in _list(coverage.get("contained")) if isinstance(c, dict)}
        if not payors:
            return "unknown", "the Coverage names no payor"
        saw_foreign = None
        for p in payors:
            orgs = []
            ref = p.get("reference") if isinstance(p.get("reference"), str) else None
            if ref and ref in contained:
                orgs.append(contained[ref])
            if payer_org and isinstance(payer_org, dict):
                orgs.append(payer_org)
            ident = p.get("identifier") if isinstance(p.get("identifier"), dict) else None
            idents = [ident] if ident else []
            for org in orgs:
                idents += [i for i in _list(org.get("identifier")) if isinstance(i, dict)]
            for i in idents:
                value, system = i.get("value"), i.get("system")
                if (system, value) in self._payer_idents or (value in self._payer_values and not system):
                    return "yes", f"payor identifier {value} is {self.payer.name}'s"
            if ref and not ref.startswith("#") and _ref_id(ref) in self._payer_refs:
                return "yes", f"payor {ref} is {self.payer.name}"
            names = [p.get("display")] + [o.get("name") for o in orgs] + [a for o in orgs for a in _list(o.get("alias"))]
            if any(isinstance(n, str) and n.strip().lower() in self._payer_names for n in names):
                return "yes", f"payor is named {next(n for n in names if isinstance(n, str) and n.strip().lower() in self._payer_names)}"
            if idents or any(isinstance(n, str) and n.strip() for n in names):
                saw_foreign = ref or (idents[0].get("value") if idents else None) or next(n for n in names if isinstance(n, str) and n.strip())
        if saw_foreign:
            return "no", f"the Coverage's payor ({saw_foreign}) is not {self.payer.name}"
        return "unknown", "the Coverage's payor is given only by a reference Precert cannot resolve"

    def coverage_active(self, coverage: dict | None, on: date) -> tuple[bool, str]:
        if not coverage:
            return True, ""
        status = coverage.get("status")
        if status is not None and status != "active":
            return False, f"the Coverage status is '{status}'"
        period = coverage.get("period") if isinstance(coverage.get("period"), dict) else {}
        start, end = _parse_date(period.get("start")), _parse_date(period.get("end"))
        if start and on < start:
            return False, f"the Coverage starts on {start.isoformat()}, after the service date {on.isoformat()}"
        if end and on > end:
            return False, f"the Coverage ended on {end.isoformat()}, before the service date {on.isoformat()}"
        return True, ""

    # ------------------------------------------------------------------ rule choice
    def candidates(self, codes: Iterable[dict], plan: str | None) -> list[tuple[tuple, Rule, dict]]:
        out = []
        for pos, coding in enumerate(codes or ()):
            key = codesys.coding_key(coding) if isinstance(coding, dict) else None
            if key is None:
                continue
            fam, code = key
            found = [(0, r) for r in self._exact.get(key, ())]
            found += [(1, r) for f, lo, hi, r in self._ranges if f == fam and codesys.in_range(code, lo, hi)]
            for exactness, rule in found:
                if rule.plans and plan not in rule.plans:
                    continue
                rank = (exactness, 0 if rule.plans else 1, rule.priority, pos, rule.order)
                out.append((rank, rule, coding))
        out.sort(key=lambda item: item[0])
        return out

    def rule_for(self, codes: Iterable[dict], plan: str | None = None) -> tuple[Rule | None, dict | None]:
        codes = list(codes or ())
        try:
            key = (tuple((c.get("system"), c.get("code")) for c in codes), plan)
            hash(key)
        except (AttributeError, TypeError):
            key = None
        if key is not None:
            hit = self._choices.get(key)
            if hit is not None:
                rule, pos = hit
                return (rule, codes[pos]) if rule is not None else (None, None)
        found = self.candidates(codes, plan)
        rule, coding = (found[0][1], found[0][2]) if found else (None, None)
        if key is not None:
            if len(self._choices) > 50_000:
                self._choices.clear()
            self._choices[key] = (rule, next(i for i, c in enumerate(codes) if c is coding) if coding is not None else 0)
        return rule, coding

    # ------------------------------------------------------------------ network and gold card
    def network_status(self, inp: EvaluationInput) -> str:
        """'in', 'out' or 'unknown': is any ordering/performing provider or the place in network?"""
        npis = {str(n) for n in (inp.provider_ids or ()) if n}
        orgs = {_ref_id(str(o)) for o in (inp.provider_orgs or ()) if o}
        loc = inp.location if isinstance(inp.location, dict) else None
        if loc:
            if loc.get("resourceType") == "Organization" and loc.get("id"):
                orgs.add(f"Organization/{loc['id']}")
            managing = loc.get("managingOrganization").get("reference") if isinstance(loc.get("managingOrganization"), dict) else None
            if isinstance(managing, str):
                orgs.add(_ref_id(managing))
            npis |= {i.get("value") for i in _list(loc.get("identifier")) if isinstance(i, dict) and isinstance(i.get("value"), str)}
        if not npis and not orgs:
            return "unknown"
        if npis & self.payer.network_npis or orgs & self.payer.network_orgs:
            return "in"
        return "out"

    def gold_card_for(self, rule: Rule, npis: Iterable[str], on: date) -> GoldCard | None:
        for npi in npis or ():
            for g in self._gold.get(str(npi), ()):
                if g.categories and rule.category not in g.categories:
                    continue
                if g.rules and rule.id not in g.rules:
                    continue
                until = _parse_date(g.until)
                if until and on > until:
                    continue
                return g
        return None

    # ------------------------------------------------------------------ conditions
    def environment(self, inp: EvaluationInput, on: date, plan: str | None, network: str, rule: Rule) -> dict:
        patient = inp.patient if isinstance(inp.patient, dict) else None
        age = _age(_parse_date((patient or {}).get("birthDate")), on)

        def v(x):
            return [] if x is None else x

        return {
            "patient": v(patient), "coverage": v(inp.coverage), "order": v(inp.order), "encounter": v(inp.encounter),
            "location": v(inp.location), "age": v(age), "diagnoses": list(inp.diagnoses or []),
            "quantity": v(inp.quantity), "service_date": on.isoformat(), "network": [] if network == "unknown" else network, "plan": v(plan),
            "providers": [str(n) for n in (inp.provider_ids or ())], "codes": list(inp.codes or []),
            "category": v(rule.category),
        }

    @staticmethod
    def _truth(result: Any) -> bool | None:
        if not isinstance(result, list) or not result:
            return None
        if len(result) == 1 and isinstance(result[0], bool):
            return result[0]
        return True

    def _apply(self, values: dict, changes: dict) -> None:
        for key, val in changes.items():
            if key in _APPEND_FIELDS:
                values[key] = list(values.get(key) or []) + list(val)
            elif key in _LIST_FIELDS:
                values[key] = list(val)
            else:
                values[key] = val

    def run_condition(self, cond: Condition, root: dict, env: dict) -> tuple[bool | None, str | None]:
        try:
            return self._truth(cond.fn(root, env)), None
        except Exception as exc:  # a condition must never fail an evaluation
            return None, f"{type(exc).__name__}: {str(exc)[:120]}"

    # ------------------------------------------------------------------ the evaluation
    def evaluate(self, inp: EvaluationInput, assume_payer: bool = False) -> Determination:
        """Decide coverage, prior authorization and documentation for one service.

        ``assume_payer`` treats a Coverage whose payor cannot be identified either way as this payer's
        (what the sandbox's ``unidentified_payor: assume-member`` does for everyone). Never raises:
        input the rules cannot read gives a conditional answer that a clinician reviews.
        """
        try:
            return self._evaluate(inp, assume_payer)
        except Exception as exc:  # malformed resources from outside must not break CRD or PAS
            log.warning("rules could not evaluate an input: %s: %s", type(exc).__name__, exc)
            det = self._blank([f"The rules could not read this request ({type(exc).__name__}); a clinician must review it"],
                              payer_match=True, covered="conditional",
                              reason=_reason(None, "The payer rules could not read this request; it needs review."))
            det.pa_needed, det.info_needed = "conditional", ["OTH"]
            return det

    def _evaluate(self, inp: EvaluationInput, assume_payer: bool) -> Determination:
        trace: list[str] = []
        on = _parse_date(inp.service_date) or date.today()
        plan = plan_of(inp.coverage)

        status, why = self.payer_status(inp.coverage, inp.payer)
        if status == "unknown" and (assume_payer or self.payer.unidentified_payor == "assume-member"):
            trace.append(f"{why}; treated as {self.payer.name}'s member (unidentified payors are assumed to be this payer)")
        elif status != "yes":
            trace.append(why)
            return self._blank(trace, payer_match=False, covered="not-covered",
                               reason=_reason("no-member-found", f"This coverage is not with {self.payer.name}: {why}."), plan=plan)
        else:
            trace.append(why[0].upper() + why[1:])

        active, why_not = self.coverage_active(inp.coverage, on)
        if not active:
            trace.append(f"Not covered: {why_not}")
            return self._blank(trace, payer_match=True, covered="not-covered", coverage_active=False, plan=plan,
                               reason=_reason("no-active-coverage", f"The member has no active coverage on {on.isoformat()}: {why_not}."))

        rule, coding = self.rule_for(inp.codes, plan)
        if rule is None:
            shown = ", ".join(f"{c.get('code')}" for c in (inp.codes or []) if isinstance(c, dict)) or "none"
            trace.append(f"No rule for code(s) {shown}{f' on plan {plan}' if plan else ''}; the payer's defaults apply")
            values = {**self.defaults}
            for key in _LIST_FIELDS + _APPEND_FIELDS:
                values.setdefault(key, [])
            return self._determination(None, None, values, trace, plan=plan)

        values = {k: (list(v) if isinstance(v, list) else v) for k, v in rule.values.items()}
        for key, val in self.defaults.items():
            values.setdefault(key, list(val) if isinstance(val, list) else val)
        for key in _LIST_FIELDS + _APPEND_FIELDS:
            values.setdefault(key, [])
        trace.append(f"Rule '{rule.id}' ({rule.title}) matched code {coding.get('code')}"
                     f"{f' for plan {plan}' if rule.plans else ''}: {values['covered']}, {values['pa_needed']}")

        network = self.network_status(inp)
        if rule.conditions:
            env = self.environment(inp, on, plan, network, rule)
            root = inp.order if isinstance(inp.order, dict) else {}
            for cond in rule.conditions:
                truth, error = self.run_condition(cond, root, env)
                if error:
                    trace.append(f"Condition '{cond.id}' ({cond.explain}) could not be evaluated ({error}); treated as unknown")
                if truth is True and cond.set:
                    self._apply(values, cond.set)
                    trace.append(f"Condition '{cond.id}' applies: {cond.explain}")
                elif truth is None and cond.if_unknown:
                    self._apply(values, cond.if_unknown)
                    trace.append(f"Condition '{cond.id}' could not be decided from the data given ({cond.explain}); "
                                 f"more information is needed")

        gold = None
        if rule.gold_card and values["pa_needed"] in ("auth-needed", "performpa", "conditional"):
            gold = self.gold_card_for(rule, inp.provider_ids, on)
            if gold:
                values["pa_needed"] = "satisfied"
                values["doc_needed"] = []
                values["doc_purpose"] = [p for p in values["doc_purpose"] if p != "withpa"]
                values["questionnaires"] = []
                values["info_needed"] = []
                values["reason"] = _reason("gold-card", f"Prior authorization is waived: the ordering provider (NPI {gold.npi}) "
                                                        f"is gold-carded for {rule.category or rule.id}.")
                trace.append(f"Provider NPI {gold.npi}{f' ({gold.name})' if gold.name else ''} is gold-carded for "
                             f"{rule.category or rule.id}: prior authorization satisfied")

        if values["covered"] == "not-covered":
            values["doc_needed"], values["questionnaires"], values["info_needed"] = [], [], []
            values["doc_purpose"] = []
        if values.get("max_units") is not None and inp.quantity is not None and inp.quantity > values["max_units"]:
            trace.append(f"Quantity {inp.quantity:g} exceeds the {values['max_units']:g} units allowed per request")
        return self._determination(rule, coding, values, trace, plan=plan, gold=gold is not None)

    def _determination(self, rule: Rule | None, coding: dict | None, values: dict, trace: list[str], plan=None, gold=False) -> Determination:
        return Determination(
            rule_id=rule.id if rule else None,
            category=rule.category if rule else None,
            covered=values["covered"],
            pa_needed=values["pa_needed"],
            doc_needed=list(values.get("doc_needed") or []),
            doc_purpose=list(values.get("doc_purpose") or []),
            info_needed=list(values.get("info_needed") or []),
            questionnaires=list(values.get("questionnaires") or []),
            reason=dict(values["reason"]) if values.get("reason") else None,
            instructions=list(values.get("instructions") or []),
            links=[dict(link) for link in values.get("links") or []],
            billing_codes=[dict(c) for c in values.get("billing_codes") or []],
            review=values.get("review") or "auto",
            auto_clinical_denial=bool(values.get("auto_clinical_denial")),
            max_units=values.get("max_units"),
            auth_period_days=values.get("auth_period_days"),
            payer_match=True,
            trace=trace,
            matched_code=dict(coding) if coding else None,
            alternatives=[dict(a) for a in values.get("alternatives") or []],
            gold_carded=gold,
            coverage_active=True,
            plan=plan,
        )

    def _blank(self, trace, payer_match, covered, reason, coverage_active=True, plan=None) -> Determination:
        return Determination(
            rule_id=None, category=None, covered=covered, pa_needed="no-auth", doc_needed=[], doc_purpose=[],
            info_needed=[], questionnaires=[], reason=reason, instructions=[], links=[], billing_codes=[],
            review="clinical", max_units=None, auth_period_days=None, payer_match=payer_match, trace=trace,
            coverage_active=coverage_active, plan=plan,
        )

    # ------------------------------------------------------------------ publishing
    def prior_auth_list(self) -> list[dict]:
        """The services that need prior authorization (CMS-0057-F public list), with their codes."""
        out = []
        for rule in self.rules:
            pa = rule.values.get("pa_needed", self.defaults.get("pa_needed"))
            cond_pa = [c for c in rule.conditions if c.set.get("pa_needed") in ("auth-needed", "performpa", "conditional")]
            if pa not in ("auth-needed", "performpa", "conditional") and not cond_pa:
                continue
            entry = {
                "rule": rule.id, "title": rule.title, "category": rule.category,
                "plans": list(rule.plans) or "all",
                "codes": [m.describe() for m in rule.matchers],
                "pa_needed": pa,
                "documentation": list(rule.values.get("doc_needed") or []),
                "questionnaires": list(rule.values.get("questionnaires") or []),
                "gold_card_exempt": bool(rule.gold_card),
            }
            if rule.description:
                entry["description"] = rule.description
            notes = [c.explain for c in rule.conditions]
            if notes:
                entry["conditions"] = notes
            out.append(entry)
        return out

    def summary(self) -> dict:
        p = self.payer
        return {
            "source": self.source,
            "files": list(self.files),
            "version": self.version,
            "payer": {"id": p.id, "name": p.name, "aliases": list(p.aliases), "plans": list(p.plans),
                      "identifiers": [{"system": s, "value": v} for s, v in p.identifiers],
                      "unidentified_payor": p.unidentified_payor,
                      "network": {"npis": sorted(p.network_npis), "organizations": sorted(p.network_orgs),
                                  "preferred_sites": list(p.preferred_sites)}},
            "defaults": {k: v for k, v in self.defaults.items()},
            "gold_card": [{"npi": g.npi, "name": g.name, "categories": list(g.categories) or "all",
                           "rules": list(g.rules) or "all", "until": g.until} for g in self.gold_cards],
            "rules": [r.summary() for r in self.rules],
        }
