"""Reading rule files: YAML in, a validated :class:`~server.rules.engine.RuleSet` out.

Every problem found is reported with the file, the line and the field path (``imaging.yaml:14:
rules[2].codes[0].range: ...``), all at once, so an author fixes a file in one pass. Plain scalars
stay strings (YAML 1.1 would read the code ``00100`` as the octal number 64); the few numeric fields
are converted here with their own error messages. FHIRPath conditions are compiled here, once.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import fhirpathpy
import yaml
from antlr4.error.ErrorListener import ErrorListener

from server.rules import codes as codesys
from server.rules.definitions import CodeMatcher, Condition, GoldCard, Payer, Rule, _ref_id
from server.rules.engine import RuleSet
from server.rules.model import (
    CATEGORIES, COVERED, CRD_TEMP, DOC_NEEDED, DOC_PURPOSE, INFO_NEEDED, PA_NEEDED, REVIEW, questionnaire_for,
)

RULE_FILE_SUFFIXES = (".yaml", ".yml")
# payer.clocks.<category>: the extension rule's keys, and the reasons an extension may give
# (their words for people are server.review.clock.EXTENSION_REASONS).
EXTENSION_KEYS = frozenset({"standard_extension_days", "expedited_extension_days", "extension_reasons"})
EXTENSION_REASON_CODES = ("information-requested", "member-requested", "specialist-review", "other")

# Variables a condition may use; see docs/rules.md.
CONDITION_VARIABLES = frozenset({
    "patient", "coverage", "order", "encounter", "location", "age", "diagnoses", "quantity",
    "service_date", "network", "plan", "providers", "codes", "category",
})
# FHIRPath's own environment variables.
_BUILTIN_VARIABLES = frozenset({"context", "resource", "rootResource", "ucum", "sct", "loinc", "vs", "ext"})
_VARIABLE = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)")

SETTABLE = ("covered", "pa_needed", "doc_needed", "doc_purpose", "info_needed", "questionnaires", "reason",
            "instructions", "links", "billing_codes", "review", "max_units", "auth_period_days", "alternatives",
            "auto_clinical_denial")
RULE_KEYS = frozenset(SETTABLE) | {"id", "title", "description", "category", "plans", "codes", "gold_card",
                                   "questionnaire", "conditions", "priority"}


class RulesError(Exception):
    """Rule files that cannot be loaded; ``errors`` lists each problem as ``file:line: field: message``."""

    def __init__(self, errors: list[str]):
        super().__init__(f"{len(errors)} problem(s) in the rule files:\n" + "\n".join(errors))
        self.errors = errors


# ---------------------------------------------------------------------------------------- YAML
class Node(dict):
    """A mapping that remembers the line of each key."""

    line: int = 0
    lines: dict

    def line_of(self, key: str) -> int:
        return self.lines.get(key, self.line)


class Seq(list):
    line: int = 0
    lines: list


class _Loader(yaml.SafeLoader):
    pass


# Plain scalars stay strings except true/false/null; numeric fields are converted explicitly.
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Node:
    loader.flatten_mapping(node)
    out = Node()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise yaml.MarkedYAMLError("while reading a mapping", node.start_mark, f"key {key!r} is not a string", key_node.start_mark)
        if key in out:
            raise yaml.MarkedYAMLError("while reading a mapping", node.start_mark, f"duplicate key '{key}'", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> Seq:
    out = Seq(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


# ---------------------------------------------------------------------------------------- checks
class _Errors:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, file: str, line: int, path: str, message: str) -> None:
        self.items.append(f"{file}:{line}: {path}: {message}")


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _line(container: Any, key: Any) -> int:
    if isinstance(container, Node):
        return container.line_of(key)
    if isinstance(container, Seq) and isinstance(key, int) and key < len(container.lines):
        return container.lines[key]
    return getattr(container, "line", 0)


def _string(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


class _Reader:
    """Turns the parsed YAML of a set of files into checked objects, collecting every error."""

    def __init__(self) -> None:
        self.errors = _Errors()
        self.payer: Payer | None = None
        self.payer_file: str | None = None
        self.defaults: dict = {}
        self.gold: list[GoldCard] = []
        self.rules: list[Rule] = []
        self.rule_ids: dict[str, str] = {}

    # -- values shared by rules, conditions and defaults
    def values(self, file: str, node: Node, path: str, keys=SETTABLE) -> dict:
        out: dict = {}
        err = self.errors.add
        for key in keys:
            if key not in node:
                continue
            val, line, p = node[key], node.line_of(key), f"{path}.{key}"
            if key == "covered" or key == "pa_needed" or key == "review":
                allowed = {"covered": COVERED, "pa_needed": PA_NEEDED, "review": REVIEW}[key]
                if val not in allowed:
                    err(file, line, p, f"'{val}' is not one of {', '.join(allowed)}")
                else:
                    out[key] = val
            elif key in ("doc_needed", "doc_purpose", "info_needed"):
                allowed = {"doc_needed": DOC_NEEDED, "doc_purpose": DOC_PURPOSE, "info_needed": INFO_NEEDED}[key]
                items = _as_list(val)
                bad = [v for v in items if v not in allowed]
                if bad:
                    err(file, line, p, f"{', '.join(map(str, bad))} not allowed; use {', '.join(allowed)}")
                else:
                    out[key] = [str(v) for v in items]
            elif key == "questionnaires":
                items = _as_list(val)
                good = []
                for i, q in enumerate(items):
                    q = _string(q)
                    if not q or not re.match(r"^https?://\S+\|\S+$", q):
                        err(file, _line(val, i), f"{p}[{i}]", "a Questionnaire canonical 'http(s)://...|version' is required")
                    else:
                        good.append(q)
                out[key] = good
            elif key == "reason":
                out[key] = self.reason(file, line, p, val)
            elif key == "instructions":
                items = _as_list(val)
                if not all(_string(i) for i in items):
                    err(file, line, p, "instructions must be non-empty strings")
                else:
                    out[key] = [i.strip() for i in items]
            elif key == "links":
                out[key] = self.links(file, val, p, line)
            elif key in ("billing_codes", "alternatives"):
                out[key] = self.codings(file, val, p, line, with_note=key == "alternatives")
            elif key == "auto_clinical_denial":
                if not isinstance(val, bool):
                    err(file, line, p, f"'{val}' is not true or false")
                else:
                    out[key] = val
            elif key in ("max_units", "auth_period_days"):
                if val is None:
                    out[key] = None
                    continue
                try:
                    num = float(val) if key == "max_units" else int(str(val))
                    if num <= 0:
                        raise ValueError
                    out[key] = num
                except (TypeError, ValueError):
                    err(file, line, p, f"'{val}' is not a positive {'number' if key == 'max_units' else 'whole number'}")
        return out

    def reason(self, file: str, line: int, path: str, val: Any) -> dict | None:
        if val is None:
            return None
        if isinstance(val, str) and val.strip():
            return {"code": None, "system": None, "display": val.strip()}
        if isinstance(val, dict):
            display = _string(val.get("display")) or _string(val.get("text"))
            code = _string(val.get("code"))
            if not display:
                self.errors.add(file, line, path, "a reason needs plain-language 'display' text")
                return None
            return {"code": code, "system": _string(val.get("system")) or (CRD_TEMP if code else None), "display": display}
        self.errors.add(file, line, path, "a reason is a string or a mapping with code and display")
        return None

    def links(self, file: str, val: Any, path: str, line: int) -> list[dict]:
        out = []
        for i, link in enumerate(_as_list(val)):
            ln = _line(val, i) if isinstance(val, Seq) else line
            if not isinstance(link, dict) or not _string(link.get("url")) or not _string(link.get("label")):
                self.errors.add(file, ln, f"{path}[{i}]", "a link needs 'url' and 'label'")
                continue
            if not re.match(r"^https?://[^/\s]+", link["url"]):
                self.errors.add(file, ln, f"{path}[{i}].url", f"'{link['url']}' is not an absolute http(s) URL")
                continue
            out.append({"url": link["url"].strip(), "label": link["label"].strip()})
        return out

    def codings(self, file: str, val: Any, path: str, line: int, with_note: bool = False) -> list[dict]:
        out = []
        for i, c in enumerate(_as_list(val)):
            ln = _line(val, i) if isinstance(val, Seq) else line
            if not isinstance(c, dict) or not _string(c.get("code")) or not _string(c.get("system")):
                self.errors.add(file, ln, f"{path}[{i}]", "a coding needs 'system' and 'code'")
                continue
            alias = codesys.alias_for(c["system"])
            coding = {"system": codesys.system_uri(alias) if alias else c["system"], "code": c["code"].strip()}
            if _string(c.get("display")):
                coding["display"] = c["display"].strip()
            if with_note and _string(c.get("note")):
                coding["note"] = c["note"].strip()
            out.append(coding)
        return out

    # -- sections
    def read_file(self, file: str, data: Any) -> None:
        if data is None:
            return
        if not isinstance(data, Node):
            self.errors.add(file, 1, "(file)", "a rule file is a mapping with 'payer', 'defaults', 'gold_card' or 'rules'")
            return
        for key in data:
            if key not in ("payer", "defaults", "gold_card", "rules", "description"):
                self.errors.add(file, data.line_of(key), key, "unknown section; use payer, defaults, gold_card or rules")
        if "payer" in data:
            self.read_payer(file, data["payer"], data.line_of("payer"))
        if "defaults" in data:
            d = data["defaults"]
            if not isinstance(d, Node):
                self.errors.add(file, data.line_of("defaults"), "defaults", "must be a mapping")
            else:
                self.defaults.update(self.values(file, d, "defaults"))
        if "gold_card" in data:
            self.read_gold(file, data["gold_card"], data.line_of("gold_card"))
        if "rules" in data:
            rules = data["rules"]
            if not isinstance(rules, Seq):
                self.errors.add(file, data.line_of("rules"), "rules", "must be a list of rules")
            else:
                for i, r in enumerate(rules):
                    self.read_rule(file, r, f"rules[{i}]", rules.lines[i])

    def read_payer(self, file: str, p: Any, line: int) -> None:
        err = self.errors.add
        if self.payer is not None:
            err(file, line, "payer", f"the payer is already defined in {self.payer_file}; define it once")
            return
        if not isinstance(p, Node):
            err(file, line, "payer", "must be a mapping")
            return
        pid, name = _string(p.get("id")), _string(p.get("name"))
        if not pid:
            err(file, p.line_of("id"), "payer.id", "required (the payer Organization id)")
        if not name:
            err(file, p.line_of("name"), "payer.name", "required (shown as the card source label)")
        idents = []
        for i, ident in enumerate(_as_list(p.get("identifiers"))):
            if not isinstance(ident, dict) or not _string(ident.get("value")):
                err(file, _line(p.get("identifiers"), i), f"payer.identifiers[{i}]", "needs 'value' (and usually 'system')")
                continue
            idents.append((_string(ident.get("system")), ident["value"].strip()))
        mode = p.get("unidentified_payor", "not-member")
        if mode not in ("assume-member", "not-member"):
            err(file, p.line_of("unidentified_payor"), "payer.unidentified_payor", "use assume-member or not-member")
            mode = "not-member"
        network = p.get("network") or {}
        if not isinstance(network, dict):
            err(file, p.line_of("network"), "payer.network", "must be a mapping with npis and organizations")
            network = {}
        contact = p.get("contact") or {}
        if not isinstance(contact, dict):
            err(file, p.line_of("contact"), "payer.contact", "must be a mapping (phone, url, email)")
            contact = {}
        clocks: dict = {}
        raw_clocks = p.get("clocks") or {}
        if not isinstance(raw_clocks, dict):
            err(file, p.line_of("clocks"), "payer.clocks", "must be a mapping: category -> {expedited_hours, standard_hours}")
            raw_clocks = {}
        for cat, spec in raw_clocks.items():
            where = f"payer.clocks.{cat}"
            if cat != "default" and cat not in CATEGORIES:
                err(file, raw_clocks.line_of(cat), where, f"not a service category; use default or one of {', '.join(CATEGORIES)}")
                continue
            if not isinstance(spec, dict) or not spec or set(spec) - {"expedited_hours", "standard_hours", *EXTENSION_KEYS}:
                err(file, raw_clocks.line_of(cat), where, "give expedited_hours and/or standard_hours (and optionally "
                    "standard_extension_days, expedited_extension_days, extension_reasons)")
                continue
            hours = self.extension(file, where, spec)
            for key, val in spec.items():
                if key in EXTENSION_KEYS:
                    continue
                try:
                    number = float(str(val)) if not isinstance(val, bool) else 0.0
                except ValueError:
                    number = 0.0
                if not 0 < number <= 24 * 60:
                    err(file, spec.line_of(key), f"{where}.{key}", f"'{val}' is not a number of hours (up to 1440)")
                else:
                    hours[key.split("_")[0]] = number
            clocks[str(cat)] = hours
        peer = p.get("peer_to_peer") or {}
        peer_to_peer: dict = {}
        if not isinstance(peer, dict) or set(peer) - {"contact", "window_days"}:
            err(file, p.line_of("peer_to_peer"), "payer.peer_to_peer", "must be a mapping with contact and/or window_days")
        else:
            if "contact" in peer:
                if not _string(peer["contact"]) or len(str(peer["contact"])) > 300:
                    err(file, peer.line_of("contact"), "payer.peer_to_peer.contact", "a phone number, address or instructions (up to 300 characters)")
                else:
                    peer_to_peer["contact"] = str(peer["contact"]).strip()
            if "window_days" in peer:
                val = peer["window_days"]
                if isinstance(val, bool) or not re.fullmatch(r"[0-9]{1,2}", str(val)) or not 1 <= int(str(val)) <= 60:
                    err(file, peer.line_of("window_days"), "payer.peer_to_peer.window_days", f"'{val}' is not a whole number of days (1 to 60)")
                else:
                    peer_to_peer["window_days"] = int(str(val))
        self.payer = Payer(
            id=pid or "", name=name or "",
            aliases=tuple(str(a).strip() for a in _as_list(p.get("aliases")) if _string(a)),
            identifiers=tuple(idents),
            references=tuple(str(r).strip() for r in _as_list(p.get("references")) if _string(r)) + ((f"Organization/{pid}",) if pid else ()),
            unidentified_payor=mode,
            plans=tuple(str(x).strip() for x in _as_list(p.get("plans")) if _string(x)),
            contact={k: str(v) for k, v in contact.items() if _string(v)},
            clocks=clocks,
            peer_to_peer=peer_to_peer,
            network_npis=frozenset(str(n).strip() for n in _as_list(network.get("npis")) if _string(n)),
            network_orgs=frozenset(_ref_id(str(o)) for o in _as_list(network.get("organizations")) if _string(o)),
            preferred_sites=tuple(self.sites(file, network.get("preferred_sites"), p.line_of("network"))),
        )
        self.payer_file = file

    def extension(self, file: str, where: str, spec: Any) -> dict:
        """A category's extension rule (see server.review.clock.extension_rule): the days a standard
        or expedited clock may be extended by, once (0: never), and the reasons allowed."""
        out: dict = {}
        for urgency in ("standard", "expedited"):
            key = f"{urgency}_extension_days"
            if key in spec:
                val = spec[key]
                if isinstance(val, bool) or not re.fullmatch(r"[0-9]{1,2}", str(val)) or int(str(val)) > 30:
                    self.errors.add(file, spec.line_of(key), f"{where}.{key}", f"'{val}' is not a whole number of days (0 to 30)")
                else:
                    out.setdefault("extension", {})[urgency] = int(str(val))
        if "extension_reasons" in spec:
            reasons = spec["extension_reasons"]
            if not isinstance(reasons, list) or not reasons or any(str(r) not in EXTENSION_REASON_CODES for r in reasons):
                self.errors.add(file, spec.line_of("extension_reasons"), f"{where}.extension_reasons",
                                f"a list of one or more of {', '.join(EXTENSION_REASON_CODES)}")
            else:
                out["extension_reasons"] = [str(r) for r in reasons]
        return out

    def sites(self, file: str, val: Any, line: int) -> list[dict]:
        out = []
        for i, site in enumerate(_as_list(val)):
            if not isinstance(site, dict) or not re.fullmatch(r"(Organization|Location)/[A-Za-z0-9\-.]{1,64}", str(site.get("reference", ""))):
                self.errors.add(file, _line(val, i) if isinstance(val, Seq) else line, f"payer.network.preferred_sites[{i}]",
                                "needs 'reference' (Organization/id or Location/id) and 'display'")
                continue
            out.append({"reference": site["reference"], "display": str(site.get("display") or site["reference"])})
        return out

    def read_gold(self, file: str, val: Any, line: int) -> None:
        if not isinstance(val, Seq):
            self.errors.add(file, line, "gold_card", "must be a list of {npi, categories, until}")
            return
        for i, g in enumerate(val):
            ln, p = val.lines[i], f"gold_card[{i}]"
            if not isinstance(g, Node) or not re.fullmatch(r"\d{10}", str(g.get("npi", ""))):
                self.errors.add(file, ln, f"{p}.npi", "a 10-digit NPI is required")
                continue
            cats = tuple(str(c) for c in _as_list(g.get("categories")))
            for c in cats:
                if c not in CATEGORIES:
                    self.errors.add(file, g.line_of("categories"), f"{p}.categories", f"unknown category '{c}'")
            until = _string(g.get("until"))
            if until and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", until):
                self.errors.add(file, g.line_of("until"), f"{p}.until", "a date YYYY-MM-DD is required")
            self.gold.append(GoldCard(g["npi"], _string(g.get("name")), cats, tuple(str(r) for r in _as_list(g.get("rules"))), until))

    def read_rule(self, file: str, r: Any, path: str, line: int) -> None:
        err = self.errors.add
        if not isinstance(r, Node):
            err(file, line, path, "a rule is a mapping")
            return
        rid = _string(r.get("id"))
        if not rid:
            err(file, r.line_of("id"), f"{path}.id", "required")
            rid = f"{file}#{line}"
        elif not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", rid):
            err(file, r.line_of("id"), f"{path}.id", "letters, digits, '.', '_' and '-' only (max 64)")
        elif rid in self.rule_ids:
            err(file, r.line_of("id"), f"{path}.id", f"'{rid}' is also defined in {self.rule_ids[rid]}")
        self.rule_ids.setdefault(rid, f"{file}:{line}")
        path = f"{path}({rid})"
        for key in r:
            if key not in RULE_KEYS:
                err(file, r.line_of(key), f"{path}.{key}", f"unknown field; fields are {', '.join(sorted(RULE_KEYS))}")
        category = r.get("category")
        if category is not None and category not in CATEGORIES:
            err(file, r.line_of("category"), f"{path}.category", f"'{category}' is not one of {', '.join(CATEGORIES)}")
            category = None
        matchers = self.matchers(file, r, path)
        values = self.values(file, r, path)
        # questionnaire: true (default when documentation is needed) = the category's DTR Questionnaire.
        q_flag = r.get("questionnaire", None)
        if q_flag not in (None, True, False):
            err(file, r.line_of("questionnaire"), f"{path}.questionnaire", "true or false (use 'questionnaires' for explicit canonicals)")
        if "questionnaires" not in values and category and q_flag is not False and (q_flag is True or values.get("doc_needed")):
            values["questionnaires"] = [questionnaire_for(category)]
        if values.get("questionnaires") and not values.get("doc_needed"):
            err(file, r.line, f"{path}.doc_needed", "a rule that names a Questionnaire must say which documentation is needed (CRD crd-ci-q1)")
        if values.get("covered") == "not-covered" and not values.get("reason"):
            err(file, r.line, f"{path}.reason", "a not-covered rule must give a plain-language reason")
        if values.get("doc_purpose") and not values.get("reason") and not values.get("doc_needed"):
            err(file, r.line_of("doc_purpose"), f"{path}.doc_purpose", "doc_purpose without doc_needed")
        plans = tuple(str(p).strip() for p in _as_list(r.get("plans")) if _string(p))
        if self.payer and self.payer.plans:
            for p in plans:
                if p not in self.payer.plans:
                    err(file, r.line_of("plans"), f"{path}.plans", f"plan '{p}' is not one of the payer's plans {', '.join(self.payer.plans)}")
        gold = r.get("gold_card", values.get("pa_needed") in ("auth-needed", "performpa"))
        if gold not in (True, False):
            err(file, r.line_of("gold_card"), f"{path}.gold_card", "true or false")
            gold = False
        try:
            priority = int(str(r.get("priority", 100)))
        except ValueError:
            err(file, r.line_of("priority"), f"{path}.priority", "a whole number")
            priority = 100
        conditions = self.conditions(file, r, path)
        self.rules.append(Rule(
            id=rid, title=_string(r.get("title")) or rid, description=_string(r.get("description")), category=category,
            plans=plans, matchers=matchers, values=values, gold_card=bool(gold), conditions=conditions,
            priority=priority, file=file, line=line, order=len(self.rules),
        ))

    def matchers(self, file: str, r: Node, path: str) -> list[CodeMatcher]:
        err = self.errors.add
        groups = r.get("codes")
        if not isinstance(groups, Seq) or not groups:
            err(file, r.line_of("codes"), f"{path}.codes", "a non-empty list of {system, code | codes | range} is required")
            return []
        out: list[CodeMatcher] = []
        for i, g in enumerate(groups):
            p, ln = f"{path}.codes[{i}]", groups.lines[i]
            if not isinstance(g, Node):
                err(file, ln, p, "must be a mapping {system, code | codes | range}")
                continue
            alias = codesys.alias_for(_string(g.get("system")))
            if alias is None:
                err(file, g.line_of("system"), f"{p}.system", f"unknown code system '{g.get('system')}'; use one of {', '.join(codesys.SYSTEMS)} or its URI")
                continue
            fam = codesys.family(alias)
            given = [k for k in ("code", "codes", "range") if k in g]
            if len(given) != 1:
                err(file, ln, p, "give exactly one of code, codes or range")
                continue
            if "range" in g:
                rng = [s for s in _as_list(g["range"])]
                if len(rng) == 1 and isinstance(rng[0], str):
                    rng = [s.strip() for s in rng[0].split("-")]
                if len(rng) != 2 or not all(_string(x) for x in rng):
                    err(file, g.line_of("range"), f"{p}.range", "write a range as 'K0001-K0009' or [K0001, K0009]")
                    continue
                low, high = (codesys.normalise_code(alias, str(x)) for x in rng)
                if len(low) != len(high) or low > high:
                    err(file, g.line_of("range"), f"{p}.range", f"'{low}-{high}' is not a range of codes of one shape, low to high")
                    continue
                out.append(CodeMatcher(alias, fam, low=low, high=high))
            else:
                items = _as_list(g["code"] if "code" in g else g["codes"])
                key = "code" if "code" in g else "codes"
                if not items:
                    err(file, g.line_of(key), f"{p}.{key}", "no codes given")
                for j, c in enumerate(items):
                    if not _string(c) or isinstance(c, bool):
                        err(file, g.line_of(key), f"{p}.{key}[{j}]", f"'{c}' is not a code")
                        continue
                    out.append(CodeMatcher(alias, fam, code=codesys.normalise_code(alias, c)))
        return out

    def conditions(self, file: str, r: Node, path: str) -> list[Condition]:
        err = self.errors.add
        raw = r.get("conditions")
        if raw is None:
            return []
        if not isinstance(raw, Seq):
            err(file, r.line_of("conditions"), f"{path}.conditions", "must be a list of {when, set, explain}")
            return []
        out = []
        for i, c in enumerate(raw):
            p, ln = f"{path}.conditions[{i}]", raw.lines[i]
            if not isinstance(c, Node):
                err(file, ln, p, "must be a mapping {when, set, explain}")
                continue
            for key in c:
                if key not in ("id", "when", "set", "explain", "if_unknown"):
                    err(file, c.line_of(key), f"{p}.{key}", "unknown field; use id, when, set, explain, if_unknown")
            when, explain = _string(c.get("when")), _string(c.get("explain"))
            if not when:
                err(file, c.line_of("when"), f"{p}.when", "a FHIRPath expression is required")
                continue
            if not explain:
                err(file, c.line_of("explain"), f"{p}.explain", "plain-language text for reviewers is required")
            unknown_vars = sorted({v for v in _VARIABLE.findall(when)} - CONDITION_VARIABLES - _BUILTIN_VARIABLES)
            if unknown_vars:
                err(file, c.line_of("when"), f"{p}.when", f"unknown variable(s) {', '.join('%' + v for v in unknown_vars)}; "
                    f"available: {', '.join('%' + v for v in sorted(CONDITION_VARIABLES))}")
                continue
            problem = fhirpath_problem(when)
            if problem:
                err(file, c.line_of("when"), f"{p}.when", f"not a valid FHIRPath expression: {problem}")
                continue
            fn = fhirpathpy.compile(when)
            sets = {}
            for key in ("set", "if_unknown"):
                if key in c and c[key] is not None:
                    if not isinstance(c[key], Node):
                        err(file, c.line_of(key), f"{p}.{key}", "a mapping of rule fields to change")
                        continue
                    bad = [k for k in c[key] if k not in SETTABLE]
                    if bad:
                        err(file, c[key].line_of(bad[0]), f"{p}.{key}.{bad[0]}", f"cannot be set by a condition; settable: {', '.join(SETTABLE)}")
                    sets[key] = self.values(file, c[key], f"{p}.{key}")
            if "set" not in sets and "if_unknown" not in sets:
                err(file, ln, p, "a condition needs 'set' (and/or 'if_unknown') saying what changes")
            out.append(Condition(_string(c.get("id")) or f"{i + 1}", when, explain or when, sets.get("set", {}), sets.get("if_unknown"), fn))
        return out


class _Collect(ErrorListener):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def syntaxError(self, recognizer, offendingSymbol, line, column, msg, e):  # noqa: N802 - ANTLR's name
        self.messages.append(f"column {column + 1}: {msg}")


def fhirpath_problem(expression: str) -> str | None:
    """The first syntax problem in a FHIRPath expression, or None.

    fhirpathpy's parser recovers from syntax errors silently ('%age > > 1' compiles), so the
    expression is parsed here with an error listener, required to be consumed to the end, and then
    run once on empty data to catch unknown functions and wrong arity.
    """
    from antlr4 import CommonTokenStream, InputStream, Token
    from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
    from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

    listener = _Collect()
    try:
        lexer = FHIRPathLexer(InputStream(expression))
        lexer.removeErrorListeners()
        lexer.addErrorListener(listener)
        stream = CommonTokenStream(lexer)
        parser = FHIRPathParser(stream)
        parser.removeErrorListeners()
        parser.addErrorListener(listener)
        parser.expression()
        if not listener.messages and stream.LA(1) != Token.EOF:
            listener.messages.append(f"unexpected '{stream.LT(1).text}' at column {stream.LT(1).column + 1}")
    except Exception as exc:  # the lexer raises on characters it cannot read
        return str(exc)[:200] or type(exc).__name__
    if listener.messages:
        return listener.messages[0][:200]
    try:
        fhirpathpy.compile(expression)({}, {name: [] for name in CONDITION_VARIABLES})
    except Exception as exc:
        return str(exc)[:200] or type(exc).__name__
    return None


def rule_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in RULE_FILE_SUFFIXES and not p.name.startswith("."))


def signature(directory: Path) -> tuple:
    """What changes when any rule file is added, removed or edited (for hot reload)."""
    out = []
    for p in rule_files(directory):
        st = p.stat()
        out.append((p.name, st.st_mtime_ns, st.st_size))
    return tuple(out)


def load_directory(directory: Path):
    """Read and validate every rule file in ``directory``; raise :class:`RulesError` listing all problems."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RulesError([f"{directory}: the rules directory does not exist"])
    reader = _Reader()
    digest = hashlib.sha256()
    files = rule_files(directory)
    if not files:
        raise RulesError([f"{directory}: no rule files (*.yaml) found"])
    # The payer file first, so plan names can be checked wherever rules mention them.
    parsed = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        digest.update(path.name.encode() + b"\0" + text.encode())
        try:
            data = load_yaml(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark else 0
            reader.errors.add(path.name, line, "(yaml)", str(getattr(exc, "problem", None) or exc).strip())
            continue
        parsed.append((path.name, data))
    parsed.sort(key=lambda item: 0 if isinstance(item[1], dict) and "payer" in item[1] else 1)
    for name, data in parsed:
        reader.read_file(name, data)
    if reader.payer is None:
        reader.errors.add(str(directory), 0, "payer", "no file defines the payer (a 'payer:' section)")
    if reader.errors.items:
        raise RulesError(reader.errors.items)
    return RuleSet(
        payer=reader.payer, defaults=reader.defaults, gold_cards=reader.gold, rules=reader.rules,
        source=str(directory), files=[p.name for p in files], version=digest.hexdigest()[:16],
    )
