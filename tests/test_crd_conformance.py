"""What the Inferno CRD server test kit checks, applied to Precert's answers to Inferno-style requests.

The checks mirror davinci-crd-test-kit (server suite, CRD 2.0.1): discovery shape, 200 with JSON for
every call, card required and optional fields, systemActions on primary hooks, coverage-information
on the right resource with one assertion id per Coverage, External Reference and Instructions cards
somewhere across the hooks. Other CRD test modules import the helpers defined here.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from urllib.parse import urlparse

import pytest

from server.sandbox import sandbox_resources

EXT = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
HCPCS_BB = "https://bluebutton.cms.gov/resources/codesystem/hcpcs"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
PRIMARY = {"order-sign", "order-dispatch", "appointment-book"}
CI_TARGETS = {
    "appointment-book": {"Appointment"},
    "order-sign": {"DeviceRequest", "MedicationRequest", "NutritionOrder", "ServiceRequest", "VisionPrescription"},
    "order-select": {"DeviceRequest", "MedicationRequest", "NutritionOrder", "ServiceRequest", "VisionPrescription"},
    "order-dispatch": {"DeviceRequest", "MedicationRequest", "NutritionOrder", "ServiceRequest", "VisionPrescription"},
    "encounter-start": {"Encounter"},
    "encounter-discharge": {"Encounter"},
}


def sandbox(rtype: str, rid: str) -> dict:
    return copy.deepcopy(next(r for r in sandbox_resources() if r["resourceType"] == rtype and r["id"] == rid))


def searchset(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"https://ehr.example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                      for r in resources]}


def collection(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"https://ehr.example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r} for r in resources]}


def service_request(rid: str, code: str, system: str = "http://www.ama-assn.org/go/cpt", patient: str = "pat-001",
                    requester: str = "Practitioner/prac-001", **extra) -> dict:
    return {"resourceType": "ServiceRequest", "id": rid, "status": "draft", "intent": "order",
            "code": {"coding": [{"system": system, "code": code}]}, "subject": {"reference": f"Patient/{patient}"},
            "authoredOn": "2026-01-15", "requester": {"reference": requester}, **extra}


def hook_body(hook: str, context: dict, prefetch: dict | None = None, **extra) -> dict:
    body = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(extra)
    return body


def standard_prefetch(patient: str = "pat-001", coverage: str = "cov-001", practitioner: str = "prac-001") -> dict:
    return {"patient": sandbox("Patient", patient), "coverage": searchset(sandbox("Coverage", coverage)),
            "practitioners": searchset(sandbox("Practitioner", practitioner))}


def order_sign(*orders: dict, prefetch: dict | None = "standard", patient: str = "pat-001", **extra) -> dict:
    pf = standard_prefetch(patient) if prefetch == "standard" else prefetch
    return hook_body("order-sign", {"userId": "Practitioner/prac-001", "patientId": patient, "draftOrders": collection(*orders)}, pf, **extra)


def coverage_reps(resource: dict) -> list[dict]:
    return [e for e in resource.get("extension") or [] if e.get("url") == EXT]


def sub(rep: dict, url: str) -> list:
    out = []
    for e in rep["extension"]:
        if e["url"] == url:
            out.append(next(v for k, v in e.items() if k.startswith("value")) if url != "detail" else e)
    return out


def one(rep: dict, url: str):
    values = sub(rep, url)
    return values[0] if values else None


def coverage_actions(response: dict) -> list[dict]:
    return [a for a in response.get("systemActions") or [] if a.get("type") == "update" and coverage_reps(a.get("resource") or {})]


def card_kind(card: dict) -> str:
    if card.get("links"):
        return "external-reference" if all(l["type"] == "absolute" for l in card["links"]) else "smart"
    if not card.get("suggestions"):
        return "instructions"
    actions = [a for s in card["suggestions"] for a in s["actions"]]
    if any(a["type"] == "create" and (a.get("resource") or {}).get("resourceType") == "Task" for a in actions):
        return "form-completion"
    if any((a.get("resource") or {}).get("resourceType") == "Coverage" for a in actions):
        return "coverage-update"
    return "alternate-request"


# ----------------------------------------------------------------------------- the Inferno checks
def check_coverage_rep(rep: dict, version: str, secondary: bool) -> None:
    urls = [e["url"] for e in rep["extension"]]
    for required in ("coverage", "covered", "date", "coverage-assertion-id"):
        assert urls.count(required) == 1, (required, rep)
    covered, pa = one(rep, "covered"), one(rep, "pa-needed")
    docs, info, purposes = sub(rep, "doc-needed"), sub(rep, "info-needed"), sub(rep, "doc-purpose")
    allowed_covered = {"covered", "not-covered", "conditional"} | ({"indeterminate"} if version == "2.2" else set())
    assert covered in allowed_covered
    if version == "2.0":
        assert len(docs) <= 1 and set(docs) <= {"clinical", "admin", "both", "conditional"}
        assert not any(e["url"] == "expiry-date" for e in rep["extension"])
        assert all("category" not in [x["url"] for x in d["extension"]] for d in sub(rep, "detail"))
        assert all("valueContactPoint" in e for e in rep["extension"] if e["url"] == "contact")
        if covered != "not-covered":
            assert pa is not None                                           # 2.0.1 crd-ci-q2
        if info:
            assert "conditional" in (covered, pa) or "conditional" in docs  # 2.0.1 crd-ci-q3
    else:
        assert all("valueContactDetail" in e for e in rep["extension"] if e["url"] == "contact")
        assert all(any(x["url"] == "category" for x in d["extension"]) for d in sub(rep, "detail"))
        if covered == "not-covered":
            assert pa is None                                               # 2.2 crd-ci-q2
        if "conditional" in (covered, pa) or "conditional" in docs:
            assert info                                                     # 2.2 crd-ci-q3
        if "OTH" in info or purposes or "indeterminate" in (covered, pa) or "indeterminate" in docs:
            assert one(rep, "reason")                                       # q6, q8, q9
    if sub(rep, "questionnaire"):
        assert docs                                                         # crd-ci-q1
    if pa in ("satisfied", "no-auth"):
        assert "withpa" not in purposes                                     # crd-ci-q4
    assert (one(rep, "satisfied-pa-id") is not None) == (pa == "satisfied")  # crd-ci-q5
    if secondary:
        assert not set(docs) & {"clinical", "admin", "both"}                # hook-19


def check_card(card: dict) -> None:
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140
    assert card["indicator"] in ("info", "warning", "critical")
    assert isinstance(card["source"]["label"], str) and card["source"]["label"]
    assert card["source"]["topic"]["system"] and card["source"]["topic"]["code"]
    assert UUID_RE.match(card["uuid"])
    if "detail" in card:
        assert isinstance(card["detail"], str) and card["detail"]
    for link in card.get("links") or []:
        assert link["label"] and link["type"] in ("absolute", "smart")
        u = urlparse(link["url"])
        assert u.scheme in ("http", "https") and u.netloc
        assert "appContext" not in link
    if card.get("suggestions"):
        assert card["selectionBehavior"] in ("at-most-one", "any")
        for s in card["suggestions"]:
            assert s["label"] and UUID_RE.match(s["uuid"]) and s["actions"]
            for a in s["actions"]:
                check_action(a)
    kind = card_kind(card)
    if kind == "instructions":
        assert card["detail"]


def check_action(action: dict) -> None:
    assert action["type"] in ("create", "update", "delete")
    assert isinstance(action["description"], str) and action["description"]
    if action["type"] in ("create", "update"):
        assert isinstance(action["resource"].get("resourceType"), str)
    else:
        assert re.match(r"^[A-Za-z]+/[^/]+$", action["resourceId"])


def check_response(response: dict, request: dict, version: str = "2.0") -> None:
    """Inferno's service_response_validation + card/system action checks for one 200 answer."""
    hook = request["hook"]
    assert isinstance(response["cards"], list)
    for card in response["cards"]:
        check_card(card)
    for action in response.get("systemActions") or []:
        check_action(action)
    config = (request.get("extension") or {}).get("davinci-crd.configuration") or {}
    actions = coverage_actions(response)
    if hook in PRIMARY and config.get("coverage-info", True):
        assert response.get("systemActions"), "primary hooks must return systemActions"
        assert any(a["resource"]["resourceType"] in CI_TARGETS[hook] for a in actions)
    by_coverage: dict[str, set] = {}
    satisfied: dict[str, set] = {}
    for a in actions:
        assert a["type"] == "update" and "resourceId" not in a
        for rep in coverage_reps(a["resource"]):
            check_coverage_rep(rep, version, hook not in PRIMARY)
            ref = one(rep, "coverage")["reference"]
            by_coverage.setdefault(ref, set()).add(one(rep, "coverage-assertion-id"))
            if one(rep, "satisfied-pa-id"):
                satisfied.setdefault(ref, set()).add(one(rep, "satisfied-pa-id"))
    for ref, ids in by_coverage.items():
        assert len(ids) == 1, f"one coverage-assertion-id per Coverage ({ref})"
        assert len(satisfied.get(ref, ())) <= 1
    all_ids = [next(iter(ids)) for ids in by_coverage.values()]
    assert len(all_ids) == len(set(all_ids)), "distinct Coverages have distinct assertion ids"
    # Alternate requests update draft orders only.
    drafts = {f"{e['resource']['resourceType']}/{e['resource'].get('id')}" for e in (request["context"].get("draftOrders") or {}).get("entry", [])}
    for card in response["cards"]:
        if card_kind(card) == "alternate-request":
            for s in card["suggestions"]:
                for a in s["actions"]:
                    if a["type"] == "update":
                        assert f"{a['resource']['resourceType']}/{a['resource']['id']}" in drafts
        if card_kind(card) == "form-completion":
            task = card["suggestions"][0]["actions"][0]["resource"]
            assert task["code"]["coding"][0]["code"] == "complete-questionnaire" and task["for"]
            q = [i for i in task["input"] if i["type"].get("text") == "questionnaire"]
            assert q and q[0]["valueCanonical"].startswith(("http://", "https://"))
            if version == "2.0":
                assert any(i["type"]["coding"][0]["code"] == "after-completion-action" for i in task["input"])


