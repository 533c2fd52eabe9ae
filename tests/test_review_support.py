"""Helpers for the review workbench, appeals and metrics tests: staff sign-in, pended requests with
DTR answers and documents attached, and direct access to the case store for seeding."""

from __future__ import annotations

import base64
import random
import uuid

import httpx
import pymongo

from questionnaires.catalog import get_catalog, response_items
from tests.pas_support import FHIR, actions, claim_response, pas_request, submit

CATALOG = get_catalog()
PAS_TEMP = "http://hl7.org/fhir/us/davinci-pas/CodeSystem/PASTempCodes"
SURGICAL = "Bundle-SurgicalRequestBundleExample.json"
USERS = {"reviewer": "reviewer-sandbox", "director": "director-sandbox", "admin": "admin-sandbox"}


def npi() -> str:
    return "1" + "".join(random.choice("0123456789") for _ in range(9))


def staff_headers(client, user: str = "reviewer") -> dict:
    """A staff session as a bearer header. Signed in outside ``client``, so the shared client does
    not pick up the session cookie (other tests rely on it staying anonymous)."""
    r = httpx.post(str(client.base_url).rstrip("/") + "/staff/login", json={"username": user, "password": USERS[user]}, timeout=30)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def questionnaire_response(category: str, answers: dict) -> dict:
    t = CATALOG.templates[category]
    return {"resourceType": "QuestionnaireResponse", "id": uuid.uuid4().hex[:12], "questionnaire": t.canonical,
            "status": "completed", "authored": "2026-11-20T10:00:00Z", "item": response_items(t, answers, CATALOG)}


def attach(bundle: dict, qr: dict | None = None, document: tuple[str, str, bytes] | None = None) -> dict:
    """Attach DTR answers and/or a document (title, content type, bytes) through Claim.supportingInfo."""
    claim = bundle["entry"][0]["resource"]
    base = bundle["entry"][1]["fullUrl"].rsplit("/", 2)[0]
    infos = claim.setdefault("supportingInfo", [])
    seq = max([s["sequence"] for s in infos] + [0]) + 1
    if qr is not None:
        full_url = f"{base}/QuestionnaireResponse/{qr['id']}"
        bundle["entry"].append({"fullUrl": full_url, "resource": qr})
        infos.append({"sequence": seq, "category": {"coding": [{"system": PAS_TEMP, "code": "additionalInformation"}]},
                      "valueReference": {"reference": full_url}})
        seq += 1
    if document is not None:
        # PAS sends documents as DocumentReferences the supporting information refers to.
        title, ctype, data = document
        doc_id = f"doc-{seq}"
        full_url = f"{base}/DocumentReference/{doc_id}"
        bundle["entry"].append({"fullUrl": full_url, "resource": {
            "resourceType": "DocumentReference", "id": doc_id, "status": "current",
            "content": [{"attachment": {"contentType": ctype, "data": base64.b64encode(data).decode(), "title": title}}]}})
        infos.append({"sequence": seq, "category": {"coding": [{"system": PAS_TEMP, "code": "additionalInformation"}]},
                      "valueReference": {"reference": full_url}})
    return bundle


def surgery_answers(**changes) -> dict:
    answers = dict(CATALOG.templates["inpatient-surgery"].examples["met"])
    answers.update(procedure="33510", **changes)
    answers["requested-service"] = "33510 Coronary artery bypass"
    return answers


def pended_request(client, org_npi: str | None = None, *, priority: str | None = None, answers: dict | None = None,
                   document: tuple[str, str, bytes] | None = None) -> tuple[dict, str]:
    """Submit a coronary bypass request (the rules reserve it for a clinician): (response, case id)."""
    bundle = pas_request("2.2.1", SURGICAL, provider_npi=org_npi or npi(), priority=priority)
    qr = questionnaire_response("inpatient-surgery", answers if answers is not None else surgery_answers())
    attach(bundle, qr, document)
    r = submit(client, bundle)
    assert r.status_code == 200, r.text
    body = r.json()
    assert actions(body) == {1: "A4"}, actions(body)
    return body, case_number(body)


def case_number(body: dict) -> str:
    ext = next(e for e in claim_response(body)["item"][0]["extension"] if e["url"].endswith("administrationReferenceNumber"))
    return ext["valueString"].rsplit("-", 1)[0]


def cases_collection(mongodb_uri: str, settings):
    """The case store, read and written directly (seeding and back-dating)."""
    return pymongo.MongoClient(mongodb_uri, tz_aware=True)[settings.db_name]["pas_cases"]


_PHYSICIANS: dict[str, dict] = {}


def physician_headers(client) -> dict:
    """A physician reviewer (medical director, MD) of its own, who makes the denials the appeal tests
    start from, so the sandbox director stays free to decide appeals of them."""
    base = str(client.base_url).rstrip("/")
    if base not in _PHYSICIANS:
        admin = staff_headers(client, "admin")
        name, password = f"md-{uuid.uuid4().hex[:8]}", "physician-" + uuid.uuid4().hex
        r = httpx.post(base + "/admin/auth/staff", headers=admin, timeout=30,
                       json={"username": name, "password": password, "roles": ["medical-director"], "display": "Dr Denier", "licence": "MD"})
        assert r.status_code == 201, r.text
        r = httpx.post(base + "/staff/login", json={"username": name, "password": password}, timeout=30)
        _PHYSICIANS[base] = {"Authorization": f"Bearer {r.json()['token']}", "X-Username": name}
    return {"Authorization": _PHYSICIANS[base]["Authorization"]}


def physician_name(client) -> str:
    physician_headers(client)
    return _PHYSICIANS[str(client.base_url).rstrip("/")]["X-Username"]


RATIONALE = "No angiography or stress test documents multivessel disease; criteria for bypass are not shown."


def denied_case(client, headers: dict | None = None, org_npi: str | None = None, **kw) -> tuple[dict, str]:
    """A request denied on clinical grounds by a physician reviewer (``headers``, by default one of
    its own: see :func:`physician_headers`)."""
    body, number = pended_request(client, org_npi, **kw)
    physician = headers if headers is not None and headers.get("X-Physician") else physician_headers(client)
    r = client.post(f"/review/api/cases/{number}/decision", headers={"Authorization": physician["Authorization"]},
                    json={"action": "deny", "reason": {"code": "medical-necessity", "text": "Angiography not provided."},
                          "rationale": RATIONALE, "credentials": "MD, cardiothoracic surgery"})
    assert r.status_code == 200, r.text
    return body, number


__all__ = ["FHIR", "npi", "staff_headers", "pended_request", "denied_case", "physician_headers", "physician_name", "RATIONALE", "case_number", "cases_collection",
           "questionnaire_response", "attach", "surgery_answers"]
