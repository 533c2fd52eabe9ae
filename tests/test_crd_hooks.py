"""Each CRD hook, with prefetch and without (the EHR's FHIR server mocked with respx, and once
Precert's own /fhir as a real FHIR server on loopback)."""

from __future__ import annotations

import copy
import json

import httpx
import pytest
import respx

from tests.support import CRD_FIXTURES
from tests.test_crd_conformance import (
    fresh,
    APPOINTMENT, ENCOUNTER, INFERNO_COVERAGE, call, check_response, collection, coverage_actions, coverage_reps, hook_body, one,
    order_sign, sandbox, searchset, service_request, standard_prefetch, sub,
)

EHR = "https://ehr.example.org/fhir"
AUTH = {"access_token": "ehr-access-token-123", "token_type": "Bearer", "expires_in": 30, "scope": "user/*.read", "subject": "precert"}
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"


@pytest.fixture
def ehr():
    """A mocked EHR FHIR server; requests to the Precert test server pass through."""
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        yield mock


def serve_member(mock, patient="pat-001", coverage="cov-001", practitioner="prac-001"):
    cov = mock.get(f"{EHR}/Coverage", params={"patient": patient, "status": "active"}).respond(json=searchset(sandbox("Coverage", coverage)))
    pat = mock.get(f"{EHR}/Patient/{patient}").respond(json=sandbox("Patient", patient))
    mock.get(url__startswith=f"{EHR}/Practitioner").respond(json=searchset(sandbox("Practitioner", practitioner)))
    mock.get(url__regex=rf"{EHR}/(PractitionerRole|Organization|Location|Device|Medication)\b.*").respond(json=searchset())
    return cov, pat


def member_123() -> dict:
    """The sandbox Coverage as the IG examples' EHR knows it (patient 123)."""
    return sandbox("Coverage", "cov-001") | {"beneficiary": {"reference": "Patient/123"}, "subscriber": {"reference": "Patient/123"}}


def rep_for(response: dict, ref: str) -> dict:
    for a in coverage_actions(response):
        r = a["resource"]
        if f"{r['resourceType']}/{r['id']}" == ref:
            return coverage_reps(r)[0]
    raise AssertionError(f"no coverage information on {ref}")


# ----------------------------------------------------------------------------- order-sign
def test_order_sign_with_prefetch_answers_every_draft_order(client):
    body = order_sign(service_request("sr-mri", "70551"), service_request("sr-visit", "99213"))
    r = call(client, body)
    assert r.status_code == 200
    out = r.json()
    check_response(out, body)
    mri, visit = rep_for(out, "ServiceRequest/sr-mri"), rep_for(out, "ServiceRequest/sr-visit")
    assert (one(mri, "covered"), one(mri, "pa-needed"), sub(mri, "doc-needed")) == ("covered", "auth-needed", ["clinical"])
    assert sub(mri, "questionnaire") == ["http://precert.example.org/fhir/Questionnaire/advanced-imaging|1.0.0"]
    assert (one(visit, "covered"), one(visit, "pa-needed")) == ("covered", "no-auth")
    assert one(mri, "coverage") == {"reference": "Coverage/cov-001"}
    assert one(mri, "coverage-assertion-id") == one(visit, "coverage-assertion-id")


def test_order_sign_updates_change_only_the_coverage_extension(client):
    order = service_request("sr-keep", "70551", extension=[{"url": "http://example.org/other", "valueString": "kept"}], note=[{"text": "n"}])
    out = call(client, order_sign(order)).json()
    updated = coverage_actions(out)[0]["resource"]
    assert {k: v for k, v in updated.items() if k != "extension"} == {k: v for k, v in order.items() if k != "extension"}
    assert updated["extension"][0] == {"url": "http://example.org/other", "valueString": "kept"}


