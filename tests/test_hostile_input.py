"""Client mistakes that used to reach the server as 500s, and the connection that must survive them."""

from __future__ import annotations

import httpx
import pytest

from tests.pas_support import FHIR, entry, pas_request, submit


def _unknown_nested_bundle() -> dict:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "NoSuchThing", "id": "x"}}],
    }


def _with_unknown_contained(resource: dict) -> dict:
    resource["contained"] = [{"resourceType": "NoSuchThing", "id": "c1"}]
    return resource


def _assert_outcome(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


def test_create_of_a_bundle_holding_an_unknown_resource_type_is_refused_as_bad_input(client):
    r = client.post("/fhir/Bundle", json=_unknown_nested_bundle(), headers=FHIR)
    _assert_outcome(r, 400)


def test_create_with_an_unknown_contained_resource_type_is_refused_as_bad_input(client):
    patient = _with_unknown_contained({"resourceType": "Patient", "name": [{"family": "X"}]})
    r = client.post("/fhir/Patient", json=patient, headers=FHIR)
    _assert_outcome(r, 400)


def test_submit_with_an_unknown_resource_type_in_the_bundle_is_refused_as_bad_input(client):
    bundle = pas_request("2.2.1")
    bundle["entry"].append({"fullUrl": "urn:uuid:0d7a4a9e-0000-4000-8000-000000000001", "resource": {"resourceType": "NoSuchThing"}})
    r = submit(client, bundle)
    _assert_outcome(r, 400)


def test_submit_with_an_unknown_contained_resource_type_is_refused_as_bad_input(client):
    bundle = pas_request("2.2.1")
    _with_unknown_contained(entry(bundle, "Claim"))
    r = submit(client, bundle)
    _assert_outcome(r, 400)


def test_inquire_with_an_unknown_resource_type_in_the_bundle_is_refused_as_bad_input(client):
    bundle = pas_request("2.2.1")
    bundle["entry"].append({"fullUrl": "urn:uuid:0d7a4a9e-0000-4000-8000-000000000002", "resource": {"resourceType": "NoSuchThing"}})
    r = client.post("/fhir/Claim/$inquire", json=bundle, headers=FHIR)
    _assert_outcome(r, 400)


@pytest.mark.parametrize("contained", [7, 1.5, True, False, "text"])
def test_next_question_with_contained_not_a_list_of_resources_is_refused_as_bad_input(client, contained):
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "questionnaire-response",
                "resource": {"resourceType": "QuestionnaireResponse", "status": "in-progress", "contained": contained},
            }
        ],
    }
    r = client.post("/fhir/Questionnaire/$next-question", json=params, headers=FHIR)
    _assert_outcome(r, 400)


@pytest.mark.parametrize("param", ["name", "name:contains", "family", "address"])
def test_a_search_string_over_a_thousand_characters_is_refused_as_bad_input(client, param):
    r = client.get("/fhir/Patient", params={param: "a" * 5000})
    _assert_outcome(r, 400)


def test_the_keep_alive_connection_survives_a_refused_request(client):
    with httpx.Client(base_url=str(client.base_url), timeout=30) as c:
        first = c.get("/fhir/metadata")
        assert first.status_code == 200
        bad = c.post("/fhir/Bundle", json=_unknown_nested_bundle(), headers=FHIR)
        assert bad.status_code == 400
        after = c.get("/fhir/metadata")
        assert after.status_code == 200
        assert after.extensions["network_stream"] is first.extensions["network_stream"], "the same connection is reused"
