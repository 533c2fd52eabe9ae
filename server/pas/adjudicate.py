"""Deciding a prior-authorization request item by item.

The same payer rules that answer CRD decide here, so a service CRD said needs no authorization is
never pended. Where the rules let Precert decide (``review: auto``), the DTR answers attached to the
request are assessed against the payer's criteria: met -> certified (A1); not met -> pended (A4) for a
physician reviewer with the criteria trace on the case; missing or incomplete -> pended (A4) for a
clinician, who also decides everything the rules reserve for a human (``review: clinical``).

The denial policy: automatic decisions approve or pend; they deny (A3) or modify (A6) only for
administrative reasons (not covered, the plan's quantity limit), never on clinical grounds. A rule
may opt in with ``auto_clinical_denial: true`` where the payer's jurisdiction allows automatic
clinical denial; such a denial is marked ``automatic_clinical_denial`` on the case and counted in
the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from questionnaires.criteria import assess, questionnaire_of
from server.pas.request import PasBundle, ext_value
from server.rules.model import EvaluationInput
from server.pas.constants import EXT_REQUESTED_SERVICE, LEVEL_OF_SERVICE_CS, EXT_LEVEL_OF_SERVICE, ReviewAction

NPI = "http://hl7.org/fhir/sid/us-npi"


@dataclass
class ItemDecision:
    sequence: int
    action: str  # A1 | A3 | A4 | A6
    summary: str  # the item's service, in words
    codes: list[dict]
    reason: str | None = None  # plain language: why denied, pended or modified
    requested_quantity: float | None = None
    authorized_quantity: float | None = None
    category: str | None = None
    rule_id: str | None = None
    questionnaire: str | None = None
    assessment: dict | None = None
    auth_period_days: int | None = None
    cancelled: bool = False
    pa_needed: str | None = None
    trace: list[str] = field(default_factory=list)
    reason_code: str | None = None  # server.pas.reasons code of a denial or modification
    reason_class: str | None = None  # "administrative" | "clinical"
    automatic_clinical_denial: bool = False  # denied on clinical grounds by the payer's opt-in rule
    criteria_not_met: list[str] = field(default_factory=list)  # the unmet criteria, for the physician

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class MemberCheck:
    error: tuple[str, str, str] | None = None  # (X12 901 code, text, FHIRPath)
    coverage: dict | None = None  # the payer's own Coverage record
    patient: dict | None = None


def codings(concept: Any) -> list[dict]:
    if isinstance(concept, dict):
        return [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    return []


def describe(item: dict) -> str:
    for c in codings(item.get("productOrService")):
        text = c.get("display") or ""
        return f"{c.get('code')} {text}".strip()
    return f"item {item.get('sequence')}"


def provider_ids(pas: PasBundle) -> list[str]:
    """NPIs (and other identifier values) of the requesting and care-team providers."""
    out: list[str] = []
    claim = pas.claim
    refs = [claim.get("provider")] + [ct.get("provider") for ct in claim.get("careTeam") or [] if isinstance(ct, dict)]
    for ref in refs:
        res = pas.resource(ref)
        if not res:
            continue
        stack = [res]
        if res.get("resourceType") == "PractitionerRole":
            for key in ("practitioner", "organization"):
                sub = pas.resource(res.get(key))
                if sub:
                    stack.append(sub)
        for r in stack:
            for ident in r.get("identifier") or []:
                if isinstance(ident, dict) and ident.get("value"):
                    out.append(str(ident["value"]))
    return list(dict.fromkeys(out))


def member_ids(pas: PasBundle) -> list[str]:
    """Member identifiers the request carries: Coverage identifiers and subscriberId, and the
    Patient's identifiers, as 'system|value' where the system is known."""
    out: list[str] = []
    claim = pas.claim
    coverage = None
    for ins in claim.get("insurance") or []:
        if isinstance(ins, dict) and ins.get("focal") is True:
            coverage = pas.resource(ins.get("coverage"))
    patient = pas.resource(claim.get("patient"))
    for res in (coverage, patient):
        for ident in (res or {}).get("identifier") or []:
            if isinstance(ident, dict) and ident.get("value"):
                out.append(f"{ident['system']}|{ident['value']}" if ident.get("system") else str(ident["value"]))
    if coverage and coverage.get("subscriberId"):
        out.append(str(coverage["subscriberId"]))
    return list(dict.fromkeys(out))


