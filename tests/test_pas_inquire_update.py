"""Claim/$inquire (query by example) and updates and cancels through $submit."""

from __future__ import annotations

import copy
import uuid


from tests.pas_support import CPT, actions, claim_response, entry, pas_request, submit
from tests.support import example

EXT = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"


def inquiry_for(request_bundle: dict, version: str = "2.2.1") -> dict:
    """The IG's inquiry example, pointed at the member and provider of ``request_bundle``."""
    inq = example(f"hl7.fhir.us.davinci-pas-{version}", "Bundle-PASClaimInquiryBundleExample.json")
    inq["identifier"] = {"system": "urn:test:inquiry", "value": uuid.uuid4().hex}
    for e in inq["entry"]:
        if e["resource"]["resourceType"] == "Patient":
            e["resource"]["identifier"] = entry(request_bundle, "Patient")["identifier"]
        if e["resource"]["resourceType"] == "Coverage":
            # The member identifier keeps its type (MB), as each version's Coverage profile has it.
            kept = next((i["type"] for i in e["resource"].get("identifier", []) if i.get("type")), None)
            e["resource"]["identifier"] = [{**({"type": kept} if kept else {}), **i} for i in entry(request_bundle, "Patient")["identifier"]]
            e["resource"].pop("subscriberId", None)
    claim = inq["entry"][0]["resource"]
    provider_ref = claim["provider"]["reference"]
    provider = next(e["resource"] for e in inq["entry"] if provider_ref.endswith(f"{e['resource']['resourceType']}/{e['resource']['id']}"))
    req_claim = request_bundle["entry"][0]["resource"]
    req_provider = next(e["resource"] for e in request_bundle["entry"] if req_claim["provider"]["reference"].endswith(f"{e['resource']['resourceType']}/{e['resource']['id']}"))
    provider["identifier"] = req_provider["identifier"]
    for item in claim.get("item", []):
        item["productOrService"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-applicable"}]}
        item["extension"] = [e for e in item.get("extension", []) if not e["url"].endswith(("reviewActionCode", "authorizationNumber", "administrationReferenceNumber"))]
    claim["item"] = claim.get("item", [])[:1]
    return inq


def returned(body: dict) -> list[dict]:
    """The inquiry response Bundles of real matches (a no-match answer is an error, not a match)."""
    assert body["resourceType"] == "Parameters"
    bundles = [p["resource"] for p in body.get("parameter", []) if p["name"] == "return"]
    return [b for b in bundles if b["entry"][0]["resource"].get("outcome") != "error"]


def inquiry_error_codes(bundle: dict) -> list[str]:
    """The X12 reject reason codes of an inquiry response Bundle that answers with an error."""
    assert bundle["resourceType"] == "Bundle"
    assert bundle["meta"]["profile"][0].endswith("profile-pas-inquiry-response-bundle")
    cr = bundle["entry"][0]["resource"]
    assert cr["resourceType"] == "ClaimResponse" and cr["outcome"] == "error"
    assert cr["meta"]["profile"][0].endswith("profile-claiminquiryresponse")
    return [c["code"] for e in cr["error"] for c in e["code"]["coding"]]


def only_return(body: dict) -> dict:
    assert body["resourceType"] == "Parameters"
    bundles = [p["resource"] for p in body.get("parameter", []) if p["name"] == "return"]
    assert len(bundles) == 1
    return bundles[0]


def test_inquiry_by_member_and_provider_returns_the_current_answer(client):
    request = pas_request("2.2.1", member="PCM000005")
    decided = submit(client, request).json()
    r = submit(client, inquiry_for(request), "/fhir/Claim/$inquire")
    assert r.status_code == 200
    bundles = returned(r.json())
    assert len(bundles) >= 1
    first = bundles[0]
    assert first["meta"]["profile"][0].endswith("profile-pas-inquiry-response-bundle")
    cr = first["entry"][0]["resource"]
    assert cr["resourceType"] == "ClaimResponse" and cr["meta"]["profile"][0].endswith("profile-claiminquiryresponse")
    assert cr["id"] == claim_response(decided)["id"]
    assert actions(first) == actions(decided)


def test_inquiry_narrowed_by_authorization_number(client):
    request = pas_request("2.2.1", member="PCM000011")
    decided = submit(client, request).json()
    other = pas_request("2.2.1", member="PCM000011", code=(CPT, "99213"))
    submit(client, other)
    inq = inquiry_for(request)
    inq["entry"][0]["resource"].setdefault("extension", []).append({"url": EXT + "extension-authorizationNumber", "valueString": claim_response(decided)["preAuthRef"]})
    bundles = returned(submit(client, inq, "/fhir/Claim/$inquire").json())
    assert [b["entry"][0]["resource"]["id"] for b in bundles] == [claim_response(decided)["id"]]


def test_inquiry_narrowed_by_service_code(client):
    request = pas_request("2.2.1", member="PCM000009", code=(CPT, "70551"))
    decided = submit(client, request).json()
    submit(client, pas_request("2.2.1", member="PCM000009", code=(CPT, "99213")))
    inq = inquiry_for(request)
    inq["entry"][0]["resource"]["item"][0]["productOrService"] = {"coding": [{"system": CPT, "code": "70551"}]}
    bundles = returned(submit(client, inq, "/fhir/Claim/$inquire").json())
    assert [b["entry"][0]["resource"]["id"] for b in bundles] == [claim_response(decided)["id"]]


def test_inquiry_for_unknown_member_is_answered_with_an_error(client):
    request = pas_request("2.2.1", member="PCM000001")
    inq = inquiry_for(request)
    entry(inq, "Patient")["identifier"] = [{"system": "urn:test", "value": "nobody"}]
    entry(inq, "Coverage")["identifier"] = [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]}, "system": "urn:test", "value": "nobody"}]
    r = submit(client, inq, "/fhir/Claim/$inquire")
    assert r.status_code == 200
    assert inquiry_error_codes(only_return(r.json())) == ["15"]


