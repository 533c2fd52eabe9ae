"""PAS must-support elements, filled whenever Precert has the data, on the outcome that carries
them (2.2.1 unless the test says otherwise)."""

from __future__ import annotations

import copy

import pytest
from fhir.resources.R4B.bundle import Bundle

from tests.pas_support import CPT, HCPCS, claim_response, entry, pas_request, submit
from tests.test_pas_dtr import examples, questionnaire_response, with_answers
from tests.test_pas_inquire_update import changed, update_of
from tests.test_validator_responses import conformance_errors

SD = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
PASTEMP = "http://hl7.org/fhir/us/davinci-pas/CodeSystem/PASTempCodes"


def ext(element: dict, name: str) -> list[dict]:
    return [e for e in element.get("extension", []) if e["url"] == SD + name]


def resources(bundle: dict) -> dict[str, dict]:
    return {e["fullUrl"]: e["resource"] for e in bundle["entry"]}


def pended_for_documentation(client, version: str = "2.2.1") -> dict:
    body = submit(client, pas_request(version, code=(CPT, "70551"), member="PCM000003")).json()
    Bundle.model_validate(body)
    return body


def modified(client) -> dict:
    qr = questionnaire_response("specialty-drugs", examples("specialty-drugs")["met"])
    request = with_answers(pas_request("2.2.1", code=(HCPCS, "J1745"), quantity=20), qr)
    item = entry(request, "Claim")["item"][0]
    item["modifier"] = [{"coding": [{"system": CPT, "code": "59"}]}]
    item["unitPrice"] = {"value": 125.5, "currency": "USD"}
    item["locationCodeableConcept"] = {"coding": [{"system": "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set", "code": "11"}]}
    body = submit(client, request).json()
    Bundle.model_validate(body)
    return body


def test_a_pend_for_documentation_carries_a_communication_request_naming_the_form(client):
    body = pended_for_documentation(client)
    cr = claim_response(body)
    refs = [r["reference"] for r in cr["communicationRequest"]]
    inside = resources(body)
    request = inside[refs[0]]
    assert request["resourceType"] == "CommunicationRequest" and request["status"] == "active"
    assert "questionnaire" in request["payload"][0]["contentString"]
    assert ext(request, "extension-serviceLineNumber")[0]["valuePositiveInt"] == 1
    assert request["subject"]["reference"] in inside and request["requester"]["reference"] in inside


def test_a_2_0_1_communication_request_numbers_the_line_on_its_payload(client):
    body = pended_for_documentation(client, "2.0.1")
    cr = claim_response(body)
    request = resources(body)[cr["communicationRequest"][0]["reference"]]
    assert not ext(request, "extension-serviceLineNumber")
    assert ext(request["payload"][0], "extension-serviceLineNumber")[0]["valuePositiveInt"] == 1


def test_a_pended_item_carries_the_administration_reference_number(client):
    cr = claim_response(pended_for_documentation(client))
    assert ext(cr["item"][0], "extension-administrationReferenceNumber")[0]["valueString"]


def test_a_denied_item_carries_the_administration_reference_number(client):
    cr = claim_response(submit(client, pas_request("2.2.1", code=(CPT, "15830"))).json())
    assert ext(cr["item"][0], "extension-administrationReferenceNumber")[0]["valueString"]


def test_an_approval_has_header_adjudication_and_authorized_provider(client):
    body = submit(client, pas_request("2.2.1", code=(CPT, "99213"))).json()
    cr = claim_response(body)
    header = cr["adjudication"][0]["extension"][0]
    assert header["url"] == SD + "extension-reviewAction"
    assert [s for s in header["extension"] if s["url"] == "number"][0]["valueString"] == cr["preAuthRef"]
    provider = ext(cr, "extension-itemAuthorizedProvider")[0]["extension"][0]["valueReference"]["reference"]
    assert provider in resources(body)
    assert ext(cr, "extension-claimResponseReviewer")[0]["extension"][0] == {"url": "wasHumanReviewedFlag", "valueBoolean": False}


def test_a_2_0_1_approval_has_no_header_adjudication(client):
    body = submit(client, pas_request("2.0.1", code=(CPT, "99213"), member="PCM000001")).json()
    cr = claim_response(body)
    assert "adjudication" not in cr and not ext(cr, "extension-itemAuthorizedProvider")


def test_items_carry_the_diagnosis_the_request_communicated(client):
    request = pas_request("2.2.1", code=(CPT, "99213"))
    claim = entry(request, "Claim")
    claim["diagnosis"] = [{"sequence": 1, "diagnosisCodeableConcept": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "G89.4"}]}}]
    claim["item"][0]["diagnosisSequence"] = [1]
    cr = claim_response(submit(client, request).json())
    assert ext(cr["item"][0], "extension-communicatedDiagnosis")[0]["valueCodeableConcept"]["coding"][0]["code"] == "G89.4"


