"""The stored PAS request Bundle, in the words a reviewer reads: member, coverage, requester,
items with their codes and names, diagnoses, documentation answers beside the payer's criteria,
attached documents.

Nothing here trusts the Bundle's shape beyond what PAS validation already checked: every lookup
tolerates missing or oddly typed elements, and everything shown is escaped by the templates.
"""

from __future__ import annotations

import base64
import binascii
from datetime import date
from functools import lru_cache
from typing import Any

import orjson

from server.pas.request import PasBundle
from questionnaires.catalog import expansion_contains, get_catalog
from server.pas.adjudicate import questionnaire_responses
from server.review.labels import ICD10_NAMES, SERVICE_NAMES
from server.pas.constants import ReviewAction
from server.pas.cases import Case

SYSTEMS = {
    "http://www.ama-assn.org/go/cpt": "CPT",
    "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": "HCPCS",
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": "HCPCS",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://www.cms.gov/Medicare/Coding/ICD10": "ICD-10-PCS",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/ndc": "NDC",
    "http://snomed.info/sct": "SNOMED CT",
    "https://codesystem.x12.org/005010/1365": "X12 service type",
    "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set": "Place of service",
}
NPI = "http://hl7.org/fhir/sid/us-npi"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
ACTIONS = {ReviewAction.APPROVED: "Certified", ReviewAction.DENIED: "Not certified", ReviewAction.PENDED: "Pended", ReviewAction.MODIFIED: "Modified", ReviewAction.CANCELLED: "Cancelled"}
SAFE_DOCUMENT_TYPES = {"application/pdf", "image/png", "image/jpeg", "image/gif", "text/plain", "application/xml", "text/xml"}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


@lru_cache(maxsize=1)
def _code_names() -> dict:
    """Code -> display from the DTR value sets (procedure, drug, device and diagnosis codes)."""
    names: dict = {}
    try:
        for vs in get_catalog().valuesets.values():
            for c in expansion_contains(vs):
                if c.get("code") and c.get("display"):
                    names.setdefault((c.get("system"), c["code"]), c["display"])
                    names.setdefault(c["code"], c["display"])
    except Exception:  # the templates are optional for the workbench
        pass
    return names


def code_name(coding: dict) -> str:
    """The display the request sent, else the DTR value sets' name, else (ICD-10-CM) the bundled name."""
    if coding.get("display"):
        return str(coding["display"])
    names = _code_names()
    found = names.get((coding.get("system"), coding.get("code"))) or names.get(coding.get("code"))
    if not found and coding.get("system") == ICD10:
        found = ICD10_NAMES.get(str(coding.get("code") or ""))
    return found or ""


def service_code_name(coding: dict) -> str:
    """A service code's name: as :func:`code_name`, else the bundled names of the sandbox rules' codes."""
    return code_name(coding) or SERVICE_NAMES.get(str(coding.get("code") or ""), "")


def codings(concept: Any) -> list[dict]:
    return [c for c in as_list(as_dict(concept).get("coding")) if isinstance(c, dict)]


def code_rows(concept: Any) -> list[dict]:
    """[{system, label, code, name}] of a CodeableConcept (its text when it has no codings)."""
    out = []
    for c in codings(concept):
        out.append({"system": str(c.get("system") or ""), "label": SYSTEMS.get(c.get("system"), str(c.get("system") or "")),
                    "code": str(c.get("code") or ""), "name": code_name(c)})
    text = as_dict(concept).get("text")
    if not out and isinstance(text, str):
        out.append({"system": "", "label": "", "code": "", "name": text})
    return out


def concept_text(concept: Any) -> str:
    text = as_dict(concept).get("text")
    if isinstance(text, str) and text:
        return text
    rows = code_rows(concept)
    return ", ".join(r["name"] or r["code"] for r in rows)


def human_name(resource: dict) -> str:
    for name in as_list(resource.get("name")):
        if isinstance(name, str):
            return name
        if not isinstance(name, dict):
            continue
        if name.get("text"):
            return str(name["text"])
        given = " ".join(str(g) for g in as_list(name.get("given")))
        parts = [p for p in (" ".join(str(p) for p in as_list(name.get("prefix"))), given, str(name.get("family") or "")) if p]
        if parts:
            return " ".join(parts)
    return ""


def identifiers(resource: dict) -> list[dict]:
    out = []
    for ident in as_list(resource.get("identifier")):
        if isinstance(ident, dict) and ident.get("value"):
            system = str(ident.get("system") or "")
            label = "NPI" if system == NPI else concept_text(ident.get("type")) or system.rsplit("/", 1)[-1] or "identifier"
            out.append({"label": label, "value": str(ident["value"]), "system": system})
    return out