# ----------------------------------------------------------------------------- Inferno-style bodies
INFERNO_COVERAGE = {"resourceType": "Coverage", "id": "cov015", "status": "active", "subscriberId": "10A3D58WH456",
                    "beneficiary": {"reference": "Patient/pat015"}, "payor": [{"reference": "Organization/org1234"}],
                    "class": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan"}]},
                               "value": "Medicare Part A"}]}
INFERNO_PATIENT = {"resourceType": "Patient", "id": "pat015", "gender": "male", "birthDate": "1943-01-01"}
FHIR_AUTH = {"access_token": "SAMPLE_TOKEN", "token_type": "Bearer", "expires_in": 300, "scope": "user/Patient.read", "subject": "cds-service"}
G0180 = {"resourceType": "ServiceRequest", "id": "servreq-g0180-1", "status": "draft", "intent": "order",
         "code": {"coding": [{"system": HCPCS_BB, "code": "G0180", "display": "Physician certification home health patient"}]},
         "subject": {"reference": "Patient/pat015"}, "authoredOn": "2026-01-10", "requester": {"display": "Dr. Jane Doe"},
         "insurance": [{"reference": "Coverage/cov015"}]}
E0250 = {"resourceType": "DeviceRequest", "id": "devreq-015-e0250", "status": "draft", "intent": "original-order",
         "codeCodeableConcept": {"coding": [{"system": HCPCS_BB, "code": "E0250", "display": "Hospital bed fixed height"}]},
         "subject": {"reference": "Patient/pat015"}, "authoredOn": "2026-01-10", "requester": {"reference": "Practitioner/pra1234"},
         "performer": {"reference": "Practitioner/pra1234"}, "insurance": [{"reference": "Coverage/cov015"}]}