def test_admission_and_discharge_dates_are_echoed_on_the_items(client):
    request = pas_request("2.2.1", code=(CPT, "99213"))
    claim = entry(request, "Claim")
    seq = max([s["sequence"] for s in claim.get("supportingInfo", [])] or [0])
    claim.setdefault("supportingInfo", []).extend([
        {"sequence": seq + 1, "category": {"coding": [{"system": PASTEMP, "code": "admissionDates"}]}, "timingPeriod": {"start": "2026-12-10", "end": "2026-12-12"}},
        {"sequence": seq + 2, "category": {"coding": [{"system": PASTEMP, "code": "dischargeDates"}]}, "timingDate": "2026-12-12"},
    ])
    cr = claim_response(submit(client, request).json())
    assert ext(cr["item"][0], "extension-admissionDates")[0]["valuePeriod"] == {"start": "2026-12-10", "end": "2026-12-12"}
    assert ext(cr["item"][0], "extension-dischargeDate")[0]["valueDate"] == "2026-12-12"


def test_an_update_carries_the_previous_authorization_number(client):
    original = pas_request("2.2.1", code=(CPT, "99213"))
    first = claim_response(submit(client, original).json())
    items = entry(original, "Claim")["item"]
    cr = claim_response(submit(client, update_of(original, [changed(items[0], "changed")])).json())
    assert ext(cr["item"][0], "extension-authorizationNumber")[0]["valueString"] == first["preAuthRef"]


def test_a_modification_adds_an_item_with_provider_modifier_location_price_and_extensions(client):
    body = modified(client)
    cr = claim_response(body)
    add = cr["addItem"][0]
    assert add["modifier"][0]["coding"][0]["code"] == "59"
    assert add["unitPrice"] == {"value": 125.5, "currency": "USD"}
    assert add["locationCodeableConcept"]["coding"][0]["code"] == "11"
    assert add["provider"][0]["reference"] in resources(body)
    assert ext(add, "extension-itemPreAuthPeriod") and ext(add, "extension-itemPreAuthIssueDate")
    assert ext(cr["item"][0], "extension-itemAuthorizedDetail")


def test_the_request_reference_points_at_the_echoed_claim(client):
    request = pas_request("2.2.1", code=(CPT, "99213"))
    cr = claim_response(submit(client, request).json())
    assert cr["request"]["reference"] == request["entry"][0]["fullUrl"]


def test_a_request_with_nothing_to_point_at_says_why_in_2_2_1():
    from server.pas.adjudicate import ItemDecision
    from server.pas.request import PasBundle
    from server.pas.response import Echo, build_claim_response

    pas = PasBundle({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Claim", "use": "preauthorization", "item": [{"sequence": 1}]}}]})
    decision = [ItemDecision(sequence=1, action="A1", summary="x", codes=[])]
    cr = build_claim_response(pas, Echo(pas), response_id="r", version="2.2.1", decisions=decision, case_number="PA1", auth_number="AUTH1")
    assert cr["request"] == {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}
    cr = build_claim_response(pas, Echo(pas), response_id="r", version="2.0.1", decisions=decision, case_number="PA1", auth_number="AUTH1")
    assert "request" not in cr


@pytest.mark.parametrize("version", ["2.0.1", "2.2.1"])
def test_a_reviewers_decision_names_the_reviewer_npi_where_the_version_has_a_place_for_it(client, version):
    """2.2.1 ``claimResponseReviewer``: a person reviewed (wasHumanReviewedFlag) and who (reviewerNPI);
    2.0.1 defines no reviewer element, so its ClaimResponse carries none."""
    body = submit(client, pas_request(version, "Bundle-SurgicalRequestBundleExample.json")).json()
    number = next(e for e in claim_response(body)["item"][0]["extension"]
                  if e["url"].endswith("administrationReferenceNumber"))["valueString"].rsplit("-", 1)[0]
    r = client.post(f"/review/api/cases/{number}/decision", json={"action": "approve"})
    assert r.status_code == 200, r.text
    cr = client.get(f"/fhir/ClaimResponse/{claim_response(body)['id']}").json()
    reviewer = ext(cr, "extension-claimResponseReviewer")
    if version == "2.0.1":
        assert reviewer == []
        return
    subs = {s["url"]: s for s in reviewer[0]["extension"]}
    assert subs["wasHumanReviewedFlag"]["valueBoolean"] is True
    npi = subs["reviewerNPI"]["valueIdentifier"]
    assert npi["system"] == "http://hl7.org/fhir/sid/us-npi" and len(npi["value"]) == 10 and npi["value"].isdigit()
    assert conformance_errors(cr, SD + "profile-claimresponse", "hl7.fhir.us.davinci-pas-2.2.1") == []
