"""The coverage-information extension, written for the CRD version the client asked for.

One payer answer (a :class:`~server.rules.model.Determination`) becomes one repetition of
``ext-coverage-information`` on the order. CRD 2.0.1 and 2.2 differ (brief docs/crd.md, "Versions"):
2.2 adds ``indeterminate``, ``patient`` documentation, ``detail.category``, ContactDetail contacts and
several reason codes; 2.0.1 has ContactPoint contacts and at most one ``doc-needed``. Every invariant
of both versions is enforced here (crd-ci-q1..q9), so a rule file cannot produce an invalid extension.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.rules.model import CRD_TEMP, Determination

EXT_URL = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
DETAIL_SYSTEM_22 = "http://terminology.hl7.org/CodeSystem/crd-coverage-detail"

# 2.2 reason codes (CodeSystem/temp); 2.0.1 knows only gold-card and detail-code.
REASONS_22 = {"gold-card", "no-member-found", "no-active-coverage", "coverage-not-found", "auth-out-network", "technical", "detail-code"}
REASONS_20 = {"gold-card", "detail-code"}


@dataclass(frozen=True)
class CRDVersion:
    label: str  # "2.0" (CRD 2.0.1 behaviour) or "2.2"

    @property
    def is22(self) -> bool:
        return self.label != "2.0"


V20 = CRDVersion("2.0")
V22 = CRDVersion("2.2")


def _codeable(reason: dict | None, version: CRDVersion) -> dict | None:
    if not reason:
        return None
    allowed = REASONS_22 if version.is22 else REASONS_20
    out: dict = {}
    code = reason.get("code")
    if code and (reason.get("system") not in (None, CRD_TEMP) or code in allowed):
        out["coding"] = [{"system": reason.get("system") or CRD_TEMP, "code": code}]
    if reason.get("display"):
        out["text"] = reason["display"]
    return out or None


def coverage_information(
    det: Determination,
    *,
    coverage_ref: str,
    assertion_id: str,
    today: str,
    version: CRDVersion,
    secondary: bool,
    satisfied_pa_id: str | None = None,
    contact: dict | None = None,
    billing_codes: list[dict] | None = None,
    indeterminate: str | None = None,
) -> dict:
    """One ext-coverage-information repetition.

    ``indeterminate`` (a plain-language reason) marks an answer Precert cannot give: the coverage is
    another payer's, or a technical problem. CRD 2.2 says ``indeterminate``; 2.0.1 has no such code,
    so there the answer is ``conditional`` with info-needed ``OTH`` and the reason as text.
    """
    covered, pa = det.covered, det.pa_needed
    doc = list(det.doc_needed)
    purposes = list(det.doc_purpose)
    info = list(det.info_needed)
    questionnaires = list(det.questionnaires)
    reason = dict(det.reason) if det.reason else None

    if indeterminate is not None:
        doc, purposes, questionnaires, info = [], [], [], []
        if version.is22:
            covered = pa = "indeterminate"
        else:
            covered = pa = "conditional"
            info = ["OTH"]
        reason = reason or {"code": None, "system": None, "display": indeterminate}
        if not reason.get("display"):
            reason["display"] = indeterminate

    # Secondary hooks never ask for documentation (CRD hooks.md, hook-19).
    if secondary:
        doc, purposes, questionnaires = [], [], []

    # Version vocabularies.
    if not version.is22:
        doc = [{"patient": "clinical", "indeterminate": "conditional"}.get(d, d) for d in doc][:1]
        info = [{"contract": "contract-window", "detail": "OTH", "detail-code": "OTH"}.get(i, i) for i in info]
    else:
        info = [{"contract": "contract-window", "detail": "detail-code"}.get(i, i) for i in info]
    info = list(dict.fromkeys(info))
    doc = list(dict.fromkeys(doc))

    # Invariants.
    if covered == "not-covered":
        pa = None                                   # 2.2 crd-ci-q2
        doc, questionnaires, purposes, info = [], [], [], []
    if pa in ("satisfied", "no-auth"):
        purposes = [p for p in purposes if p != "withpa"]   # crd-ci-q4
    if not doc:
        questionnaires = []                          # crd-ci-q1
        purposes = []
    conditional = "conditional" in (covered, pa) or "conditional" in doc
    if conditional and not info:
        info = ["OTH"]                               # 2.2 crd-ci-q3
    if info and not conditional and not version.is22:
        info = []                                    # 2.0.1 crd-ci-q3
    needs_reason = ("OTH" in info or bool(purposes) or "indeterminate" in (covered, pa))
    if needs_reason and not reason:                  # crd-ci-q6, q8, q9
        reason = {"code": None, "system": None, "display": _default_reason(covered, pa, doc)}

    ext: list[dict] = [{"url": "coverage", "valueReference": {"reference": coverage_ref}},
                       {"url": "covered", "valueCode": covered}]
    if pa:
        ext.append({"url": "pa-needed", "valueCode": pa})
    ext += [{"url": "doc-needed", "valueCode": d} for d in doc]
    ext += [{"url": "doc-purpose", "valueCode": p} for p in purposes]
    ext += [{"url": "info-needed", "valueCode": i} for i in info]
    for coding in billing_codes or []:
        ext.append({"url": "billingCode", "valueCoding": {k: coding[k] for k in ("system", "code", "display") if coding.get(k)}})
    cc = _codeable(reason, version)
    if cc:
        ext.append({"url": "reason", "valueCodeableConcept": cc})
    if det.max_units is not None and covered != "not-covered" and indeterminate is None:
        detail = [{"url": "code", "valueCodeableConcept": {"coding": [{"system": DETAIL_SYSTEM_22 if version.is22 else CRD_TEMP,
                                                                       "code": "allowed-quantity"}]}},
                  {"url": "value", "valueQuantity": {"value": det.max_units, "unit": "units per request"}}]
        if version.is22:
            detail.insert(0, {"url": "category", "valueCode": "cat-limitation"})
        ext.append({"url": "detail", "extension": detail})
    ext += [{"url": "questionnaire", "valueCanonical": q} for q in questionnaires]
    ext.append({"url": "date", "valueDate": today})
    ext.append({"url": "coverage-assertion-id", "valueString": assertion_id})
    if pa == "satisfied" and satisfied_pa_id:
        ext.append({"url": "satisfied-pa-id", "valueString": satisfied_pa_id})   # crd-ci-q5
    if contact and pa in ("auth-needed", "performpa", "conditional") and contact.get("phone"):
        if version.is22:
            ext.append({"url": "contact", "valueContactDetail": {"name": contact.get("name") or "Prior authorization",
                                                                 "telecom": [{"system": "phone", "value": contact["phone"]}]}})
        else:
            ext.append({"url": "contact", "valueContactPoint": {"system": "phone", "value": contact["phone"]}})
    return {"url": EXT_URL, "extension": ext}


def _default_reason(covered: str, pa: str | None, doc: list[str]) -> str:
    if covered == "indeterminate" or pa == "indeterminate":
        return "Coverage could not be determined."
    if doc:
        return "Documentation is needed: " + ", ".join(doc) + "."
    return "More information is needed to decide coverage."


def with_coverage_information(resource: dict, reps: list[dict]) -> dict:
    """A copy of ``resource`` whose coverage-information repetitions are replaced by ``reps``;
    everything else stays as the client sent it (CRD resp-37)."""
    out = dict(resource)
    kept = [e for e in resource.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == EXT_URL)]
    out["extension"] = kept + reps
    return out