AZATHIOPRINE = {"resourceType": "MedicationRequest", "id": "pat015-mr-azathioprine", "status": "draft", "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "105611"}]},
                "subject": {"reference": "Patient/pat015"}, "authoredOn": "2026-01-10", "requester": {"reference": "Practitioner/pra1234"}}
ENCOUNTER = {"resourceType": "Encounter", "id": "pat015-rad-encounter", "status": "planned",
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
             "subject": {"reference": "Patient/pat015"}}
APPOINTMENT = {"resourceType": "Appointment", "id": "apt015", "status": "proposed", "start": "2026-02-01T09:00:00Z",
               "end": "2026-02-01T09:30:00Z", "requestedPeriod": [{"start": "2026-02-01T09:00:00Z", "end": "2026-02-01T09:30:00Z"}],
               "basedOn": [{"reference": "ServiceRequest/servreq-g0180-1"}],
               "participant": [{"actor": {"reference": "Patient/pat015"}, "status": "accepted"}]}


def inferno_bodies() -> list[dict]:
    cov = searchset(INFERNO_COVERAGE)
    common = {"fhirServer": "https://inferno.example.org/reference-server/r4", "fhirAuthorization": FHIR_AUTH}
    no_full = lambda *rs: {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in rs]}  # noqa: E731
    return [
        hook_body("order-sign", {"userId": "Practitioner/pra1234", "patientId": "pat015", "encounterId": "pat015-rad-encounter",
                                 "draftOrders": no_full(copy.deepcopy(E0250))},
                  {"patient": INFERNO_PATIENT, "coverage": cov, "user": {"resourceType": "Practitioner", "id": "pra1234"}},
                  extension={"davinci-crd.configuration": {"alt-drug": True}}, **common),
        hook_body("order-sign", {"userId": "Practitioner/pra1234", "patientId": "pat015", "draftOrders": no_full(copy.deepcopy(G0180))},
                  {"patient": INFERNO_PATIENT, "coverage": cov},
                  extension={"davinci-crd.configuration": {"alt-drug": True, "coverage": True, "dtr-clin": True, "max-cards": 10}}, **common),
        hook_body("order-select", {"userId": "Practitioner/pra1234", "patientId": "pat015", "draftOrders": no_full(copy.deepcopy(AZATHIOPRINE)),
                                   "selections": ["MedicationRequest/pat015-mr-azathioprine"]}, {"coverage": cov}, **common),
        hook_body("order-dispatch", {"patientId": "pat015", "order": "DeviceRequest/devreq-015-e0250", "performer": "Practitioner/pra1234"},
                  {"coverage": cov, "order": copy.deepcopy(E0250), "patient": INFERNO_PATIENT}, **common),
        hook_body("appointment-book", {"userId": "Practitioner/pra1234", "patientId": "pat015", "encounterId": "pat015-rad-encounter",
                                       "appointments": no_full(copy.deepcopy(APPOINTMENT))},
                  {"patient": INFERNO_PATIENT, "coverage": cov}, extension={"davinci-crd.configuration": {"coverage": True, "max-cards": 10}}, **common),
        hook_body("encounter-start", {"userId": "Practitioner/pra1234", "patientId": "pat015", "encounterId": "pat015-rad-encounter"},
                  {"encounter": copy.deepcopy(ENCOUNTER), "coverage": cov}, **common),
        hook_body("encounter-discharge", {"userId": "Practitioner/pra1234", "patientId": "pat015", "encounterId": "pat015-rad-encounter"},
                  {"encounter": copy.deepcopy(ENCOUNTER), "coverage": cov}, **common),
    ]