def expedited(claim: dict) -> bool:
    """Urgent requests get the 72-hour clock: Claim.priority 'stat' or X12 level of service U."""
    if any(c.get("code") == "stat" for c in codings(claim.get("priority"))):
        return True
    level = ext_value(claim, EXT_LEVEL_OF_SERVICE)
    return any(c.get("code") in ("U", "03") and c.get("system", LEVEL_OF_SERVICE_CS) == LEVEL_OF_SERVICE_CS for c in codings(level))


def service_date(item: dict) -> str | None:
    if item.get("servicedDate"):
        return item["servicedDate"]
    period = item.get("servicedPeriod") or {}
    return period.get("start")


def questionnaire_responses(pas: PasBundle) -> list[dict]:
    """DTR QuestionnaireResponses attached through Claim.supportingInfo (directly, or inside a
    Bundle as 2.2.1 allows), plus any QuestionnaireResponse entry in the request Bundle."""
    found: list[dict] = []
    for si in pas.claim.get("supportingInfo") or []:
        res = pas.resource((si or {}).get("valueReference")) if isinstance(si, dict) else None
        if not res:
            continue
        if res.get("resourceType") == "QuestionnaireResponse":
            found.append(res)
        elif res.get("resourceType") == "Bundle":
            for e in res.get("entry") or []:
                r = (e or {}).get("resource") or {}
                if r.get("resourceType") == "QuestionnaireResponse":
                    found.append(r)
    for e in pas.entries:
        if e.type == "QuestionnaireResponse" and e.resource not in found:
            found.append(e.resource)
    return found


def _canonical_base(url: str) -> str:
    return url.split("|")[0]


def _answers(qr: dict) -> str | None:
    """The form a response answers: its questionnaire canonical, or, for an adaptive response
    (whose questionnaire is a contained, grown copy), the Precert form it was derived from."""
    found = questionnaire_of(qr)
    if found:
        return found
    q = qr.get("questionnaire")
    return q if isinstance(q, str) else None


def _matching_response(responses: list[dict], canonical: str) -> dict | None:
    base = _canonical_base(canonical)
    for qr in responses:
        q = _answers(qr)
        if q and _canonical_base(q) == base:
            return qr
    return None


def _assess(qr: dict) -> dict | None:
    result = assess(qr)
    return asdict(result) if hasattr(result, "__dataclass_fields__") else dict(result)


