"""FHIR REST interactions: create, read, vread, update, delete, history, conditional create."""

from __future__ import annotations

import pytest

FHIR = {"Content-Type": "application/fhir+json"}


def new_patient(unique: str, **extra) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:mrn", "value": unique}],
        "name": [{"family": "Tester", "given": ["Rest"]}],
        "gender": "female",
        **extra,
    }


def test_create_assigns_id_version_and_location(client, unique):
    r = client.post("/fhir/Patient", json=new_patient(unique), headers=FHIR)
    assert r.status_code == 201
    body = r.json()
    assert body["id"] and body["meta"]["versionId"] == "1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert r.headers["content-type"].startswith("application/fhir+json")
    assert "last-modified" in r.headers


def test_create_ignores_client_supplied_id(client, unique):
    r = client.post("/fhir/Patient", json=new_patient(unique, id="chosen-by-client"), headers=FHIR)
    assert r.status_code == 201
    assert r.json()["id"] != "chosen-by-client"


def test_read_returns_what_was_created(client, unique):
    created = client.post("/fhir/Patient", json=new_patient(unique), headers=FHIR).json()
    r = client.get(f"/fhir/Patient/{created['id']}")
    assert r.status_code == 200
    assert r.json() == created
    assert r.headers["etag"] == 'W/"1"'


def test_read_with_if_none_match_is_not_modified(client, unique):
    created = client.post("/fhir/Patient", json=new_patient(unique), headers=FHIR).json()
    r = client.get(f"/fhir/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304


def test_update_bumps_version_and_keeps_history(client, unique):
    created = client.post("/fhir/Patient", json=new_patient(unique), headers=FHIR).json()
    pid = created["id"]
    changed = dict(created, gender="other")
    r = client.put(f"/fhir/Patient/{pid}", json=changed, headers=FHIR)
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{pid}/_history/2").json()["gender"] == "other"
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert history["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]


def test_update_creates_at_client_chosen_id(client, unique):
    body = new_patient(unique, id=f"client-{unique}")
    r = client.put(f"/fhir/Patient/client-{unique}", json=body, headers=FHIR)
    assert r.status_code == 201
    assert client.get(f"/fhir/Patient/client-{unique}").status_code == 200


def test_update_with_matching_if_match_succeeds(client, unique):
    created = client.post("/fhir/Patient", json=new_patient(unique), headers=FHIR).json()
    r = client.put(f"/fhir/Patient/{created['id']}", json=created, headers={**FHIR, "If-Match": 'W/"1"'})
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"2"'


def test_delete_then_read_is_gone_and_old_version_still_readable(client, unique):
    created = client.post("/fhir/Patient", json=new_patient(unique), headers=FHIR).json()
    pid = created["id"]
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    r = client.get(f"/fhir/Patient/{pid}")
    assert r.status_code == 410
    assert r.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200
    found = client.get("/fhir/Patient", params={"identifier": f"urn:test:mrn|{unique}"}).json()
    assert found["total"] == 0


def test_conditional_create_returns_existing_match(client, unique):
    first = client.post("/fhir/Patient", json=new_patient(unique), headers=FHIR)
    again = client.post(
        "/fhir/Patient", json=new_patient(unique), headers={**FHIR, "If-None-Exist": f"identifier=urn:test:mrn|{unique}"}
    )
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert client.get("/fhir/Patient", params={"identifier": f"urn:test:mrn|{unique}"}).json()["total"] == 1


def test_conditional_create_with_several_matches_is_refused(client, unique):
    client.post("/fhir/Patient", json=new_patient(unique), headers=FHIR)
    client.post("/fhir/Patient", json=new_patient(unique), headers=FHIR)
    r = client.post(
        "/fhir/Patient", json=new_patient(unique), headers={**FHIR, "If-None-Exist": f"identifier=urn:test:mrn|{unique}"}
    )
    assert r.status_code == 412
    assert r.json()["issue"][0]["code"] == "duplicate"


def test_prefer_return_minimal_sends_no_body(client, unique):
    r = client.post("/fhir/Patient", json=new_patient(unique), headers={**FHIR, "Prefer": "return=minimal"})
    assert r.status_code == 201
    assert r.content == b""
    assert "location" in r.headers


def test_json_format_parameter_accepted(client):
    assert client.get("/fhir/Patient/pat-001", params={"_format": "json"}).status_code == 200
    assert client.get("/fhir/Patient/pat-001", headers={"Accept": "application/json"}).status_code == 200


def test_plain_application_json_body_accepted(client, unique):
    r = client.post("/fhir/Patient", json=new_patient(unique), headers={"Content-Type": "application/json"})
    assert r.status_code == 201


def test_metadata_lists_every_served_type_with_interactions_and_search_params(client):
    r = client.get("/fhir/metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    resources = {res["type"]: res for res in cs["rest"][0]["resource"]}
    for t in ("Patient", "Coverage", "Claim", "ClaimResponse", "Questionnaire", "Subscription", "Bundle", "Task"):
        assert t in resources
        codes = {i["code"] for i in resources[t]["interaction"]}
        assert {"read", "vread", "create", "update", "delete", "search-type"} <= codes
    claim_params = {p["name"] for p in resources["Claim"]["searchParam"]}
    assert {"_id", "_lastUpdated", "identifier", "patient", "status"} <= claim_params
    assert "Claim:patient" in resources["Claim"]["searchInclude"]


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
def test_health_checks_answer(client, path):
    r = client.get(path)
    assert r.status_code == 200 and r.json()["status"] == "ok"