def address(resource: dict) -> str:
    for a in as_list(resource.get("address")):
        if isinstance(a, dict):
            parts = [" ".join(str(x) for x in as_list(a.get("line")))] + [str(a.get(k) or "") for k in ("city", "state", "postalCode")]
            return ", ".join(p for p in parts if p)
    return ""


def telecom(resource: dict) -> str:
    return ", ".join(str(t.get("value")) for t in as_list(resource.get("telecom")) if isinstance(t, dict) and t.get("value"))


def period_text(period: Any) -> str:
    p = as_dict(period)
    start, end = p.get("start"), p.get("end")
    if start and end:
        return f"{start} to {end}"
    return str(start or end or "")


def party(pas: PasBundle, ref: Any) -> dict | None:
    """A provider (Organization, Practitioner or PractitionerRole with its practitioner and
    organization) as {kind, name, identifiers, address, telecom}."""
    res = pas.resource(ref) if isinstance(ref, dict) else None
    if not isinstance(res, dict):
        display = as_dict(ref).get("display")
        return {"kind": "", "name": str(display), "identifiers": [], "address": "", "telecom": "", "specialty": ""} if display else None
    kind = res.get("resourceType", "")
    name, idents, addr, tel, specialty = human_name(res), identifiers(res), address(res), telecom(res), ""
    if kind == "Organization":
        name = str(res.get("name") or "")
    if kind == "PractitionerRole":
        specialty = ", ".join(concept_text(s) for s in as_list(res.get("specialty")) if concept_text(s))
        prac = pas.resource(res.get("practitioner"))
        org = pas.resource(res.get("organization"))
        if isinstance(prac, dict):
            name = human_name(prac)
            idents = idents + identifiers(prac)
            addr = addr or address(prac)
        if isinstance(org, dict):
            name = f"{name} ({org.get('name')})" if name and org.get("name") else (name or str(org.get("name") or ""))
            idents = idents + identifiers(org)
            addr = addr or address(org)
        tel = tel or telecom(prac or {}) or telecom(org or {})
    return {"kind": kind, "name": name or f"{kind} (no name given)", "identifiers": idents, "address": addr, "telecom": tel,
            "specialty": specialty}


def _answer_text(answer: dict) -> str:
    for key, value in answer.items():
        if not key.startswith("value"):
            continue
        if key == "valueCoding" and isinstance(value, dict):
            return str(value.get("display") or value.get("code") or "")
        if key == "valueQuantity" and isinstance(value, dict):
            return f"{value.get('value', '')} {value.get('unit') or value.get('code') or ''}".strip()
        if key == "valueBoolean":
            return "Yes" if value else "No"
        if key == "valueAttachment" and isinstance(value, dict):
            return str(value.get("title") or "attachment")
        if key == "valueReference" and isinstance(value, dict):
            return str(value.get("display") or value.get("reference") or "")
        return str(value)
    return ""


def question_texts(questionnaire: Any) -> dict[str, str]:
    """linkId -> question text of the payer's own form the response answers (from the DTR
    templates), so that answers sent without their question text still read as questions."""
    url = str(questionnaire or "").split("|")[0]
    if not url:
        return {}
    try:
        template = next((t for t in get_catalog().templates.values() if t.url == url), None)
    except Exception:  # the templates are optional for the workbench
        return {}
    if template is None:
        return {}
    return {link: str(item.get("text")) for link, item in template.items.items() if isinstance(item, dict) and item.get("text")}


def qr_answers(items: Any, depth: int = 0, out: list | None = None, texts: dict[str, str] | None = None) -> list[dict]:
    """QuestionnaireResponse items, flattened in order: {link_id, text, answers, depth, group}. The
    text is the response's own, else the form's question (``texts``), else the linkId."""
    out = [] if out is None else out
    texts = texts or {}
    for item in as_list(items):
        if not isinstance(item, dict):
            continue
        answers = [a for a in as_list(item.get("answer")) if isinstance(a, dict)]
        link = str(item.get("linkId") or "")
        out.append({"link_id": link, "text": str(item.get("text") or texts.get(link) or link),
                    "answers": [_answer_text(a) for a in answers], "depth": depth, "group": not answers and bool(item.get("item"))})
        if item.get("item"):
            qr_answers(item["item"], depth + 1, out, texts)
        for a in answers:
            if a.get("item"):
                qr_answers(a["item"], depth + 1, out, texts)
    return out