def call(client, body: dict, service: str | None = None, **kw):
    return client.post(f"/cds-services/{service or body['hook'] + '-crd'}", json=body, **kw)


def test_discovery_passes_inferno_checks(client):
    r = client.get("/cds-services", headers={"Accept": "application/json"})
    assert r.status_code == 200
    services = r.json()["services"]
    assert isinstance(services, list) and services
    for s in services:
        assert all(isinstance(s[k], str) and s[k] for k in ("hook", "description", "id"))


def test_every_inferno_style_request_is_answered_conformantly(client):
    kinds = set()
    for body in inferno_bodies():
        r = call(client, body)
        assert r.status_code == 200, (body["hook"], r.text)
        check_response(r.json(), body, "2.0")
        kinds |= {card_kind(c) for c in r.json()["cards"]}
    # Inferno's required cross-hook group: an External Reference card and an Instructions card somewhere.
    assert {"external-reference", "instructions"} <= kinds


def test_coverage_information_goes_on_the_resource_inferno_expects(client):
    for body in inferno_bodies():
        r = call(client, body).json()
        targets = {a["resource"]["resourceType"] for a in coverage_actions(r)}
        assert targets & CI_TARGETS[body["hook"]], body["hook"]


@pytest.mark.parametrize("name", ["CRDServiceRequest.json"])
def test_the_ig_order_sign_example_is_answered_in_crd_2_2(client, name):
    from tests.support import CRD_FIXTURES

    body = json.loads((CRD_FIXTURES / name).read_text())
    r = call(client, body)
    assert r.status_code == 200
    check_response(r.json(), body, "2.2")
    assert all(c["source"]["topic"]["system"] == "http://terminology.hl7.org/CodeSystem/cdshooks-card-type" for c in r.json()["cards"])


def fresh(client):
    """A client without the shared client's cookies (other tests sign staff in on it)."""
    import httpx

    return httpx.Client(base_url=str(client.base_url), timeout=30)
