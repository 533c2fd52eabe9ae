"""maxLength and minValue/maxValue, and ``$validate`` on a stored instance (Resource-validate)."""

from __future__ import annotations

import copy
import uuid

import pytest

from server.fhir import profiles
from tests.support import example

FHIR = {"Content-Type": "application/fhir+json"}
LIMITS = "http://precert.example.org/StructureDefinition/test-limited-patient"


@pytest.fixture(scope="module")
def limited_profile() -> str:
    """Base Patient with a short family name, a birth date window and a multiple-birth range."""
    sd = copy.deepcopy(profiles.registry().structure("Patient"))
    sd.update(url=LIMITS, id="test-limited-patient", derivation="constraint")
    elements = sd["snapshot"]["element"]
    at = next(i for i, el in enumerate(elements) if el["id"] == "Patient.name") + 1
    name_parts = []  # Patient.name unfolded, as a profile constraining inside it has it
    for el in copy.deepcopy(profiles.registry().structure("HumanName"))["snapshot"]["element"][1:]:
        el["id"] = "Patient.name." + el["id"].split(".", 1)[1]
        el["path"] = "Patient.name." + el["path"].split(".", 1)[1]
        name_parts.append(el)
    elements[at:at] = name_parts
    for el in elements:
        if el["id"] == "Patient.name.family":
            el["maxLength"] = 10
        elif el["id"] == "Patient.birthDate":
            el["minValueDate"], el["maxValueDate"] = "1900-01-01", "2030-12-31"
        elif el["id"] == "Patient.multipleBirth[x]":
            el["minValueInteger"], el["maxValueInteger"] = 1, 9
    profiles.registry().add(sd)
    return LIMITS


def _keys(resource: dict, profile: str) -> set[str]:
    return profiles.issue_keys(profiles.validate(resource, profile=profile))


PATIENT = {"resourceType": "Patient", "name": [{"family": "Doe"}], "birthDate": "1970-05-01", "multipleBirthInteger": 2}


def test_a_patient_within_every_limit_passes(limited_profile):
    assert _keys(PATIENT, limited_profile) == set()


@pytest.mark.parametrize("change,key", [
    ({"name": [{"family": "Montgomery-Smythe"}]}, "max-length"),
    ({"birthDate": "1899-12-31"}, "min-value"),
    ({"birthDate": "2031"}, "max-value"),
    ({"multipleBirthInteger": 0}, "min-value"),
    ({"multipleBirthInteger": 12}, "max-value"),
])
def test_each_limit_broken_once_fails_with_its_key(limited_profile, change, key):
    patient = {**PATIENT, **change}
    assert key in _keys(patient, limited_profile)


def test_limits_of_another_type_do_not_apply_to_a_boolean_choice(limited_profile):
    patient = {k: v for k, v in PATIENT.items() if k != "multipleBirthInteger"} | {"multipleBirthBoolean": True}
    assert _keys(patient, limited_profile) == set()


def test_a_string_longer_than_fhir_allows_fails_max_length():
    patient = {"resourceType": "Patient", "name": [{"family": "x" * (1024 * 1024 + 1)}]}
    outcome = profiles.validate(patient)
    assert [i["expression"] for i in profiles.errors(outcome)] == [["Patient.name[0].family"]]
    assert "max-length" in profiles.issue_keys(outcome)


# ---------------------------------------------------------------------- instance-level $validate
def _stored_patient(client) -> dict:
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": uuid.uuid4().hex}], "name": [{"family": "Stored"}]}
    r = client.post("/fhir/Patient", json=patient, headers=FHIR)
    assert r.status_code == 201, r.text
    return r.json()


def _errors(r) -> list[dict]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return [i for i in body["issue"] if i["severity"] == "error"]


def test_instance_validate_without_a_resource_validates_the_stored_one(client):
    stored = _stored_patient(client)
    assert _errors(client.get(f"/fhir/Patient/{stored['id']}/$validate")) == []
    r = client.post(f"/fhir/Patient/{stored['id']}/$validate", headers=FHIR,
                    json={"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "update"}]})
    assert _errors(r) == []


def test_instance_validate_checks_the_supplied_resource_as_an_update_of_that_instance(client):
    stored = _stored_patient(client)
    changed = {**stored, "gender": "sometimes"}
    issues = _errors(client.post(f"/fhir/Patient/{stored['id']}/$validate", json=changed, headers=FHIR))
    assert [i["expression"] for i in issues] == [["Patient.gender"]]
    other = {**stored, "id": "someone-else"}
    issues = _errors(client.post(f"/fhir/Patient/{stored['id']}/$validate", json=other, headers=FHIR))
    assert [i["details"]["coding"][0]["code"] for i in issues] == ["id-mismatch"]


def test_instance_validate_against_a_profile_given_in_the_parameters(client):
    bundle = example("hl7.fhir.us.davinci-pas-2.2.1", "Bundle-ReferralAuthorizationBundleExample.json")
    bundle.pop("id", None)
    r = client.post("/fhir/Bundle", json=bundle, headers=FHIR)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "mode", "valueCode": "profile"},
        {"name": "profile", "valueUri": "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-pas-response-bundle"}]}
    issues = _errors(client.post(f"/fhir/Bundle/{rid}/$validate", json=params, headers=FHIR))
    assert any(i["details"]["coding"][0]["code"] == "slice-cardinality" for i in issues), "a request is not a response Bundle"


def test_instance_validate_of_an_unknown_or_deleted_instance_is_404_or_410(client):
    assert client.get("/fhir/Patient/no-such-patient/$validate").status_code == 404
    stored = _stored_patient(client)
    assert client.delete(f"/fhir/Patient/{stored['id']}").status_code in (200, 204)
    r = client.get(f"/fhir/Patient/{stored['id']}/$validate")
    assert r.status_code == 410
    assert r.json()["resourceType"] == "OperationOutcome"


def test_mode_delete_says_whether_the_instance_may_be_deleted(client):
    stored = _stored_patient(client)
    params = {"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "delete"}]}
    r = client.post(f"/fhir/Patient/{stored['id']}/$validate", json=params, headers=FHIR)
    assert _errors(r) == [] and "may be deleted" in r.json()["issue"][0]["diagnostics"]
    assert client.post("/fhir/Patient/$validate", json={**params, "parameter": params["parameter"] + [
        {"name": "resource", "resource": {"resourceType": "Patient"}}]}, headers=FHIR).status_code == 400


@pytest.mark.parametrize("mode,status", [("create", 400), ("sideways", 400)])
def test_instance_validate_refuses_modes_it_cannot_answer(client, mode, status):
    stored = _stored_patient(client)
    params = {"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": mode}]}
    assert client.post(f"/fhir/Patient/{stored['id']}/$validate", json=params, headers=FHIR).status_code == status