def _rule_items(rule: Any, out: list[str]) -> list[str]:
    if isinstance(rule, dict):
        if isinstance(rule.get("item"), str) and rule["item"] not in out:
            out.append(rule["item"])
        for key in ("all", "any"):
            for sub in as_list(rule.get(key)):
                _rule_items(sub, out)
        if "not" in rule:
            _rule_items(rule["not"], out)
    return out


def criteria_rows(assessment: dict | None, answers: list[dict]) -> list[dict]:
    """The payer's criteria for the form, each with met / not met / unknown and the answers it
    looked at."""
    if not assessment:
        return []
    by_link = {a["link_id"]: a for a in answers}
    rules: dict = {}
    try:
        url = str(assessment.get("questionnaire") or "").split("|")[0]
        template = next((t for t in get_catalog().templates.values() if t.url == url), None)
        if template is not None:
            rules = {c.get("id"): c for c in template.criteria if isinstance(c, dict)}
    except Exception:
        rules = {}
    rows = []
    for d in as_list(assessment.get("details")):
        if not isinstance(d, dict):
            continue
        spec = rules.get(d.get("criterion")) or {}
        looked_at = _rule_items(spec.get("rule"), [])
        evidence = [{"text": by_link[l]["text"], "answers": by_link[l]["answers"]} for l in looked_at if l in by_link]
        rows.append({"id": str(d.get("criterion") or ""), "text": str(d.get("text") or ""), "met": d.get("met"),
                     "applies": d.get("applies", True) is not False,
                     "source": str(d.get("source") or spec.get("source") or ""), "evidence": evidence})
    return rows


def _attachment(att: dict, where: str) -> dict:
    data = att.get("data")
    size = att.get("size")
    if isinstance(data, str) and size is None:
        size = len(data) * 3 // 4
    return {"title": str(att.get("title") or att.get("url") or "attachment"), "content_type": str(att.get("contentType") or ""),
            "size": size if isinstance(size, int) else None, "has_data": isinstance(data, str), "url": str(att.get("url") or ""),
            "where": where, "created": str(att.get("creation") or "")}


def documents(pas: PasBundle) -> list[dict]:
    """Attached documents: Claim.supportingInfo attachments, DocumentReference and Binary entries.
    Each carries an index (its place in this list), used to open it."""
    found: list[tuple[dict, dict]] = []  # (description, attachment dict)
    for si in as_list(pas.claim.get("supportingInfo")):
        if not isinstance(si, dict):
            continue
        label = concept_text(si.get("category")) or "supporting information"
        if isinstance(si.get("valueAttachment"), dict):
            found.append(({"where": f"supportingInfo {si.get('sequence', '')}: {label}"}, si["valueAttachment"]))
    for e in pas.entries:
        if e.type == "DocumentReference":
            desc = str(e.resource.get("description") or concept_text(e.resource.get("type")) or "document")
            for c in as_list(e.resource.get("content")):
                if isinstance(c, dict) and isinstance(c.get("attachment"), dict):
                    found.append(({"where": f"DocumentReference: {desc}"}, c["attachment"]))
        elif e.type == "Binary":
            found.append(({"where": "Binary"}, {"contentType": e.resource.get("contentType"), "data": e.resource.get("data"),
                                                "title": f"Binary {e.resource.get('id') or ''}".strip()}))
    return [dict(_attachment(att, meta["where"]), index=i) for i, (meta, att) in enumerate(found)]


def document_content(pas: PasBundle, index: int) -> tuple[bytes, str, str] | None:
    """(bytes, content type to serve, file name) of attached document ``index``, or None."""
    found = []
    for si in as_list(pas.claim.get("supportingInfo")):
        if isinstance(si, dict) and isinstance(si.get("valueAttachment"), dict):
            found.append(si["valueAttachment"])
    for e in pas.entries:
        if e.type == "DocumentReference":
            found.extend(c["attachment"] for c in as_list(e.resource.get("content")) if isinstance(c, dict) and isinstance(c.get("attachment"), dict))
        elif e.type == "Binary":
            found.append({"contentType": e.resource.get("contentType"), "data": e.resource.get("data")})
    if not 0 <= index < len(found) or not isinstance(found[index].get("data"), str):
        return None
    att = found[index]
    try:
        data = base64.b64decode(att["data"], validate=False)
    except (binascii.Error, ValueError):
        return None
    ctype = str(att.get("contentType") or "").split(";")[0].strip().lower()
    serve = ctype if ctype in SAFE_DOCUMENT_TYPES else "application/octet-stream"
    name = "".join(ch for ch in str(att.get("title") or f"document-{index}") if ch.isalnum() or ch in "._- ")[:80] or f"document-{index}"
    return data, serve, name


