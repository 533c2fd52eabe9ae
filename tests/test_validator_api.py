"""``$validate`` over HTTP and ``precert validate`` on the command line."""

from __future__ import annotations

import json

from server.cli import main
from server.fhir.profiles import KEY_SYSTEM
from tests.support import example

FHIR = {"Content-Type": "application/fhir+json"}
PAS = "hl7.fhir.us.davinci-pas-2.0.1"
REQUEST_BUNDLE = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-pas-request-bundle"


def _bundle() -> dict:
    return example(PAS, "Bundle-ReferralAuthorizationBundleExample.json")


def _errors(outcome: dict) -> list[dict]:
    return [i for i in outcome["issue"] if i["severity"] == "error"]


def test_type_level_validate_accepts_a_conformant_pas_request_bundle(client):
    r = client.post(f"/fhir/Bundle/$validate?profile={REQUEST_BUNDLE}", json=_bundle(), headers=FHIR)
    assert r.status_code == 200
    assert r.json()["resourceType"] == "OperationOutcome"
    assert _errors(r.json()) == []


def test_validate_reports_each_broken_constraint_with_location_and_key(client):
    bundle = _bundle()
    bundle["entry"][0]["resource"]["status"] = "sleeping"
    r = client.post("/fhir/$validate", json=bundle, headers=FHIR)
    assert r.status_code == 200
    found = {(i["expression"][0], i["details"]["coding"][0]["system"], i["details"]["coding"][0]["code"]) for i in _errors(r.json())}
    # Outside the value set, and not the 'active' the PAS Claim profile requires.
    assert found == {("Bundle.entry[0].resource.status", KEY_SYSTEM, "binding"), ("Bundle.entry[0].resource.status", KEY_SYSTEM, "pattern")}


def test_validate_takes_resource_and_profile_as_parameters(client):
    patient = {"resourceType": "Patient", "gender": "unknown-gender"}
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": patient},
        {"name": "profile", "valueUri": "http://hl7.org/fhir/StructureDefinition/Patient"}]}
    r = client.post("/fhir/Patient/$validate", json=params, headers=FHIR)
    assert r.status_code == 200
    assert [i["expression"] for i in _errors(r.json())] == [["Patient.gender"]]


def test_validate_refuses_an_unknown_profile(client):
    r = client.post("/fhir/Patient/$validate?profile=http://example.org/none", json={"resourceType": "Patient"}, headers=FHIR)
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["profile"]


def test_validate_refuses_a_body_that_is_not_json(client):
    r = client.post("/fhir/$validate", content=b"{not json", headers=FHIR)
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


def test_validate_refuses_json_that_is_not_a_resource(client):
    r = client.post("/fhir/$validate", json=[1, 2], headers=FHIR)
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


def test_validate_refuses_an_unknown_resource_type(client):
    r = client.post("/fhir/$validate", json={"resourceType": "Spaceship"}, headers=FHIR)
    assert r.status_code == 400


def test_validate_refuses_a_resource_posted_to_another_type(client):
    r = client.post("/fhir/Claim/$validate", json={"resourceType": "Patient"}, headers=FHIR)
    assert r.status_code == 400


def test_validate_refuses_a_body_over_the_size_limit(client, settings):
    big = {"resourceType": "Patient", "id": "x", "name": [{"text": "a" * (settings.max_body_bytes + 1)}]}
    r = client.post("/fhir/$validate", content=json.dumps(big).encode(), headers=FHIR)
    assert r.status_code == 413
    assert r.json()["resourceType"] == "OperationOutcome"


def test_cli_validate_exits_0_for_a_conformant_file(tmp_path, capsys):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(_bundle()))
    assert main(["validate", str(path)]) == 0
    assert "ok (0 errors)" in capsys.readouterr().out


def test_cli_validate_exits_1_and_lists_the_errors(tmp_path, capsys):
    path = tmp_path / "patient.json"
    path.write_text(json.dumps({"resourceType": "Patient", "gender": "x"}))
    assert main(["validate", str(path), "--profile", "http://hl7.org/fhir/StructureDefinition/Patient"]) == 1
    out = capsys.readouterr().out
    assert "Patient.gender: [binding]" in out


def test_cli_validate_exits_1_for_a_file_that_is_not_json(tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_text("nope")
    assert main(["validate", str(path)]) == 1
    assert "not JSON" in capsys.readouterr().out


def test_cli_validate_exits_1_for_an_unknown_profile(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"resourceType": "Patient"}))
    assert main(["validate", str(path), "--profile", "http://example.org/none"]) == 1
    assert "is not known" in capsys.readouterr().out


def _nested(depth: int) -> dict:
    ext = {"url": "http://example.org/a", "valueString": "x"}
    for _ in range(depth):
        ext = {"url": "http://example.org/a", "extension": [ext]}
    return {"resourceType": "Patient", "extension": [ext]}


def test_validate_refuses_a_resource_nested_too_deeply(client):
    # Refused by the request guard's JSON depth bound before any validation work starts.
    r = client.post("/fhir/$validate", content=json.dumps(_nested(100)).encode(), headers=FHIR)
    assert r.status_code == 413
    assert r.json()["resourceType"] == "OperationOutcome"


def test_validate_refuses_a_resource_with_too_many_values_instead_of_working_for_minutes(client):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": f"urn:uuid:{i:08d}-0000-4000-8000-000000000000",
         "resource": {"resourceType": "Patient", "id": str(i), "gender": "male", "active": True,
                      "name": [{"family": "Doe", "given": ["A", "B"]}]}} for i in range(6000)]}
    r = client.post("/fhir/$validate", json=bundle, headers=FHIR)
    assert r.status_code == 400
    assert r.json()["issue"][0]["code"] == "too-costly"