def decide_item(
    item: dict,
    determination,
    responses: list[dict],
) -> ItemDecision:
    seq = int(item.get("sequence") or 0)
    quantity = (item.get("quantity") or {}).get("value")
    decision = ItemDecision(
        sequence=seq, action=ReviewAction.PENDED, summary=describe(item), codes=codings(item.get("productOrService")),
        requested_quantity=quantity, authorized_quantity=quantity,
        category=determination.category, rule_id=determination.rule_id,
        auth_period_days=determination.auth_period_days, pa_needed=determination.pa_needed,
        trace=list(determination.trace),
    )
    reason = (determination.reason or {}).get("display")
    if determination.covered == "not-covered":
        decision.action = ReviewAction.DENIED
        decision.reason_code = "not-covered"
        decision.reason_class = "administrative"
        decision.reason = reason or f"{decision.summary} is not a covered benefit under this plan."
        decision.trace.append("not covered: not certified (A3)")
        return decision
    if determination.pa_needed in ("no-auth", "satisfied"):
        decision.action = ReviewAction.APPROVED
        decision.reason = (
            "No prior authorization is required for this service." if determination.pa_needed == "no-auth"
            else "Prior authorization requirement satisfied (provider gold-carded)."
        )
        decision.trace.append(f"pa-needed {determination.pa_needed}: certified (A1)")
        return decision
    if determination.review == "clinical":
        decision.action = ReviewAction.PENDED
        decision.reason = "Pended for clinical review: this service is decided by a clinician."
        decision.trace.append("rules reserve this service for clinical review: pended (A4)")
        if determination.questionnaires:
            qr = _matching_response(responses, determination.questionnaires[0])
            decision.questionnaire = determination.questionnaires[0]
            if qr is not None:
                decision.assessment = _assess(qr)
        return decision
    if determination.questionnaires and determination.doc_needed:
        canonical = determination.questionnaires[0]
        decision.questionnaire = canonical
        qr = _matching_response(responses, canonical)
        if qr is None:
            decision.action = ReviewAction.PENDED
            decision.reason = f"Pended: the required documentation ({_canonical_base(canonical).rsplit('/', 1)[-1]} questionnaire) was not attached."
            decision.trace.append("required DTR questionnaire missing: pended (A4)")
            return decision
        assessment = _assess(qr)
        decision.assessment = assessment
        if assessment is None or not assessment.get("complete") or assessment.get("met") is None:
            decision.action = ReviewAction.PENDED
            missing = ", ".join((assessment or {}).get("missing") or [])[:300]
            decision.reason = "Pended: the documentation is incomplete" + (f" (unanswered: {missing})." if missing else ".")
            decision.trace.append("documentation incomplete: pended (A4)")
            return decision
        if assessment.get("met") is False:
            unmet = "; ".join(assessment.get("unmet") or []) or "the coverage criteria were not met"
            decision.criteria_not_met = list(assessment.get("unmet") or [])
            decision.reason_code = "criteria-not-met"
            decision.reason_class = "clinical"
            if getattr(determination, "auto_clinical_denial", False):
                # The payer's rule opts in to automatic clinical denial where its jurisdiction allows it.
                decision.action = ReviewAction.DENIED
                decision.automatic_clinical_denial = True
                decision.reason = (f"Not certified: {unmet}. Policy: payer rule {determination.rule_id}"
                                   f"{f' ({determination.category})' if determination.category else ''}.")
                decision.trace.append("coverage criteria not met; the rule opts in to automatic clinical denial: not certified (A3)")
                return decision
            decision.action = ReviewAction.PENDED
            decision.reason = f"Pended for review by a physician: the answers do not meet the criteria ({unmet})."
            decision.trace.append("coverage criteria not met: pended (A4) for a physician reviewer; "
                                  "automatic decisions never deny on clinical grounds")
            return decision
        decision.trace.append("coverage criteria met")
    decision.action = ReviewAction.APPROVED
    decision.trace.append("certified (A1)")
    limit = determination.max_units
    if limit is not None and quantity is not None and float(quantity) > float(limit):
        decision.action = ReviewAction.MODIFIED
        decision.reason_code = "quantity-limit"
        decision.reason_class = "administrative"
        decision.authorized_quantity = float(limit)
        decision.reason = f"Modified: {quantity:g} requested; up to {float(limit):g} can be authorized per request."
        decision.trace.append(f"quantity {quantity:g} over the limit {float(limit):g}: modified (A6)")
    return decision


def evaluation_input(pas: PasBundle, item: dict, coverage: dict | None, patient: dict | None):
    claim = pas.claim
    order = pas.resource(ext_value(item, EXT_REQUESTED_SERVICE))
    diagnoses = [c for dx in claim.get("diagnosis") or [] if isinstance(dx, dict) for c in codings(dx.get("diagnosisCodeableConcept"))]
    # The item's own code decides; the requested order's code stands in only when the item has none
    # (a data-absent-reason "not-applicable" productOrService).
    codes = [c for c in codings(item.get("productOrService")) if c.get("system") != "http://terminology.hl7.org/CodeSystem/data-absent-reason"]
    if not codes and order:
        for key in ("code", "codeCodeableConcept", "medicationCodeableConcept"):
            codes.extend(c for c in codings(order.get(key)) if c not in codes)
    insurer = pas.resource(claim.get("insurer"))
    return EvaluationInput(
        codes=codes,
        coverage=coverage,
        patient=patient,
        order=order or item,
        provider_ids=provider_ids(pas),
        diagnoses=diagnoses,
        quantity=(item.get("quantity") or {}).get("value"),
        service_date=service_date(item),
        payer=insurer,
    )
