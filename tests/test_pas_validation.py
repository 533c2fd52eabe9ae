"""Every way a PAS request can be unacceptable gets a 4xx OperationOutcome naming each problem, and
nothing is stored."""

from __future__ import annotations

import orjson
import pytest

from tests.pas_support import FHIR, pas_request, submit


def outcome(r, status=400) -> list[dict]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"]


def expressions(issues) -> set[str]:
    return {e for i in issues for e in i.get("expression", [])}


@pytest.mark.parametrize("path", ["/fhir/Claim/$submit", "/fhir/Claim/$inquire"])
def test_empty_bundle_is_refused(client, path):
    """What the PAS conformance suite sends to test error handling."""
    bundle = {"resourceType": "Bundle", "identifier": {"system": "urn:test", "value": "empty"}, "type": "collection", "timestamp": "2024-01-01T00:00:00Z", "entry": []}
    issues = outcome(submit(client, bundle, path))
    assert "Bundle.entry" in expressions(issues)


@pytest.mark.parametrize("path", ["/fhir/Claim/$submit", "/fhir/Claim/$inquire"])
def test_malformed_json_is_refused(client, path):
    issues = outcome(client.post(path, content=b'{"resourceType": "Bundle", "entry": [', headers=FHIR))
    assert issues[0]["code"] == "structure"


def test_wrong_resource_type_is_refused(client):
    issues = outcome(submit(client, {"resourceType": "Patient"}))
    assert "expected a PAS request Bundle" in issues[0]["diagnostics"]


def test_parameters_without_resource_is_refused(client):
    outcome(submit(client, {"resourceType": "Parameters", "parameter": [{"name": "other", "valueString": "x"}]}))


def test_every_problem_is_listed_at_once(client):
    bundle = pas_request("2.2.1")
    bundle["type"] = "batch"
    del bundle["identifier"]
    del bundle["timestamp"]
    claim = bundle["entry"][0]["resource"]
    claim["use"] = "claim"
    claim["patient"] = {"reference": "Patient/not-in-bundle"}
    claim["supportingInfo"].append(dict(claim["supportingInfo"][0]))
    issues = outcome(submit(client, bundle))
    exprs = expressions(issues)
    assert {"Bundle.type", "Bundle.identifier", "Bundle.timestamp", "Claim.use", "Claim.patient", "Claim.supportingInfo[1].sequence"} <= exprs


def test_claim_must_be_first(client):
    bundle = pas_request("2.2.1")
    bundle["entry"].append(bundle["entry"].pop(0))
    issues = outcome(submit(client, bundle))
    assert "Bundle.entry[0].resource" in expressions(issues)


def test_unresolvable_reference_is_named(client):
    bundle = pas_request("2.2.1")
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Coverage"]
    issues = outcome(submit(client, bundle))
    assert any("Claim.insurance[0].coverage" == e for e in expressions(issues))


def test_duplicate_entries_are_refused(client):
    bundle = pas_request("2.2.1")
    bundle["entry"].append(dict(bundle["entry"][1]))
    issues = outcome(submit(client, bundle))
    assert any(i["code"] == "duplicate" for i in issues)


def test_duplicate_item_sequences_are_refused(client):
    bundle = pas_request("2.2.1", "Bundle-HomecareAuthorizationBundleExample.json")
    items = bundle["entry"][0]["resource"]["item"]
    items[1]["sequence"] = items[0]["sequence"]
    issues = outcome(submit(client, bundle))
    assert "Claim.item[1].sequence" in expressions(issues)


def test_claim_without_items_is_refused(client):
    bundle = pas_request("2.2.1")
    del bundle["entry"][0]["resource"]["item"]
    assert "Claim.item" in expressions(outcome(submit(client, bundle)))


def test_no_focal_insurance_is_refused(client):
    bundle = pas_request("2.2.1")
    bundle["entry"][0]["resource"]["insurance"][0]["focal"] = False
    assert "Claim.insurance" in expressions(outcome(submit(client, bundle)))


def test_structurally_invalid_resource_inside_is_refused_with_its_path(client):
    bundle = pas_request("2.2.1")
    bundle["entry"][0]["resource"]["item"][0]["sequence"] = "first"
    issues = outcome(submit(client, bundle))
    assert "Bundle.entry[0].resource.item[0].sequence" in expressions(issues)


def test_missing_required_claim_element_is_refused(client):
    bundle = pas_request("2.2.1")
    del bundle["entry"][0]["resource"]["provider"]
    issues = outcome(submit(client, bundle))
    assert "Bundle.entry[0].resource.provider" in expressions(issues)


def test_oversized_request_is_413(client):
    bundle = pas_request("2.2.1")
    bundle["entry"][0]["resource"]["supportingInfo"][0]["valueString"] = "x" * (11 * 1024 * 1024)
    r = client.post("/fhir/Claim/$submit", content=orjson.dumps(bundle), headers=FHIR)
    assert r.status_code == 413 and r.json()["resourceType"] == "OperationOutcome"


def test_hostile_strings_are_data(client):
    bundle = pas_request("2.2.1")
    bundle["identifier"]["value"] = "'; db.dropDatabase(); //" + bundle["identifier"]["value"]
    claim = bundle["entry"][0]["resource"]
    claim["item"][0]["productOrService"]["coding"][0]["code"] = '{"$gt": ""}'
    claim["item"][0]["productOrService"]["coding"][0]["display"] = "<script>alert(1)</script>"
    r = submit(client, bundle)
    assert r.status_code == 200
    assert r.json()["entry"][0]["resource"]["resourceType"] == "ClaimResponse"


def test_refused_request_stores_nothing(client):
    bundle = pas_request("2.2.1")
    ident = bundle["entry"][0]["resource"]["identifier"][0]
    ident["value"] = "REFUSED-" + bundle["identifier"]["value"]
    bundle["entry"][0]["resource"]["use"] = "claim"
    outcome(submit(client, bundle))
    found = client.get("/fhir/Claim", params={"identifier": f"{ident['system']}|{ident['value']}"}).json()
    assert found["total"] == 0


def test_oversized_inquiry_is_413(client):
    big = b'{"resourceType":"Bundle","type":"collection","entry":[],"x":"' + b"a" * (11 * 1024 * 1024) + b'"}'
    r = client.post("/fhir/Claim/$inquire", content=big, headers=FHIR)
    assert r.status_code == 413 and r.json()["resourceType"] == "OperationOutcome"


def test_review_api_refuses_bad_bodies(client):
    from tests.pas_support import pas_request as req

    body = submit(client, req("2.2.1", "Bundle-SurgicalRequestBundleExample.json")).json()
    number = next(e for e in body["entry"][0]["resource"]["item"][0]["extension"] if e["url"].endswith("administrationReferenceNumber"))["valueString"].rsplit("-", 1)[0]
    url = f"/review/api/cases/{number}"
    assert client.post(f"{url}/decision", content=b"x" * (11 * 1024 * 1024), headers=FHIR).status_code == 413
    assert client.post(f"{url}/decision", json=["approve"]).status_code == 400
    assert client.post(f"{url}/decision", json={"action": "modify", "items": [{"sequence": 1, "quantity": "lots"}]}).status_code == 400
    assert client.post(f"{url}/assign", json={"assignee": 42}).status_code == 400
    hostile = "<script>alert(1)</script>'; db.dropDatabase(); //"
    r = client.post(f"{url}/assign", json={"assignee": hostile})
    assert r.status_code == 200 and r.json()["assignee"] == hostile[:100]
    assert client.get("/review/api/cases/" + "%24where").status_code == 404