def test_order_sign_without_prefetch_queries_the_ehr_with_its_token(client, ehr):
    cov, pat = serve_member(ehr)
    body = order_sign(service_request("sr-1", "27447", system=HCPCS), prefetch=None, fhirServer=EHR, fhirAuthorization=AUTH)
    r = call(client, body)
    assert r.status_code == 200, r.text
    assert cov.called and pat.called
    assert cov.calls.last.request.headers["Authorization"] == "Bearer ehr-access-token-123"
    rep = rep_for(r.json(), "ServiceRequest/sr-1")
    assert (one(rep, "pa-needed"), sub(rep, "doc-needed")) == ("auth-needed", ["clinical"])


def test_order_sign_without_prefetch_against_a_real_fhir_server(client, server):
    """Precert's own /fhir is the EHR's FHIR server here: the sandbox Coverage is fetched for real."""
    body = order_sign(service_request("sr-loop", "E0431", system=HCPCS, patient="pat-002"), prefetch=None, patient="pat-002",
                      fhirServer=f"{server.url}/fhir")  # the open sandbox needs no token
    r = call(client, body)
    assert r.status_code == 200, r.text
    rep = rep_for(r.json(), "ServiceRequest/sr-loop")
    assert one(rep, "coverage") == {"reference": "Coverage/cov-002"} and one(rep, "pa-needed") == "auth-needed"


def test_the_igs_order_sign_example(client):
    body = json.loads((CRD_FIXTURES / "CRDServiceRequest.json").read_text())
    out = call(client, body).json()
    check_response(out, body, "2.2")
    oxygen = rep_for(out, "ServiceRequest/2468")
    assert (one(oxygen, "pa-needed"), sub(oxygen, "doc-needed")) == ("auth-needed", ["clinical"])
    mammo = rep_for(out, "ServiceRequest/1357")
    assert one(mammo, "pa-needed") == "no-auth"
    assert one(mammo, "billingCode")["code"] in ("77061", "77062", "77065", "77066")
    assert len(out["cards"]) <= 5  # max-cards 5 in the example


def test_the_igs_communication_request_example_needs_the_ehr_for_coverage(client, ehr):
    body = json.loads((CRD_FIXTURES / "CRDServiceRequest3.json").read_text())
    base = body["fhirServer"].rstrip("/")
    ehr.get(f"{base}/Coverage", params={"patient": "123", "status": "active"}).respond(json=searchset(member_123()))
    ehr.get(url__startswith=base).respond(json=searchset())
    r = call(client, body)
    assert r.status_code == 200, r.text
    acts = coverage_actions(r.json())
    assert acts and acts[0]["resource"]["resourceType"] == "CommunicationRequest"


# ----------------------------------------------------------------------------- order-select
def test_order_select_answers_only_the_selections_and_never_asks_for_documents(client):
    orders = [service_request("sel-1", "70551"), service_request("sel-2", "27447", system=HCPCS)]
    body = hook_body("order-select", {"userId": "Practitioner/prac-001", "patientId": "pat-001", "draftOrders": collection(*orders),
                                      "selections": ["ServiceRequest/sel-1"]}, standard_prefetch())
    out = call(client, body).json()
    check_response(out, body)
    acts = coverage_actions(out)
    assert [a["resource"]["id"] for a in acts] == ["sel-1"]
    rep = coverage_reps(acts[0]["resource"])[0]
    assert one(rep, "pa-needed") == "auth-needed" and sub(rep, "doc-needed") == [] and sub(rep, "questionnaire") == []


def test_order_select_without_prefetch(client, ehr):
    serve_member(ehr)
    body = hook_body("order-select", {"userId": "Practitioner/prac-001", "patientId": "pat-001",
                                      "draftOrders": collection(service_request("sel-3", "99213")), "selections": ["ServiceRequest/sel-3"]},
                     fhirServer=EHR, fhirAuthorization=AUTH)
    r = call(client, body)
    assert r.status_code == 200 and one(rep_for(r.json(), "ServiceRequest/sel-3"), "pa-needed") == "no-auth"


