"""PAS requests are checked against the PAS request profiles of the version they are answered in.

``$submit`` meets ``profile-pas-request-bundle`` and ``$inquire`` ``profile-pas-inquiry-request-bundle``,
with the Claim and every entry against the profiles they slice in; an error refuses the request with
every problem in one OperationOutcome, a profile Precert does not ship is only a warning.
"""

from __future__ import annotations

import pytest

from tests.pas_support import claim_response, REFERRAL, entry, pas_request, submit
from tests.test_pas_inquire_update import inquiry_for
from tests.support import example


def issues_of(r, status=400) -> list[dict]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"]


def test_submit_refuses_a_2_2_1_item_without_the_category_the_pas_claim_profile_requires(client):
    request = pas_request("2.2.1")
    del entry(request, "Claim")["item"][0]["category"]
    issues = issues_of(submit(client, request, "/fhir/pas-2.2.1/Claim/$submit"))
    assert [i["expression"][0] for i in issues] == ["Bundle.entry[0].resource.item[0].category"]
    assert issues[0]["details"]["coding"][0]["code"] == "cardinality"


def test_submit_lists_every_profile_problem_with_its_location(client):
    request = pas_request("2.2.1")
    claim = entry(request, "Claim")
    claim["status"] = "finished"  # not in the required FinancialResourceStatusCodes
    del claim["item"][0]["category"]
    entry(request, "Coverage")["identifier"] = [{"system": "urn:x", "value": "no-type"}]  # memberid slice needs type MB
    exprs = {i["expression"][0] for i in issues_of(submit(client, request, "/fhir/pas-2.2.1/Claim/$submit"))}
    assert {"Bundle.entry[0].resource.status", "Bundle.entry[0].resource.item[0].category"} <= exprs
    assert any(e.endswith("resource.identifier") for e in exprs)


def test_a_claimed_profile_precert_does_not_ship_is_not_a_reason_to_refuse(client):
    request = pas_request("2.2.1")
    entry(request, "Patient").setdefault("meta", {})["profile"] = ["http://example.org/StructureDefinition/not-shipped"]
    assert submit(client, request).status_code == 200


@pytest.mark.parametrize("version", ["2.0.1", "2.2.1"])
def test_the_official_referral_example_is_accepted_in_its_version(client, version):
    b = example(f"hl7.fhir.us.davinci-pas-{version}", REFERRAL)
    b["identifier"] = {"system": "urn:test:bundle", "value": f"conformance-{version}-{id(b)}"}
    assert submit(client, b, f"/fhir/pas-{version}/Claim/$submit").status_code == 200


def test_inquire_refuses_an_inquiry_that_breaks_the_pas_inquiry_claim_profile(client):
    request = pas_request("2.2.1")
    inquiry = inquiry_for(request)
    entry(inquiry, "Claim")["use"] = "claim"  # the inquiry Claim fixes use to preauthorization
    exprs = {i["expression"][0] for i in issues_of(submit(client, inquiry, "/fhir/pas-2.2.1/Claim/$inquire"))}
    assert "Bundle.entry[0].resource.use" in exprs


def _refer_to_a_document_not_sent(claim: dict) -> None:
    claim.setdefault("supportingInfo", []).append({
        "extension": [{"url": "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-documentInformation", "extension": [
            {"url": "reportTypeCode", "valueCodeableConcept": {"coding": [{"system": "https://codesystem.x12.org/005010/755", "code": "09"}]}}]}],
        "sequence": 90,
        "category": {"coding": [{"system": "http://hl7.org/fhir/us/davinci-pas/CodeSystem/PASTempCodes", "code": "additionalInformation"}]},
        "valueReference": {"reference": "DocumentReference/summary-held-by-the-provider"}})


def test_an_inquiry_referring_to_a_document_it_does_not_carry_is_answered(client):
    """An inquiry is matched on member, provider and identifiers: a supporting document it names but
    does not include (PAS requires inclusion of requests, not of inquiries) does not stop the answer."""
    request = pas_request("2.2.1")
    decided = submit(client, request)
    assert decided.status_code == 200
    inquiry = inquiry_for(request)
    _refer_to_a_document_not_sent(entry(inquiry, "Claim"))
    r = submit(client, inquiry, "/fhir/pas-2.2.1/Claim/$inquire")
    assert r.status_code == 200, r.text
    found = [p["resource"]["entry"][0]["resource"] for p in r.json()["parameter"] if p["name"] == "return"]
    # The member's other requests may be answered too (an update refused earlier, say): this one is.
    assert claim_response(decided.json())["id"] in {cr["id"] for cr in found if "error" not in cr}


def test_a_request_must_still_carry_every_resource_it_refers_to(client):
    request = pas_request("2.2.1")
    _refer_to_a_document_not_sent(entry(request, "Claim"))
    issues = issues_of(submit(client, request))
    assert [i["expression"][0] for i in issues] == ["Claim.supportingInfo[1].valueReference"]


def test_an_inquiry_must_still_resolve_what_it_is_matched_on(client):
    request = pas_request("2.2.1")
    inquiry = inquiry_for(request)
    entry(inquiry, "Claim")["provider"] = {"reference": "PractitionerRole/not-sent"}
    assert "Claim.provider" in {i["expression"][0] for i in issues_of(submit(client, inquiry, "/fhir/pas-2.2.1/Claim/$inquire"))}
