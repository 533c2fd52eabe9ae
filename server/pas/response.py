"""Building PAS response Bundles (ClaimResponse first, then every resource it references).

The ClaimResponse's references are written as the absolute fullUrls of the request entries they
point to, and those entries are echoed unchanged with their original fullUrls (PAS spec-33), together
with everything reachable from them, so a client (or a validator) resolves every reference inside the
Bundle. The shape follows the version asked for: 2.2.1 by default, 2.0.1 where the request says so.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from server.pas.adjudicate import ItemDecision
from server.pas.constants import (
    ReviewAction,
    DATA_ABSENT_REASON, EXT_ADMISSION_DATES, EXT_AUTH_NUMBER, EXT_COMMUNICATED_DIAGNOSIS, EXT_DISCHARGE_DATE,
    EXT_SERVICE_LINE, PROFILE_COMMUNICATION_REQUEST, EXT_ADMIN_REF, EXT_AUTHORIZED_DETAIL, EXT_AUTHORIZED_PROVIDER, EXT_ERROR_ELEMENT,
    EXT_ERROR_FOLLOWUP, EXT_ERROR_PATH, EXT_ITEM_TRACE, EXT_PREAUTH_ISSUE, EXT_PREAUTH_PERIOD,
    EXT_REQUESTED_SERVICE_DATE, EXT_REVIEW_ACTION, EXT_REVIEW_ACTION_CODE, EXT_REVIEWER, EXT_TRANSMISSION,
    FOLLOWUP_CS, PROFILE_CLAIMINQUIRYRESPONSE, PROFILE_CLAIMRESPONSE, PROFILE_INQUIRY_RESPONSE_BUNDLE,
    PROFILE_RESPONSE_BUNDLE, REJECT_REASON_CS, REVIEW_ACTION_CS, REVIEW_ACTIONS, SD, V201,
)
from server.pas.reasons import x12_coding
from server.pas.request import Entry, PasBundle
from server.storage import fhir_instant, utcnow

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
ADJUDICATION_SUBMITTED = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adjudication", "code": "submitted"}]}
DEFAULT_AUTH_DAYS = 90
ACTION_DISPLAY = dict(REVIEW_ACTIONS, C="Cancelled")
# Claim.item extensions a modification's addItem carries over (2.2.1 defines them on addItem).
ADD_ITEM_ECHOED = {SD + name for name in (
    "extension-itemTraceNumber", "extension-epsdtIndicator", "extension-nursingHomeResidentialStatus",
    "extension-nursingHomeLevelOfCare", "extension-productOrServiceCodeEnd", "extension-revenueUnitRateLimit",
    "extension-serviceItemRequestType", "extension-certificationType",
)}


def review_action(code: str, number: str | None = None, reason: dict | None = None) -> dict:
    subs: list[dict] = []
    if number:
        subs.append({"url": "number", "valueString": number})
    subs.append({
        "url": EXT_REVIEW_ACTION_CODE,
        "valueCodeableConcept": {"coding": [{"system": REVIEW_ACTION_CS, "code": code, "display": ACTION_DISPLAY.get(code, code)}]},
    })
    if reason:
        subs.append({"url": "reasonCode", "valueCodeableConcept": {"coding": [reason]}})
    return {"url": EXT_REVIEW_ACTION, "extension": subs}


def _walk_references(value: Any, out: list[dict]) -> None:
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            out.append(value)
        for v in value.values():
            _walk_references(v, out)
    elif isinstance(value, list):
        for v in value:
            _walk_references(v, out)


class Echo:
    """Collects request entries to echo in the response, with everything they reference."""

    def __init__(self, pas: PasBundle):
        self.pas = pas
        self.entries: list[Entry] = []
        self._seen: set[int] = set()
        # Resources the answer creates (CommunicationRequests), as (fullUrl, resource).
        self.generated: list[tuple[str, dict]] = []

    def ref(self, reference: Any, source: Entry | None = None) -> dict | None:
        """A Reference to the echoed copy of a request resource (absolute fullUrl), or None."""
        entry = self.pas.resolve(reference, source or self.pas.claim_entry)
        if entry is None:
            return None
        self.add(entry)
        out = {"reference": entry.full_url}
        if isinstance(reference, dict) and reference.get("display"):
            out["display"] = reference["display"]
        return out

    def add(self, entry: Entry) -> None:
        if entry.index in self._seen or entry.type == "Claim":
            return
        self._seen.add(entry.index)
        self.entries.append(entry)
        refs: list[dict] = []
        _walk_references(entry.resource, refs)
        for r in refs:
            target = self.pas.resolve(r, entry)
            if target is not None and target.type != "Claim":
                self.add(target)


def _transmission(claim: dict) -> dict | None:
    for ext in claim.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == EXT_TRANSMISSION:
            subs = {s.get("url"): s.get("valueString") for s in ext.get("extension") or [] if isinstance(s, dict)}
            swapped = []
            # The response travels the other way: sender and receiver trade places.
            for ours, theirs in (("applicationSenderCode", "applicationReceiverCode"), ("applicationReceiverCode", "applicationSenderCode"),
                                 ("interchangeSenderID", "interchangeReceiverID"), ("interchangeReceiverID", "interchangeSenderID")):
                if subs.get(theirs):
                    swapped.append({"url": ours, "valueString": subs[theirs]})
            if any(s["url"] == "applicationSenderCode" for s in swapped) and any(s["url"] == "applicationReceiverCode" for s in swapped):
                return {"url": EXT_TRANSMISSION, "extension": swapped}
    return None


def _period(start: date, days: int) -> dict:
    return {"start": start.isoformat(), "end": (start + timedelta(days=days)).isoformat()}


def _service_start(item: dict) -> date:
    text = item.get("servicedDate") or (item.get("servicedPeriod") or {}).get("start")
    try:
        if text:
            return max(date.fromisoformat(text[:10]), date.today())
    except ValueError:
        pass
    return date.today()


def build_claim_response(
    pas: PasBundle,
    echo: Echo,
    *,
    response_id: str,
    version: str,
    decisions: list[ItemDecision] | None,
    case_number: str,
    auth_number: str | None,
    reviewed_by_human: bool = False,
    errors: list[tuple[str, str, str]] | None = None,
    disposition: str | None = None,
    inquiry: bool = False,
    created: str | None = None,
    previous_auth_number: str | None = None,
    reviewer_npi: str | None = None,
) -> dict:
    """The ClaimResponse of the version asked for. ``reviewer_npi`` is the NPI of the person who
    reviewed (2.2.1 ``claimResponseReviewer.reviewerNPI``; 2.0.1 defines no place for it)."""
    claim = pas.claim
    claim_entry = pas.claim_entry
    cr: dict = {
        "resourceType": "ClaimResponse",
        "id": response_id,
        "meta": {"profile": [PROFILE_CLAIMINQUIRYRESPONSE if inquiry else PROFILE_CLAIMRESPONSE]},
    }
    extensions: list[dict] = []
    if version != V201:
        trans = _transmission(claim)
        if trans:
            extensions.append(trans)
        if decisions:
            reviewer = [{"url": "wasHumanReviewedFlag", "valueBoolean": reviewed_by_human}]
            if reviewed_by_human and reviewer_npi:
                reviewer.append({"url": "reviewerNPI", "valueIdentifier": {"system": NPI_SYSTEM, "value": reviewer_npi}})
            extensions.append({"url": EXT_REVIEWER, "extension": reviewer})
            if any(d.action in (ReviewAction.APPROVED, ReviewAction.MODIFIED) for d in decisions):
                provider = _authorized_provider(pas, echo, claim)
                if provider:
                    extensions.append({"url": EXT_AUTHORIZED_PROVIDER, "extension": [{"url": "provider", "valueReference": provider}]})
    if extensions:
        cr["extension"] = extensions
    if claim.get("identifier"):
        cr["identifier"] = claim["identifier"]
    cr["status"] = "active"
    cr["type"] = claim.get("type") or {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]}
    cr["use"] = "preauthorization"
    patient = echo.ref(claim.get("patient"))
    cr["patient"] = patient or claim.get("patient")
    cr["created"] = created or fhir_instant(utcnow())
    cr["insurer"] = echo.ref(claim.get("insurer")) or claim.get("insurer")
    requestor = echo.ref(claim.get("provider"))
    if requestor:
        cr["requestor"] = requestor
    request: dict = {}
    if claim_entry and claim_entry.full_url:
        request["reference"] = claim_entry.full_url
    if claim.get("identifier"):
        request["identifier"] = claim["identifier"][0]
    if request:
        cr["request"] = request
    elif version != V201:
        # 2.2.1 requires request; with nothing to point at, it says why.
        cr["request"] = {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "unknown"}]}
    notes: list[dict] = []
    if errors:
        cr["outcome"] = "error"
        cr["disposition"] = disposition or "The request could not be processed."
        cr["error"] = []
        for code, text, path in errors:
            notes.append({"number": len(notes) + 1, "type": "display", "text": text})
            err: dict = {"extension": [], "code": {"coding": [{"system": REJECT_REASON_CS, "code": code, "display": text}]}}
            if version == V201:
                err["extension"].append({"url": EXT_ERROR_ELEMENT, "valueString": path})
            else:
                err["extension"].append({"url": EXT_ERROR_ELEMENT, "extension": [{"url": "processNote", "valuePositiveInt": len(notes)}]})
            err["extension"].append({"url": EXT_ERROR_PATH, "valueString": path})
            err["extension"].append({"url": EXT_ERROR_FOLLOWUP, "valueCodeableConcept": {"coding": [{"system": FOLLOWUP_CS, "code": "C", "display": "Please Correct and Resubmit"}]}})
            cr["error"].append(err)
        cr["processNote"] = notes
        return cr

    decisions = decisions or []
    pended = any(d.action == ReviewAction.PENDED for d in decisions)
    approved = [d for d in decisions if d.action in (ReviewAction.APPROVED, ReviewAction.MODIFIED)]
    cr["outcome"] = "queued" if (pended and version == V201) else "complete"
    cr["disposition"] = disposition or _disposition(decisions)
    if approved and auth_number:
        cr["preAuthRef"] = auth_number
        days = max(d.auth_period_days or DEFAULT_AUTH_DAYS for d in approved)
        cr["preAuthPeriod"] = _period(date.today(), days)
    items_by_seq = {int(i.get("sequence") or 0): i for i in claim.get("item") or [] if isinstance(i, dict)}
    diagnoses = _diagnoses(claim)
    admission, discharge = _admission_discharge(claim) if version != V201 else (None, None)
    items_out: list[dict] = []
    add_items: list[dict] = []
    communication_requests: list[tuple[str, dict]] = []
    for d in decisions:
        item = items_by_seq.get(d.sequence, {})
        ext: list[dict] = []
        for trace in item.get("extension") or []:
            if isinstance(trace, dict) and trace.get("url") == EXT_ITEM_TRACE:
                ext.append(trace)
        if item.get("servicedDate"):
            ext.append({"url": EXT_REQUESTED_SERVICE_DATE, "valueDateTime": item["servicedDate"]})
        elif item.get("servicedPeriod"):
            ext.append({"url": EXT_REQUESTED_SERVICE_DATE, "valuePeriod": item["servicedPeriod"]})
        for dx in [diagnoses[n] for n in item.get("diagnosisSequence") or [] if n in diagnoses]:
            ext.append({"url": EXT_COMMUNICATED_DIAGNOSIS, "valueCodeableConcept": dx})
        if previous_auth_number:
            ext.append({"url": EXT_AUTH_NUMBER, "valueString": previous_auth_number})
        if admission:
            ext.append(admission)
        if discharge:
            ext.append(discharge)
        number = None
        if d.action in (ReviewAction.APPROVED, ReviewAction.MODIFIED):
            number = f"{auth_number}-{d.sequence}" if auth_number else None
            ext.append({"url": EXT_PREAUTH_ISSUE, "valueDate": date.today().isoformat()})
            ext.append({"url": EXT_PREAUTH_PERIOD, "valuePeriod": _period(_service_start(item), d.auth_period_days or DEFAULT_AUTH_DAYS)})
            if requestor:
                provider = _authorized_provider(pas, echo, claim)
                if provider:
                    ext.append({"url": EXT_AUTHORIZED_PROVIDER, "extension": [{"url": "provider", "valueReference": provider}]})
        if d.action in (ReviewAction.PENDED, ReviewAction.DENIED) and case_number:
            # The payer's reference for a pended or not-certified outcome.
            number = f"{case_number}-{d.sequence}"
            ext.append({"url": EXT_ADMIN_REF, "valueString": number})
        if d.action == ReviewAction.PENDED and needs_documentation(d):
            communication_requests.append(_communication_request(pas, echo, cr, d, item, version))
        if d.action == ReviewAction.MODIFIED and d.authorized_quantity is not None:
            detail = [{"url": "productOrServiceCode", "valueCodeableConcept": item.get("productOrService")}] if item.get("productOrService") else []
            detail.append({"url": "quantity", "valueQuantity": _quantity(item, d.authorized_quantity)})
            ext.append({"url": EXT_AUTHORIZED_DETAIL, "extension": detail})
        out: dict = {}
        if ext:
            out["extension"] = ext
        out["itemSequence"] = d.sequence
        if d.reason:
            notes.append({"number": len(notes) + 1, "type": "display", "text": f"Item {d.sequence} ({d.summary}): {d.reason}"})
            out["noteNumber"] = [len(notes)]
        out["adjudication"] = [{"extension": [review_action(d.action, number, x12_coding(d.reason_code) if d.action in (ReviewAction.DENIED, ReviewAction.MODIFIED) else None)],
                                "category": ADJUDICATION_SUBMITTED}]
        items_out.append(out)
        if d.action == ReviewAction.MODIFIED and d.authorized_quantity is not None:
            add: dict = {"itemSequence": [d.sequence], "productOrService": item.get("productOrService")}
            if item.get("servicedDate"):
                add["servicedDate"] = item["servicedDate"]
            elif item.get("servicedPeriod"):
                add["servicedPeriod"] = item["servicedPeriod"]
            add["quantity"] = _quantity(item, d.authorized_quantity)
            for name in ("modifier", "unitPrice", "locationCodeableConcept", "locationAddress", "locationReference"):
                if item.get(name):
                    add[name] = item[name]
            if requestor:
                add["provider"] = [requestor]
            if version != V201:
                add_ext = [e for e in item.get("extension") or [] if isinstance(e, dict) and e.get("url") in ADD_ITEM_ECHOED]
                add_ext.append({"url": EXT_PREAUTH_ISSUE, "valueDate": date.today().isoformat()})
                add_ext.append({"url": EXT_PREAUTH_PERIOD, "valuePeriod": _period(_service_start(item), d.auth_period_days or DEFAULT_AUTH_DAYS)})
                add = {"extension": add_ext, **add}
            add["adjudication"] = [{"extension": [review_action(ReviewAction.APPROVED, number)], "category": ADJUDICATION_SUBMITTED}]
            add_items.append(add)
    if items_out:
        cr["item"] = items_out
    if add_items:
        cr["addItem"] = add_items
    if version != V201 and decisions:
        # 2.2.1 header adjudication: the overall review outcome.
        cr["adjudication"] = [{"extension": [review_action(_overall_action(decisions), auth_number if approved else None)],
                               "category": ADJUDICATION_SUBMITTED}]
    if notes:
        cr["processNote"] = notes
    if communication_requests:
        cr["communicationRequest"] = [{"reference": url} for url, _ in communication_requests]
        echo.generated.extend(communication_requests)
    return cr


def needs_documentation(d: ItemDecision) -> bool:
    """Pended because documentation is missing or incomplete (not for a clinician's judgement)."""
    return d.action == ReviewAction.PENDED and bool(d.questionnaire) and not (d.assessment or {}).get("complete")


def _overall_action(decisions: list[ItemDecision]) -> str:
    actions = {d.action for d in decisions} - {ReviewAction.CANCELLED}
    if not actions:
        return ReviewAction.APPROVED
    if ReviewAction.PENDED in actions:
        return ReviewAction.PENDED
    if actions == {ReviewAction.APPROVED}:
        return ReviewAction.APPROVED
    if actions == {ReviewAction.DENIED}:
        return ReviewAction.DENIED
    return ReviewAction.MODIFIED


def _diagnoses(claim: dict) -> dict[int, dict]:
    out = {}
    for dx in claim.get("diagnosis") or []:
        if isinstance(dx, dict) and isinstance(dx.get("diagnosisCodeableConcept"), dict):
            try:
                out[int(dx.get("sequence"))] = dx["diagnosisCodeableConcept"]
            except (TypeError, ValueError):
                continue
    return out


def _admission_discharge(claim: dict) -> tuple[dict | None, dict | None]:
    """The requested admission and discharge dates (Claim.supportingInfo), echoed on each item."""
    admission = discharge = None
    for info in claim.get("supportingInfo") or []:
        if not isinstance(info, dict):
            continue
        codes = {c.get("code") for c in ((info.get("category") or {}).get("coding") or []) if isinstance(c, dict)}
        if "admissionDates" in codes:
            if info.get("timingDate"):
                admission = {"url": EXT_ADMISSION_DATES, "valueDate": info["timingDate"]}
            elif info.get("timingPeriod"):
                admission = {"url": EXT_ADMISSION_DATES, "valuePeriod": info["timingPeriod"]}
        if "dischargeDates" in codes and info.get("timingDate"):
            discharge = {"url": EXT_DISCHARGE_DATE, "valueDate": info["timingDate"]}
    return admission, discharge


def _communication_request(pas: PasBundle, echo: Echo, cr: dict, d: ItemDecision, item: dict, version: str) -> tuple[str, dict]:
    """A CommunicationRequest naming the documentation still needed for one pended item."""
    rid = str(uuid.uuid4())
    form = (d.questionnaire or "").split("|")[0]
    payload: dict = {"contentString": f"Complete and attach the questionnaire {form} for item {d.sequence} ({d.summary})."}
    if version == V201:
        payload["extension"] = [{"url": EXT_SERVICE_LINE, "valuePositiveInt": d.sequence}]
    resource: dict = {
        "resourceType": "CommunicationRequest",
        "id": rid,
        "meta": {"profile": [PROFILE_COMMUNICATION_REQUEST]},
        # PAS requires an identifier unless the request is verbal (IdentifierUnlessVO).
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{rid}"}],
    }
    if version != V201:
        resource["extension"] = [{"url": EXT_SERVICE_LINE, "valuePositiveInt": d.sequence}]
    resource.update({
        "status": "active",
        "category": [{"coding": [{"system": "http://hl7.org/fhir/us/davinci-pas/CodeSystem/PASTempCodes", "code": "priorAuthorization"}]}],
        "subject": cr.get("patient"),
        "about": [{"reference": pas.claim_entry.full_url}] if pas.claim_entry and pas.claim_entry.full_url else [],
        "payload": [payload],
        "authoredOn": fhir_instant(utcnow()),
        "requester": cr.get("insurer"),
    })
    if cr.get("requestor"):
        resource["recipient"] = [cr["requestor"]]
    if not resource["about"]:
        del resource["about"]
    return f"urn:uuid:{rid}", {k: v for k, v in resource.items() if v is not None}


def _quantity(item: dict, value: float) -> dict:
    q = dict(item.get("quantity") or {})
    q["value"] = int(value) if float(value).is_integer() else value
    if not q.get("unit") and not q.get("code"):
        q["unit"] = "units"
    return q


def _authorized_provider(pas: PasBundle, echo: Echo, claim: dict) -> dict | None:
    """The provider the authorization is for: the requesting Organization, or the Practitioner of
    the requesting PractitionerRole (the extension allows Practitioner or Organization)."""
    entry = pas.resolve(claim.get("provider"), pas.claim_entry)
    if entry is None:
        return None
    if entry.type == "PractitionerRole":
        return echo.ref(entry.resource.get("practitioner"), entry) or echo.ref(entry.resource.get("organization"), entry)
    if entry.type in ("Organization", "Practitioner"):
        return {"reference": entry.full_url}
    return None


def _disposition(decisions: list[ItemDecision]) -> str:
    actions = {d.action for d in decisions}
    if not decisions:
        return "No items"
    if actions == {ReviewAction.CANCELLED}:
        return "Cancelled"
    if ReviewAction.PENDED in actions:
        return "Pended for review"
    if actions <= {ReviewAction.APPROVED, ReviewAction.CANCELLED}:
        return "Certified in total"
    if actions <= {ReviewAction.DENIED, ReviewAction.CANCELLED}:
        return "Not certified"
    if ReviewAction.MODIFIED in actions and ReviewAction.DENIED not in actions:
        return "Certified with modifications"
    return "Partially certified"


def response_bundle(
    claim_response: dict,
    echo: Echo,
    base: str,
    *,
    inquiry: bool = False,
    extra: list[tuple[str, dict]] = (),
    bundle_id: str | None = None,
) -> dict:
    """ClaimResponse first, then any extra resources (Task, Claim), then the echoed request entries."""
    entries = [{"fullUrl": f"{base}/ClaimResponse/{claim_response['id']}", "resource": claim_response}]
    for full_url, resource in list(extra) + echo.generated:
        entries.append({"fullUrl": full_url, "resource": resource})
        # Everything an added resource (the echoed Claim, a Task) references is in the Bundle too.
        source = next((e for e in echo.pas.entries if e.full_url == full_url), None) or echo.pas.claim_entry
        refs: list[dict] = []
        _walk_references(resource, refs)
        for r in refs:
            target = echo.pas.resolve(r, source)
            if target is not None:
                echo.add(target)
    for e in echo.entries:
        entries.append({"fullUrl": e.full_url, "resource": e.resource})
    bid = bundle_id or str(uuid.uuid4())
    return {
        "resourceType": "Bundle",
        "id": bid,
        "meta": {"profile": [PROFILE_INQUIRY_RESPONSE_BUNDLE if inquiry else PROFILE_RESPONSE_BUNDLE]},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{bid}"},
        "type": "collection",
        "timestamp": fhir_instant(utcnow()),
        "entry": entries,
    }