# ----------------------------------------------------------------------------- order-dispatch
def test_order_dispatch_with_the_order_in_prefetch(client):
    order = service_request("disp-1", "E0424", system=HCPCS)
    body = hook_body("order-dispatch", {"patientId": "pat-001", "dispatchedOrders": ["ServiceRequest/disp-1"], "performer": "Organization/org-hospital"},
                     {**standard_prefetch(), "serviceRequests": searchset(order)})
    out = call(client, body).json()
    check_response(out, body)
    rep = rep_for(out, "ServiceRequest/disp-1")
    assert one(rep, "pa-needed") == "auth-needed"


def test_order_dispatch_without_prefetch_fetches_the_dispatched_orders(client, ehr):
    serve_member(ehr)
    mr = {"resourceType": "MedicationRequest", "id": "mr-9", "status": "active", "intent": "order", "authoredOn": "2026-01-01",
          "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "191831"}]},
          "subject": {"reference": "Patient/pat-001"}, "requester": {"reference": "Practitioner/prac-001"}}
    route = ehr.get(f"{EHR}/MedicationRequest", params={"_id": "mr-9"}).respond(json=searchset(mr))
    body = hook_body("order-dispatch", {"patientId": "pat-001", "dispatchedOrders": ["MedicationRequest/mr-9"], "performer": "Organization/org-clinic"},
                     fhirServer=EHR, fhirAuthorization=AUTH)
    r = call(client, body)
    assert r.status_code == 200, r.text
    assert route.called
    rep = rep_for(r.json(), "MedicationRequest/mr-9")
    assert one(rep, "pa-needed") == "auth-needed"