def test_inquiry_from_another_provider_finds_nothing(client):
    request = pas_request("2.2.1", member="PCM000002")
    submit(client, request)
    inq = inquiry_for(request)
    claim = inq["entry"][0]["resource"]
    provider = next(e["resource"] for e in inq["entry"] if claim["provider"]["reference"].endswith(e["resource"]["id"]))
    provider["identifier"] = [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1999999992"}]
    body = submit(client, inq, "/fhir/Claim/$inquire").json()
    assert returned(body) == []
    assert inquiry_error_codes(only_return(body)) == ["15"]


def test_inquiry_without_provider_identifier_is_answered_with_error_43(client):
    request = pas_request("2.2.1", member="PCM000002")
    inq = inquiry_for(request)
    claim = inq["entry"][0]["resource"]
    provider = next(e["resource"] for e in inq["entry"] if claim["provider"]["reference"].endswith(e["resource"]["id"]))
    provider.pop("identifier")
    r = submit(client, inq, "/fhir/Claim/$inquire")
    assert r.status_code == 200
    assert inquiry_error_codes(only_return(r.json())) == ["43"]


def test_2_0_1_inquiry_returns_a_bundle(client):
    request = pas_request("2.0.1", member="PCM000012")
    decided = submit(client, request).json()
    inquiry = inquiry_for(request, "2.0.1")
    inquiry["meta"] = {"profile": ["http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-pas-inquiry-request-bundle|2.0.1"]}
    r = submit(client, inquiry, "/fhir/Claim/$inquire")
    assert r.status_code == 200
    body = r.json()
    assert body["resourceType"] == "Bundle"
    assert body["entry"][0]["resource"]["id"] == claim_response(decided)["id"]


def test_2_0_1_inquiry_with_no_match_is_a_bundle_with_an_error(client):
    inquiry = inquiry_for(pas_request("2.0.1", member="PCM000012"), "2.0.1")
    inquiry["meta"] = {"profile": ["http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-pas-inquiry-request-bundle|2.0.1"]}
    for e in inquiry["entry"]:
        if e["resource"]["resourceType"] in ("Patient", "Coverage"):
            e["resource"]["identifier"] = [{"system": "urn:test", "value": "nobody"}]
    r = submit(client, inquiry, "/fhir/Claim/$inquire")
    assert r.status_code == 200
    assert inquiry_error_codes(r.json()) == ["15"]


def test_inquiry_without_a_member_identifier_is_answered_with_error_72(client):
    """The member identifier is what an inquiry is matched on. Without one, the answer is the PAS
    business error (an inquiry response whose ClaimResponse carries X12 72, Invalid/Missing
    Subscriber/Insured ID), not a bare 4xx: the profile rules it breaks are not what the caller
    needs to hear."""
    request = pas_request("2.2.1", member="PCM000001")
    inq = inquiry_for(request)
    entry(inq, "Patient").pop("identifier")
    for e in inq["entry"]:
        if e["resource"]["resourceType"] == "Coverage":
            e["resource"].pop("identifier", None)
            e["resource"].pop("subscriberId", None)
    r = submit(client, inq, "/fhir/pas-2.2.1/Claim/$inquire")
    assert r.status_code == 200, r.text
    body = r.json()
    bundle = body["parameter"][0]["resource"] if body["resourceType"] == "Parameters" else body
    assert inquiry_error_codes(bundle) == ["72"]


# ---------------------------------------------------------------------- updates and cancels
def update_of(original: dict, items: list[dict], *, cancel_all: bool = False) -> dict:
    """A PAS 2.2.1 Claim update: new identifier, related.claim to the original, the original Claim
    included, every item carried with its sequence."""
    upd = copy.deepcopy(original)
    upd["identifier"] = {"system": "urn:test:bundle", "value": uuid.uuid4().hex}
    claim = upd["entry"][0]["resource"]
    prior_entry = copy.deepcopy(original["entry"][0])
    claim["id"] = claim["id"] + "-update-" + uuid.uuid4().hex[:6]
    upd["entry"][0]["fullUrl"] = prior_entry["fullUrl"].rsplit("/", 1)[0] + "/" + claim["id"]
    claim["identifier"] = [{"system": "urn:test:trace", "value": uuid.uuid4().hex}]
    claim["meta"] = {"profile": [EXT + "profile-claim-update"]}  # an update meets the Claim update profile
    claim["related"] = [{"claim": {"reference": prior_entry["fullUrl"]}, "relationship": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/ex-relatedclaimrelationship", "code": "prior"}]}}]
    claim["item"] = items
    if cancel_all:
        claim.setdefault("extension", []).append({"url": EXT + "extension-certificationType", "valueCodeableConcept": {"coding": [{"system": "https://codesystem.x12.org/005010/1322", "code": "3"}]}})
    upd["entry"].append(prior_entry)
    return upd


def changed(item: dict, how: str) -> dict:
    item = copy.deepcopy(item)
    item["extension"] = [e for e in item.get("extension", []) if not e["url"].endswith("infoChanged")] + [{"url": EXT + "extension-infoChanged", "valueCode": how}]
    return item


def cancelled(item: dict) -> dict:
    item = changed(item, "changed")
    item["modifierExtension"] = [{"url": EXT + "extension-infoCancelled", "valueBoolean": True}]
    return item


def test_update_adds_an_item_and_keeps_the_earlier_decision(client):
    original = pas_request("2.2.1")
    first = submit(client, original).json()
    items = original["entry"][0]["resource"]["item"]
    added = copy.deepcopy(items[0])
    added["sequence"] = 2
    added["productOrService"] = {"coding": [{"system": CPT, "code": "70551"}]}
    body = submit(client, update_of(original, [items[0], changed(added, "added")])).json()
    assert actions(body) == {1: "A1", 2: "A4"}
    assert claim_response(body)["preAuthRef"] == claim_response(first)["preAuthRef"]


def test_update_changes_an_item_and_it_is_decided_again(client):
    original = pas_request("2.2.1", code=(CPT, "70551"))
    assert actions(submit(client, original).json()) == {1: "A4"}
    item = original["entry"][0]["resource"]["item"][0]
    item2 = changed(item, "changed")
    item2["productOrService"] = {"coding": [{"system": CPT, "code": "99213"}]}
    assert actions(submit(client, update_of(original, [item2])).json()) == {1: "A1"}


def test_update_cancels_one_item(client):
    original = pas_request("2.2.1", "Bundle-HomecareAuthorizationBundleExample.json")
    assert actions(submit(client, original).json()) == {1: "A1", 2: "A1"}
    items = original["entry"][0]["resource"]["item"]
    body = submit(client, update_of(original, [items[0], cancelled(items[1])])).json()
    assert actions(body) == {1: "A1", 2: "C"}


def test_cancel_all(client):
    original = pas_request("2.2.1", "Bundle-HomecareAuthorizationBundleExample.json")
    submit(client, original)
    items = original["entry"][0]["resource"]["item"]
    body = submit(client, update_of(original, [changed(i, "changed") for i in items], cancel_all=True)).json()
    assert actions(body) == {1: "C", 2: "C"}
    assert claim_response(body)["disposition"] == "Cancelled"


def test_inquiry_after_update_returns_the_current_answer(client):
    original = pas_request("2.2.1", "Bundle-HomecareAuthorizationBundleExample.json", member="PCM000007")
    submit(client, original)
    items = original["entry"][0]["resource"]["item"]
    updated = submit(client, update_of(original, [items[0], cancelled(items[1])])).json()
    bundles = returned(submit(client, inquiry_for(original), "/fhir/Claim/$inquire").json())
    assert [b["entry"][0]["resource"]["id"] for b in bundles] == [claim_response(updated)["id"]]


def test_denied_request_cannot_be_updated(client):
    original = pas_request("2.2.1", code=(CPT, "15830"))
    assert actions(submit(client, original).json()) == {1: "A3"}
    item = changed(original["entry"][0]["resource"]["item"][0], "changed")
    cr = claim_response(submit(client, update_of(original, [item])).json())
    assert cr["outcome"] == "error" and "denied" in cr["processNote"][0]["text"]


def test_update_of_a_request_never_seen_is_decided_as_new(client):
    """The PAS test kit sends updates whose prior Claim only exists inside the Bundle."""
    original = pas_request("2.2.1")
    claim = original["entry"][0]["resource"]
    claim["identifier"] = [{"system": "urn:test:trace", "value": uuid.uuid4().hex}]
    claim["id"] = "never-seen-" + uuid.uuid4().hex[:8]
    original["entry"][0]["fullUrl"] = "http://example.org/fhir/Claim/" + claim["id"]
    body = submit(client, update_of(original, claim["item"])).json()
    assert actions(body) == {1: "A1"}


def test_official_update_example_is_accepted(client):
    b = example("hl7.fhir.us.davinci-pas-2.2.1", "Bundle-HomecareAuthorizationUpdateBundleExample.json")
    b["identifier"] = {"system": "urn:test:bundle", "value": uuid.uuid4().hex}
    body = submit(client, b).json()
    assert set(actions(body)) == {i["sequence"] for i in b["entry"][0]["resource"]["item"]}
    assert actions(body)[2] == "C"
