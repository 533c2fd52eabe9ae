"""CDS Hooks requests whose context resources or prefetch are not valid FHIR R4 are refused with 400.

The answer is an OperationOutcome listing every problem, each located from the request's root
(``context.draftOrders.entry[0].resource.status``), so that the EHR can see what it sent wrong.
"""

from __future__ import annotations

import copy

from tests.test_crd_conformance import APPOINTMENT, call, collection, hook_body, order_sign, service_request, standard_prefetch

GOOD = order_sign(service_request("inb-1", "70551"))


def problems(r) -> list[str]:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert all(i["severity"] == "error" for i in body["issue"])
    return [f"{i['expression'][0]} {i['diagnostics']}" for i in body["issue"]]


def draft_order(body: dict) -> dict:
    return body["context"]["draftOrders"]["entry"][0]["resource"]


def test_a_valid_request_is_still_answered(client):
    assert call(client, GOOD).status_code == 200


def test_an_invalid_code_value_in_a_draft_order_is_400_naming_the_element(client):
    body = copy.deepcopy(GOOD)
    draft_order(body)["status"] = "signed"  # not in the required request-status value set
    found = problems(call(client, body))
    assert any(p.startswith("context.draftOrders.entry[0].resource.status ") and "[binding]" in p for p in found)


def test_a_draft_order_missing_a_required_element_is_400(client):
    body = copy.deepcopy(GOOD)
    del draft_order(body)["intent"]
    found = problems(call(client, body))
    assert any(p.startswith("context.draftOrders.entry[0].resource.intent ") and "[cardinality]" in p for p in found)


def test_a_draft_order_with_an_unknown_element_is_400(client):
    body = copy.deepcopy(GOOD)
    draft_order(body)["urgent"] = True
    assert any("context.draftOrders.entry[0].resource.urgent" in p for p in problems(call(client, body)))


def test_every_problem_is_listed_not_only_the_first(client):
    body = copy.deepcopy(GOOD)
    order = draft_order(body)
    order["status"] = "signed"
    order["authoredOn"] = "15 January 2026"
    body["prefetch"]["patient"]["birthDate"] = "yesterday"
    found = problems(call(client, body))
    assert any(p.startswith("context.draftOrders.entry[0].resource.status ") for p in found)
    assert any(p.startswith("context.draftOrders.entry[0].resource.authoredOn ") for p in found)
    assert any(p.startswith("prefetch.patient.birthDate ") for p in found)


def test_an_invalid_uri_in_a_draft_order_coding_is_400(client):
    body = copy.deepcopy(GOOD)
    draft_order(body)["code"]["coding"][0]["system"] = "not a uri <script>"
    assert any(p.startswith("context.draftOrders.entry[0].resource.code.coding[0].system ") for p in problems(call(client, body)))


def test_an_invalid_resource_inside_a_prefetch_search_bundle_is_400(client):
    body = copy.deepcopy(GOOD)
    body["prefetch"]["coverage"]["entry"][0]["resource"]["status"] = "current"
    assert any(p.startswith("prefetch.coverage.entry[0].resource.status ") for p in problems(call(client, body)))


def test_a_prefetch_of_an_unknown_resource_type_is_400(client):
    body = copy.deepcopy(GOOD)
    body["prefetch"]["patient"] = {"resourceType": "Patiënt", "id": "pat-001"}
    assert any(p.startswith("prefetch.patient ") for p in problems(call(client, body)))


def test_a_wrongly_typed_value_is_400_not_a_server_error(client):
    body = copy.deepcopy(GOOD)
    draft_order(body)["code"]["coding"] = 7
    draft_order(body)["subject"] = ["Patient/pat-001"]
    found = problems(call(client, body))
    assert any("context.draftOrders.entry[0].resource.code.coding" in p for p in found)
    assert any("context.draftOrders.entry[0].resource.subject" in p for p in found)


def test_an_invalid_appointment_in_appointment_book_is_400(client):
    appt = copy.deepcopy(APPOINTMENT)
    appt["start"] = "tomorrow morning"
    body = hook_body("appointment-book", {"userId": "Practitioner/prac-001", "patientId": "pat-001", "appointments": collection(appt)},
                     standard_prefetch())
    assert any(p.startswith("context.appointments.entry[0].resource.start ") for p in problems(call(client, body)))


def test_a_draft_order_that_does_not_meet_the_profile_it_claims_is_400(client):
    body = copy.deepcopy(GOOD)
    draft_order(body)["meta"] = {"profile": ["http://hl7.org/fhir/us/davinci-crd/StructureDefinition/profile-servicerequest"]}
    draft_order(body).pop("requester")
    assert any(p.startswith("context.draftOrders.entry[0].resource.requester ") for p in problems(call(client, body)))


def test_a_claimed_profile_no_shipped_package_defines_does_not_block_the_answer(client):
    body = copy.deepcopy(GOOD)
    draft_order(body)["meta"] = {"profile": ["http://example.org/fhir/StructureDefinition/local-order"]}
    assert call(client, body).status_code == 200
