"""Every FHIR read passes the request's repository: no route, search modifier or include returns
another organization's data, and included resources respect the caller's scopes."""

from __future__ import annotations

import uuid

import orjson
import pytest

from server.fhir.resources import PROVIDERS
from server.fhir.search_params import params_for
from tests.pas_support import claim_response, pas_request, pas_subscription

CLINIC_NPI = "1234567893"
HOSPITAL_NPI = "1245319599"
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def clinic(harness):
    return {**FHIR, **harness.client_headers(CLINIC_NPI)}


@pytest.fixture(scope="module")
def hospital(harness):
    return {**FHIR, **harness.client_headers(HOSPITAL_NPI)}


@pytest.fixture(scope="module")
def clinic_patient_only(harness):
    """The clinic's own EHR, granted only Patient reads."""
    return {**FHIR, **harness.client_headers(CLINIC_NPI, scope="system/Patient.rs")}


def create(http, headers, resource: dict) -> dict:
    resp = http.post(f"/fhir/{resource['resourceType']}", content=orjson.dumps(resource), headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json()


def _claim_response(marker: str, request_ref: str | None = None) -> dict:
    resource = {
        "resourceType": "ClaimResponse", "status": "active", "use": "preauthorization", "outcome": "queued",
        "identifier": [{"system": "urn:test:repository", "value": marker}],
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "patient": {"reference": "Patient/pat-001"}, "created": "2026-01-05",
        "insurer": {"reference": "Organization/precert-demo-payer"},
    }
    if request_ref:
        resource["request"] = {"reference": request_ref}
    return resource


@pytest.fixture(scope="module")
def clinic_data(http, clinic):
    """One resource of every isolated type, owned by the clinic, each referring to shared directory data."""
    marker = f"clinic-{uuid.uuid4().hex[:8]}"
    submitted = http.post("/fhir/Claim/$submit", content=orjson.dumps(pas_request("2.2.1", member="PCM000007")), headers=clinic)
    assert submitted.status_code == 200, submitted.text
    made = {
        "ClaimResponse": create(http, clinic, _claim_response(marker)),
        "QuestionnaireResponse": create(http, clinic, {
            "resourceType": "QuestionnaireResponse", "status": "completed",
            "questionnaire": "http://precert.example.org/fhir/Questionnaire/advanced-imaging|1.0.0",
            "subject": {"reference": "Patient/pat-001"}}),
        "Task": create(http, clinic, {"resourceType": "Task", "status": "requested", "intent": "order",
                                      "for": {"reference": "Patient/pat-001"}}),
        "Subscription": create(http, clinic, pas_subscription("https://127.0.0.1:9/notify", CLINIC_NPI)),
    }
    ids = {r["id"] for r in made.values()}
    ids.add(claim_response(submitted.json())["id"])
    return ids


def _leaks(body: bytes, ids: set[str]) -> set[str]:
    text = body.decode("utf-8", "replace")
    return {i for i in ids if i in text}


def test_revinclude_never_returns_another_organizations_resources(http, hospital, clinic_data):
    resp = http.get("/fhir/Patient", params=[("_id", "pat-001"), ("_revinclude", "ClaimResponse:patient"),
                                             ("_revinclude", "Task:patient"), ("_revinclude", "QuestionnaireResponse:patient")],
                    headers=hospital)
    assert resp.status_code == 200
    assert _leaks(resp.content, clinic_data) == set()


def test_revinclude_returns_the_callers_own_resources(http, clinic, clinic_data):
    resp = http.get("/fhir/Patient", params=[("_id", "pat-001"), ("_revinclude", "ClaimResponse:patient")], headers=clinic)
    assert resp.status_code == 200
    included = {e["resource"]["id"] for e in resp.json().get("entry", []) if e["search"]["mode"] == "include"}
    assert included & clinic_data


def test_a_patient_only_token_gets_no_claim_response_through_revinclude(http, clinic_patient_only, clinic_data):
    resp = http.get("/fhir/Patient", params=[("_id", "pat-001"), ("_revinclude", "ClaimResponse:patient")],
                    headers=clinic_patient_only)
    assert resp.status_code == 200
    types = {e["resource"]["resourceType"] for e in resp.json().get("entry", [])}
    assert types == {"Patient"}


def test_include_never_follows_a_reference_into_another_organization(http, clinic, hospital):
    claim = http.post("/fhir/Claim/$submit", content=orjson.dumps(pas_request("2.2.1", member="PCM000007")), headers=clinic)
    assert claim.status_code == 200, claim.text
    clinic_claim_id = claim.json()["entry"][0]["resource"]["request"]["reference"].rsplit("/", 1)[-1]
    marker = f"hospital-{uuid.uuid4().hex[:8]}"
    create(http, hospital, _claim_response(marker, request_ref=f"Claim/{clinic_claim_id}"))
    resp = http.get("/fhir/ClaimResponse", params={"identifier": f"urn:test:repository|{marker}", "_include": "ClaimResponse:request"},
                    headers=hospital)
    assert resp.status_code == 200
    entries = resp.json().get("entry", [])
    assert [e["search"]["mode"] for e in entries] == ["match"]


def _every_read_route(clinic_ids: set[str]):
    """Each FHIR GET a provider can make: searches of every type with every _include and _revinclude
    that names an isolated type, and reads, vreads and histories of the other organization's ids."""
    for rtype, provider in sorted(PROVIDERS.items()):
        if "search-type" in provider.interactions:
            yield f"/fhir/{rtype}", []
            params = params_for(rtype)
            for pname, p in params.items():
                if p.type == "reference":
                    yield f"/fhir/{rtype}", [("_include", f"{rtype}:{pname}")]
            for src in PROVIDERS:
                for pname, p in params_for(src).items():
                    if p.type == "reference" and (not p.targets or rtype in p.targets):
                        yield f"/fhir/{rtype}", [("_revinclude", f"{src}:{pname}"), ("_count", "50")]
        for rid in sorted(clinic_ids):
            yield f"/fhir/{rtype}/{rid}", []
            yield f"/fhir/{rtype}/{rid}/_history", []
            yield f"/fhir/{rtype}/{rid}/_history/1", []


def test_no_fhir_read_route_returns_another_organizations_data(http, hospital, clinic_data):
    walked = 0
    for path, params in _every_read_route(clinic_data):
        resp = http.get(path, params=params, headers=hospital)
        assert resp.status_code in (200, 401, 403, 404, 405), (path, params, resp.status_code, resp.text[:300])
        if resp.status_code == 200:
            assert _leaks(resp.content, clinic_data) == set(), (path, params)
        else:  # refused, or a 404 that names only the id that was asked for
            assert resp.json()["resourceType"] == "OperationOutcome"
        walked += 1
    assert walked > 100
