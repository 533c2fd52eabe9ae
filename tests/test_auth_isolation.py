"""Organization isolation: each provider organization sees only its own prior-authorization data,
and another organization's resources are indistinguishable from ones that do not exist."""

from __future__ import annotations

import orjson
import pytest

from server.auth.testing import staff_login
from tests.pas_support import claim_response, pas_request, pas_subscription

CLINIC_NPI = "1234567893"
HOSPITAL_NPI = "1245319599"
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def clinic(harness):
    return {**FHIR, **harness.client_headers(CLINIC_NPI)}


@pytest.fixture(scope="module")
def clinic_again(harness):
    """A second client of the same organization (another EHR at the clinic)."""
    return {**FHIR, **harness.client_headers(CLINIC_NPI)}


@pytest.fixture(scope="module")
def hospital(harness):
    return {**FHIR, **harness.client_headers(HOSPITAL_NPI)}


def claim() -> dict:
    return {
        "resourceType": "Claim", "status": "active", "use": "preauthorization",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "patient": {"reference": "Patient/pat-001"}, "created": "2026-01-05",
        "provider": {"reference": "Organization/org-clinic"},
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/cov-001"}}],
        "identifier": [{"system": "urn:test:isolation", "value": "claim-1"}],
    }


OTHER_TYPES = {
    "Subscription": pas_subscription("https://127.0.0.1:9/notify", CLINIC_NPI),
    "QuestionnaireResponse": {"resourceType": "QuestionnaireResponse", "status": "completed",
                              "questionnaire": "http://precert.example.org/fhir/Questionnaire/advanced-imaging|1.0.0",
                              "subject": {"reference": "Patient/pat-001"}},
    "Task": {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": "Patient/pat-001"}},
    "ClaimResponse": {"resourceType": "ClaimResponse", "status": "active", "use": "preauthorization", "outcome": "queued",
                      "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
                      "patient": {"reference": "Patient/pat-001"}, "created": "2026-01-05",
                      "insurer": {"reference": "Organization/precert-demo-payer"}},
}


def create(http, headers, resource: dict) -> dict:
    resp = http.post(f"/fhir/{resource['resourceType']}", content=orjson.dumps(resource), headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_an_organization_reads_and_searches_its_own_claims(http, clinic, clinic_again):
    mine = create(http, clinic, claim())
    assert http.get(f"/fhir/Claim/{mine['id']}", headers=clinic).status_code == 200
    assert http.get(f"/fhir/Claim/{mine['id']}", headers=clinic_again).status_code == 200  # same organization
    found = http.get("/fhir/Claim", params={"_id": mine["id"]}, headers=clinic).json()
    assert found["total"] == 1


def test_another_organizations_claim_is_not_found(http, clinic, hospital):
    theirs = create(http, clinic, claim())
    rid = theirs["id"]
    foreign = http.get(f"/fhir/Claim/{rid}", headers=hospital)
    missing = http.get("/fhir/Claim/does-not-exist-at-all", headers=hospital)
    assert foreign.status_code == missing.status_code == 404
    # The same answer, except for the id it names: no leak through the message.
    assert foreign.json()["issue"][0]["diagnostics"].replace(rid, "X") == missing.json()["issue"][0]["diagnostics"].replace("does-not-exist-at-all", "X")
    assert http.get(f"/fhir/Claim/{rid}/_history", headers=hospital).status_code == 404
    assert http.get(f"/fhir/Claim/{rid}/_history/1", headers=hospital).status_code == 404


def test_another_organizations_claim_cannot_be_changed_or_deleted(http, clinic, hospital):
    theirs = create(http, clinic, claim())
    rid = theirs["id"]
    changed = {**theirs, "status": "cancelled"}
    assert http.put(f"/fhir/Claim/{rid}", content=orjson.dumps(changed), headers=hospital).status_code == 404
    assert http.delete(f"/fhir/Claim/{rid}", headers=hospital).status_code == 404
    still = http.get(f"/fhir/Claim/{rid}", headers=clinic)
    assert still.status_code == 200 and still.json()["status"] == "active"


def test_searches_return_only_the_callers_organization(http, clinic, hospital):
    marker = {"system": "urn:test:isolation-search", "value": "shared-marker"}
    a = create(http, clinic, {**claim(), "identifier": [marker]})
    b = create(http, hospital, {**claim(), "identifier": [marker]})
    params = {"identifier": f"{marker['system']}|{marker['value']}"}
    clinic_ids = {e["resource"]["id"] for e in http.get("/fhir/Claim", params=params, headers=clinic).json().get("entry", [])}
    hospital_ids = {e["resource"]["id"] for e in http.get("/fhir/Claim", params=params, headers=hospital).json().get("entry", [])}
    assert clinic_ids == {a["id"]} and hospital_ids == {b["id"]}
    assert http.get("/fhir/Claim", params={"_id": a["id"]}, headers=hospital).json()["total"] == 0
    posted = http.post("/fhir/Claim/_search", data={"_id": a["id"]}, headers={k: v for k, v in hospital.items() if k != "Content-Type"})
    assert posted.status_code == 200 and posted.json()["total"] == 0
    summary = http.get("/fhir/Claim", params={**params, "_summary": "count"}, headers=hospital).json()
    assert summary["total"] == 1


def test_conditional_create_does_not_see_other_organizations(http, clinic, hospital):
    ident = {"system": "urn:test:isolation-conditional", "value": "c-1"}
    a = create(http, clinic, {**claim(), "identifier": [ident]})
    resp = http.post("/fhir/Claim", content=orjson.dumps({**claim(), "identifier": [ident]}),
                     headers={**hospital, "If-None-Exist": f"identifier={ident['system']}|{ident['value']}"})
    assert resp.status_code == 201 and resp.json()["id"] != a["id"]


@pytest.mark.parametrize("rtype", sorted(OTHER_TYPES))
def test_every_isolated_type_is_isolated(http, clinic, hospital, rtype):
    mine = create(http, clinic, OTHER_TYPES[rtype])
    assert http.get(f"/fhir/{rtype}/{mine['id']}", headers=clinic).status_code == 200
    assert http.get(f"/fhir/{rtype}/{mine['id']}", headers=hospital).status_code == 404
    assert http.get(f"/fhir/{rtype}", params={"_id": mine["id"]}, headers=hospital).json()["total"] == 0
    assert http.get(f"/fhir/{rtype}", params={"_id": mine["id"]}, headers=clinic).json()["total"] == 1


def test_shared_directory_data_is_visible_to_everyone(http, clinic, hospital):
    for headers in (clinic, hospital):
        assert http.get("/fhir/Patient/pat-001", headers=headers).status_code == 200
        assert http.get("/fhir/Coverage/cov-001", headers=headers).status_code == 200


def test_payer_staff_see_every_organization(http, srv, clinic):
    mine = create(http, clinic, claim())
    staff = {"Authorization": f"Bearer {staff_login(http, srv.url, 'reviewer', 'reviewer-sandbox')}"}
    assert http.get(f"/fhir/Claim/{mine['id']}", headers=staff).status_code == 200


def test_resources_are_owned_by_the_clients_organization(srv, http, clinic):
    import asyncio

    mine = create(http, clinic, claim())
    state = srv.app.state.precert
    server_loop = state.services["auth"].audit._task.get_loop()  # the storage client lives on the server's loop
    stored = asyncio.run_coroutine_threadsafe(state.storage.read("Claim", mine["id"]), server_loop).result(10)
    assert stored.owner == f"http://hl7.org/fhir/sid/us-npi|{CLINIC_NPI}"


def test_inquiries_find_only_the_callers_organization(http, clinic, hospital):
    from tests.test_pas_inquire_update import inquiry_for, returned

    request = pas_request("2.2.1", member="PCM000007")
    decided = http.post("/fhir/Claim/$submit", content=orjson.dumps(request), headers=clinic)
    assert decided.status_code == 200, decided.text
    decided_id = claim_response(decided.json())["id"]
    inquiry = inquiry_for(request)
    own = http.post("/fhir/Claim/$inquire", content=orjson.dumps(inquiry), headers=clinic)
    assert own.status_code == 200
    assert decided_id in [b["entry"][0]["resource"]["id"] for b in returned(own.json())]
    other = http.post("/fhir/Claim/$inquire", content=orjson.dumps(inquiry), headers=hospital)
    assert other.status_code == 200
    assert decided_id not in [b["entry"][0]["resource"]["id"] for b in returned(other.json())]
    # Nor can the other organization read the response or the claim directly.
    assert http.get(f"/fhir/ClaimResponse/{decided_id}", headers=hospital).status_code == 404
    assert http.get(f"/fhir/ClaimResponse/{decided_id}", headers=clinic).status_code == 200


def test_another_organizations_subscription_status_is_not_found(http, clinic, hospital):
    sub = create(http, clinic, pas_subscription("https://127.0.0.1:9/notify", CLINIC_NPI))
    assert http.get(f"/fhir/Subscription/{sub['id']}/$status", headers=hospital).status_code == 404
    assert http.get(f"/fhir/Subscription/{sub['id']}/$status", headers=clinic).status_code == 200