def supporting_info(pas: PasBundle) -> list[dict]:
    out = []
    for si in as_list(pas.claim.get("supportingInfo")):
        if not isinstance(si, dict):
            continue
        value = ""
        if si.get("timingPeriod"):
            value = period_text(si["timingPeriod"])
        elif si.get("timingDate"):
            value = str(si["timingDate"])
        for key in ("valueString", "valueBoolean", "valueQuantity"):
            if key in si:
                value = _answer_text({key: si[key]})
        if isinstance(si.get("valueReference"), dict):
            res = pas.resource(si["valueReference"])
            value = f"{res.get('resourceType')} attached" if isinstance(res, dict) else str(si["valueReference"].get("reference") or "")
        if isinstance(si.get("valueAttachment"), dict):
            value = f"document: {si['valueAttachment'].get('title') or 'attachment'}"
        out.append({"sequence": si.get("sequence"), "category": concept_text(si.get("category")), "code": concept_text(si.get("code")),
                    "value": value})
    return out


def _quantity_text(q: Any) -> str:
    q = as_dict(q)
    if "value" not in q:
        return ""
    return f"{q.get('value')} {q.get('unit') or q.get('code') or ''}".strip()


def request_view(case: Case) -> dict:
    """Everything the case page shows about the request itself."""
    try:
        bundle = orjson.loads(case.get("request") or b"{}")
    except orjson.JSONDecodeError:
        bundle = {}
    pas = PasBundle(bundle if isinstance(bundle, dict) else {})
    claim = pas.claim
    patient = pas.resource(claim.get("patient")) or {}
    coverage = None
    for ins in as_list(claim.get("insurance")):
        if isinstance(ins, dict) and (ins.get("focal") is True or coverage is None):
            coverage = pas.resource(ins.get("coverage")) or coverage
    coverage = coverage or {}
    insurer = pas.resource(claim.get("insurer")) or {}
    plan = ", ".join(str(c.get("name") or c.get("value")) for c in as_list(coverage.get("class")) if isinstance(c, dict))
    member = {
        "name": human_name(patient) or "(no name given)",
        "birth_date": str(patient.get("birthDate") or ""),
        "gender": str(patient.get("gender") or ""),
        "identifiers": identifiers(patient),
        "address": address(patient),
    }
    coverage_view = {
        "status": str(coverage.get("status") or ""),
        "subscriber_id": str(coverage.get("subscriberId") or ""),
        "identifiers": identifiers(coverage),
        "plan": plan,
        "period": period_text(coverage.get("period")),
        "relationship": concept_text(coverage.get("relationship")),
        "payer": str(insurer.get("name") or ""),
    }
    decisions = {d.get("sequence"): d for d in as_list(case.get("decisions")) if isinstance(d, dict)}
    diagnoses = []
    for dx in as_list(claim.get("diagnosis")):
        if isinstance(dx, dict):
            for row in code_rows(dx.get("diagnosisCodeableConcept")):
                diagnoses.append(dict(row, sequence=dx.get("sequence"), type=", ".join(concept_text(t) for t in as_list(dx.get("type")))))
    items = []
    for it in as_list(claim.get("item")):
        if not isinstance(it, dict):
            continue
        seq = it.get("sequence")
        d = decisions.get(seq) or {}
        dates = str(it.get("servicedDate") or "") or period_text(it.get("servicedPeriod"))
        items.append({
            "sequence": seq,
            "codes": code_rows(it.get("productOrService")),
            "category": concept_text(it.get("category")),
            "quantity": _quantity_text(it.get("quantity")),
            "requested_quantity": d.get("requested_quantity"),
            "authorized_quantity": d.get("authorized_quantity"),
            "dates": dates,
            "location": ", ".join(f"{r['label']} {r['code']}{' ' + r['name'] if r['name'] else ''}".strip() for r in code_rows(it.get("locationCodeableConcept"))),
            "action": d.get("action"),
            "action_text": ACTIONS.get(d.get("action"), d.get("action") or ""),
            "reason": d.get("reason"),
            "rule": d.get("rule_id"),
            "service_category": d.get("category"),
            "questionnaire": d.get("questionnaire"),
            "auth_period_days": d.get("auth_period_days"),
            "trace": [str(t) for t in as_list(d.get("trace"))],
        })
    forms = []
    responses = questionnaire_responses(pas)
    for d in decisions.values():
        assessment = d.get("assessment") if isinstance(d.get("assessment"), dict) else None
        qr = None
        if d.get("questionnaire"):
            base = str(d["questionnaire"]).split("|")[0]
            qr = next((r for r in responses if isinstance(r.get("questionnaire"), str) and r["questionnaire"].split("|")[0] == base), None)
        if qr is None and assessment is None:
            continue
        answers = qr_answers((qr or {}).get("item"), texts=question_texts(d.get("questionnaire") or (qr or {}).get("questionnaire")))
        forms.append({
            "sequence": d.get("sequence"),
            "questionnaire": str(d.get("questionnaire") or (qr or {}).get("questionnaire") or ""),
            "status": str((qr or {}).get("status") or ""),
            "authored": str((qr or {}).get("authored") or ""),
            "answers": answers,
            "criteria": criteria_rows(assessment, answers),
            "met": (assessment or {}).get("met"),
            "complete": (assessment or {}).get("complete"),
            "missing": [str(m) for m in as_list((assessment or {}).get("missing"))],
            "unmet": [str(m) for m in as_list((assessment or {}).get("unmet"))],
        })
    # Forms attached but not tied to a pended item's questionnaire are still shown.
    shown = {f["questionnaire"].split("|")[0] for f in forms}
    for qr in responses:
        q = str(qr.get("questionnaire") or "")
        if q.split("|")[0] not in shown:
            forms.append({"sequence": None, "questionnaire": q, "status": str(qr.get("status") or ""), "authored": str(qr.get("authored") or ""),
                          "answers": qr_answers(qr.get("item"), texts=question_texts(q)), "criteria": [], "met": None, "complete": None, "missing": [], "unmet": []})
    encounter = None
    for e in pas.entries:
        if e.type == "Encounter":
            encounter = {"period": period_text(e.resource.get("period")), "class": str(as_dict(e.resource.get("class")).get("display") or as_dict(e.resource.get("class")).get("code") or ""),
                         "status": str(e.resource.get("status") or "")}
            break
    return {
        "bundle_identifier": str(as_dict(bundle.get("identifier")).get("value") or "") if isinstance(bundle, dict) else "",
        "created": str(claim.get("created") or ""),
        "claim_type": concept_text(claim.get("type")),
        "priority": concept_text(claim.get("priority")),
        "member": member,
        "coverage": coverage_view,
        "requester": party(pas, claim.get("provider")),
        "care_team": [p for p in (party(pas, ct.get("provider")) for ct in as_list(claim.get("careTeam")) if isinstance(ct, dict)) if p],
        "diagnoses": diagnoses,
        "items": items,
        "forms": forms,
        "documents": documents(pas),
        "supporting_info": supporting_info(pas),
        "encounter": encounter,
    }


