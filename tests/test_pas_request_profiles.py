"""How strictly a PAS request is held to its profiles: a fault is reported once, where it is; a
placement the IG's own profiles make is not refused; an inquiry is answered despite missing parts
but not when it is malformed. (The official test kits send requests of each of these shapes.)"""

from __future__ import annotations

import pytest

from server.fhir.errors import FHIRError
from server.pas.request import check_request, profile_problems
from tests.pas_support import claim_response, entry, pas_request, submit
from tests.test_pas_inquire_update import inquiry_for, returned

CRD_COVERAGE_INFO = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
INFO_CHANGED = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-infoChanged"


def keyed(problems: list[dict], key: str) -> list[dict]:
    return [p for p in problems if any(c.get("code") == key for c in (p.get("details") or {}).get("coding", []))]


def test_a_referenced_resource_that_breaks_its_target_profile_is_reported_there_only():
    """The ServiceRequest's CRD coverage-information points at a Coverage that is not a CRD Coverage:
    that reference is the fault. The Claim's reference to the ServiceRequest is not a second one."""
    bundle = pas_request("2.0.1")
    coverage = entry(bundle, "Coverage")
    entry(bundle, "ServiceRequest").setdefault("extension", []).append({"url": CRD_COVERAGE_INFO, "extension": [
        {"url": "coverage", "valueReference": {"reference": f"Coverage/{coverage['id']}"}},
        {"url": "covered", "valueCode": "covered"}, {"url": "pa-needed", "valueCode": "auth-needed"},
        {"url": "date", "valueDate": "2026-01-01"}, {"url": "coverage-assertion-id", "valueString": "a1b2c3"}]})
    found = keyed(profile_problems(bundle, "submit", "2.0.1"), "reference-target")
    assert [p["expression"][0] for p in found] == ["Bundle.entry[5].resource.extension[0].extension[0].valueReference.reference"]


def test_an_extension_placed_where_another_profile_of_the_ig_places_it_is_accepted():
    """PAS 2.2.1 declares infoChanged for Claim.item, yet its Claim update profile puts it on
    Claim.supportingInfo: a request doing the same is accepted, with a warning, not refused."""
    bundle = pas_request("2.2.1")
    claim = bundle["entry"][0]["resource"]
    claim["supportingInfo"][0].setdefault("extension", []).append({"url": INFO_CHANGED, "valueCode": "changed"})
    assert keyed(profile_problems(bundle, "submit", "2.2.1"), "extension-context") == []
    check_request(bundle, "submit")  # no FHIRError


def test_an_extension_no_profile_places_there_is_still_refused():
    bundle = pas_request("2.2.1")
    bundle["entry"][0]["resource"].setdefault("extension", []).append({"url": INFO_CHANGED, "valueCode": "changed"})
    with pytest.raises(FHIRError) as refused:
        check_request(bundle, "submit")
    assert keyed(refused.value.issues, "extension-context")


def test_an_inquiry_missing_a_required_element_is_still_answered(client):
    request = pas_request("2.2.1", member="PCM000008")
    decided = submit(client, request)
    assert decided.status_code == 200, decided.text
    inquiry = inquiry_for(request, "2.2.1")
    del inquiry["entry"][0]["resource"]["created"]  # Claim.created is 1..1
    with pytest.raises(FHIRError):
        check_request(inquiry, "submit")  # a request to decide would be refused for it
    r = submit(client, inquiry, "/fhir/Claim/$inquire")
    assert r.status_code == 200, r.text
    assert claim_response(decided.json())["id"] in {claim_response(b)["id"] for b in returned(r.json())}


def test_a_malformed_inquiry_is_refused(client):
    request = pas_request("2.2.1", member="PCM000008")
    inquiry = inquiry_for(request, "2.2.1")
    inquiry["entry"][0]["resource"]["created"] = 20260101  # a number where a dateTime belongs
    r = submit(client, inquiry, "/fhir/Claim/$inquire")
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