def test_the_igs_order_dispatch_example_respects_coverage_info_off(client, ehr):
    body = json.loads((CRD_FIXTURES / "CRDServiceRequest2.json").read_text())
    base = body["fhirServer"].rstrip("/")
    meds = [{"resourceType": "MedicationRequest", "id": i, "status": "active", "intent": "order", "subject": {"reference": "Patient/123"},
             "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "327361"}]}}
            for i in ("1111", "2222")]
    ehr.get(f"{base}/MedicationRequest", params={"_id": "1111,2222"}).respond(json=searchset(*meds))
    ehr.get(url__startswith=base).respond(json=searchset())
    r = call(client, body)
    assert r.status_code == 200, r.text
    assert "systemActions" not in r.json()  # the example turns coverage-info off


# ----------------------------------------------------------------------------- appointment-book
def appointment_body(prefetch=True, **extra):
    appt = copy.deepcopy(APPOINTMENT) | {"id": "apt-1", "basedOn": [{"reference": "ServiceRequest/apt-sr"}],
                                         "participant": [{"actor": {"reference": "Patient/pat-001"}, "status": "accepted"}]}
    sr = service_request("apt-sr", "73721")
    pf = {**standard_prefetch(), "serviceRequests": searchset(sr)} if prefetch else None
    return hook_body("appointment-book", {"userId": "Practitioner/prac-001", "patientId": "pat-001", "appointments": collection(appt)}, pf, **extra)


def test_appointment_book_puts_coverage_on_the_appointment_and_its_service_request(client):
    body = appointment_body()
    out = call(client, body).json()
    check_response(out, body)
    for ref in ("Appointment/apt-1", "ServiceRequest/apt-sr"):
        rep = rep_for(out, ref)
        assert one(rep, "pa-needed") == "auth-needed" and sub(rep, "doc-needed") == ["clinical"]


def test_appointment_book_without_prefetch(client, ehr):
    serve_member(ehr)
    sr = ehr.get(f"{EHR}/ServiceRequest", params={"_id": "apt-sr"}).respond(json=searchset(service_request("apt-sr", "73721")))
    ehr.get(url__regex=rf"{EHR}/(DeviceRequest|MedicationRequest)\b.*").respond(json=searchset())
    r = call(client, appointment_body(prefetch=False, fhirServer=EHR, fhirAuthorization=AUTH))
    assert r.status_code == 200, r.text
    assert sr.called
    assert one(rep_for(r.json(), "Appointment/apt-1"), "pa-needed") == "auth-needed"


def test_the_igs_appointment_example(client, ehr):
    body = json.loads((CRD_FIXTURES / "CRDServiceRequest4.json").read_text())
    base = body["fhirServer"].rstrip("/")
    ehr.get(f"{base}/Coverage", params={"patient": "123", "status": "active"}).respond(json=searchset(member_123()))
    ehr.get(url__startswith=base).respond(json=searchset())
    r = call(client, body)
    assert r.status_code == 200, r.text
    check_response(r.json(), body, "2.2")


# ----------------------------------------------------------------------------- encounter hooks
@pytest.mark.parametrize("hook", ["encounter-start", "encounter-discharge"])
def test_encounter_hooks_with_prefetch(client, hook):
    enc = copy.deepcopy(ENCOUNTER) | {"id": "enc-1", "subject": {"reference": "Patient/pat-001"},
                                      "type": [{"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "70551"}]}]}
    body = hook_body(hook, {"userId": "Practitioner/prac-001", "patientId": "pat-001", "encounterId": "enc-1"},
                     {**standard_prefetch(), "encounter": enc})
    out = call(client, body).json()
    check_response(out, body)
    rep = rep_for(out, "Encounter/enc-1")
    assert one(rep, "pa-needed") == "auth-needed" and sub(rep, "doc-needed") == []  # secondary: no documentation


@pytest.mark.parametrize("hook", ["encounter-start", "encounter-discharge"])
def test_encounter_hooks_without_prefetch(client, ehr, hook):
    """Inferno's shape: only the encounter in prefetch; the Coverage comes from the FHIR server."""
    base = "https://inferno.example.org/reference-server/r4"
    cov = ehr.get(f"{base}/Coverage", params={"patient": "pat015", "status": "active"}).respond(json=searchset(INFERNO_COVERAGE))
    ehr.get(url__startswith=base).respond(500)
    body = hook_body(hook, {"userId": "Practitioner/pra1234", "patientId": "pat015", "encounterId": "pat015-rad-encounter"},
                     {"encounter": copy.deepcopy(ENCOUNTER)}, fhirServer=base, fhirAuthorization={**AUTH, "access_token": "SAMPLE_TOKEN"})
    r = call(client, body)
    assert r.status_code == 200, r.text
    assert cov.calls.last.request.headers["Authorization"] == "Bearer SAMPLE_TOKEN"
    check_response(r.json(), body)
    assert rep_for(r.json(), "Encounter/pat015-rad-encounter")


def test_encounter_fetched_when_not_in_prefetch(client, ehr):
    serve_member(ehr)
    enc = copy.deepcopy(ENCOUNTER) | {"id": "enc-f", "subject": {"reference": "Patient/pat-001"}}
    route = ehr.get(f"{EHR}/Encounter/enc-f").respond(json=enc)
    body = hook_body("encounter-start", {"userId": "Practitioner/prac-001", "patientId": "pat-001", "encounterId": "enc-f"},
                     fhirServer=EHR, fhirAuthorization=AUTH)
    r = call(client, body)
    assert r.status_code == 200, r.text
    assert route.called and rep_for(r.json(), "Encounter/enc-f")


# ----------------------------------------------------------------------------- prefetch semantics
def test_a_null_coverage_prefetch_means_no_coverage_without_a_query(client, ehr):
    route = ehr.get(url__startswith=EHR).respond(500)
    body = order_sign(service_request("sr-null", "99213"), prefetch={"coverage": None, "patient": sandbox("Patient", "pat-001")},
                      fhirServer=EHR, fhirAuthorization=AUTH)
    r = call(client, body)
    assert r.status_code == 200
    assert not any(c.request.url.path.endswith("/Coverage") for c in route.calls)
    assert "systemActions" not in r.json()
    assert "No active" in r.json()["cards"][0]["summary"]


def test_an_operation_outcome_in_prefetch_is_replaced_by_a_query(client, ehr):
    cov, _ = serve_member(ehr)
    oo = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    body = order_sign(service_request("sr-oo", "99213"), prefetch={"coverage": oo}, fhirServer=EHR, fhirAuthorization=AUTH)
    r = call(client, body)
    assert r.status_code == 200 and cov.called
    assert one(rep_for(r.json(), "ServiceRequest/sr-oo"), "coverage") == {"reference": "Coverage/cov-001"}


def test_prefetch_keys_are_recognised_by_content_not_name(client, ehr):
    route = ehr.get(url__startswith=EHR).respond(500)
    body = order_sign(service_request("sr-key", "99213"), prefetch={"myInsurance": searchset(sandbox("Coverage", "cov-001"))},
                      fhirServer=EHR, fhirAuthorization=AUTH)
    r = call(client, body)
    assert r.status_code == 200
    assert not any(c.request.url.path.endswith("/Coverage") for c in route.calls)


def test_slow_or_failing_optional_queries_do_not_fail_the_call(client, ehr):
    ehr.get(f"{EHR}/Coverage", params={"patient": "pat-001", "status": "active"}).respond(json=searchset(sandbox("Coverage", "cov-001")))
    ehr.get(url__startswith=EHR).mock(side_effect=httpx.ConnectTimeout("slow"))
    body = order_sign(service_request("sr-slow", "99213"), prefetch=None, fhirServer=EHR, fhirAuthorization=AUTH)
    r = call(client, body)
    assert r.status_code == 200, r.text


def test_the_call_and_answer_are_kept_for_audit(client):
    body = order_sign(service_request("sr-audit", "70551"))
    out = call(client, body).json()
    assertion = one(rep_for(out, "ServiceRequest/sr-audit"), "coverage-assertion-id")
    found = fresh(client).get("/admin/crd/calls", params={"hookInstance": body["hookInstance"]}).json()["calls"]
    assert len(found) == 1
    rec = found[0]
    assert rec["status"] == 200 and rec["patient"] == "pat-001" and rec["user"] == "Practitioner/prac-001"
    assert rec["request"]["hookInstance"] == body["hookInstance"] and rec["response"] == out
    assert rec["decisions"][0]["rule"] == "advanced-imaging" and rec["decisions"][0]["assertion_id"] == assertion
    by_assertion = fresh(client).get("/admin/crd/calls", params={"assertion": assertion}).json()["calls"]
    assert [c["hook_instance"] for c in by_assertion] == [body["hookInstance"]]


def test_the_assertion_can_be_looked_up_by_pas(server, client):
    import asyncio

    from cds_hooks.routes import find_assertion

    out = call(client, order_sign(service_request("sr-pas", "27447", system=HCPCS))).json()
    assertion = one(rep_for(out, "ServiceRequest/sr-pas"), "coverage-assertion-id")
    storage = server.app.state.precert.storage
    fut = asyncio.run_coroutine_threadsafe(find_assertion(storage, assertion, server.app.state.precert.services["crd"]), server.loop)
    found = fut.result(10)
    assert found["order"] == "ServiceRequest/sr-pas" and found["rule"] == "inpatient-surgery"


def test_an_empty_coverage_search_in_prefetch_means_no_coverage(client, ehr):
    route = ehr.get(url__startswith=EHR).respond(500)
    body = order_sign(service_request("sr-empty", "99213"), prefetch={"coverage": searchset()}, fhirServer=EHR, fhirAuthorization=AUTH)
    r = call(client, body)
    assert r.status_code == 200
    assert not any(c.request.url.path.endswith("/Coverage") for c in route.calls)
    assert "No active" in r.json()["cards"][0]["summary"]