def age_on(birth_date: str, today: date) -> int | None:
    """Whole years from a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD) to ``today``; None when unknown."""
    parts = str(birth_date or "").split("-")
    try:
        year = int(parts[0])
        month = int(parts[1]) if len(parts) > 1 else 1
        day = int(parts[2][:2]) if len(parts) > 2 else 1
        born = date(year, month, day)
    except (ValueError, IndexError):
        return None
    if born > today:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def coverage_plan(coverage: dict) -> str:
    """The plan a Coverage names (its ``plan`` class, else any class)."""
    classes = [c for c in as_list(coverage.get("class")) if isinstance(c, dict)]
    plan = [c for c in classes if any(x.get("code") == "plan" for x in codings(c.get("type")))]
    chosen = (plan or classes)[:1]
    return str(chosen[0].get("name") or chosen[0].get("value") or "") if chosen else ""


def queue_facts(case: Case) -> dict:
    """What a queue row shows of the request: member name, birth date and plan, requesting
    provider. Empty strings where the request does not say."""
    try:
        bundle = orjson.loads(case.get("request") or b"{}")
    except orjson.JSONDecodeError:
        bundle = {}
    pas = PasBundle(bundle if isinstance(bundle, dict) else {})
    claim = pas.claim
    patient = pas.resource(claim.get("patient"))
    patient = patient if isinstance(patient, dict) else {}
    coverage: dict = {}
    for ins in as_list(claim.get("insurance")):
        if isinstance(ins, dict) and (ins.get("focal") is True or not coverage):
            found = pas.resource(ins.get("coverage"))
            coverage = found if isinstance(found, dict) else coverage
    provider = party(pas, claim.get("provider")) or {}
    return {"member": human_name(patient), "birth_date": str(patient.get("birthDate") or ""), "plan": coverage_plan(coverage),
            "provider": str(provider.get("name") or ""),
            "member_ids": [i["value"] for i in identifiers(patient)] + [str(coverage.get("subscriberId") or "")]}


def member_name(case: Case) -> str:
    """The member's name (cheap: the Patient entry only)."""
    return queue_facts(case)["member"]
