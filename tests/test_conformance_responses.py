"""DTR and PAS answers checked against the profiles the IGs say they must meet: zero errors is the bar.

Each test drives the real server the way a client would and validates what comes back with
Precert's profile validator (``conformance_errors`` prints every error it finds).
"""

from __future__ import annotations

import pytest

from server.dtr.examples import home_oxygen_request, package_request, service_request
from tests.pas_support import CPT, pas_request, submit
from tests.test_dtr_adaptive import ADAPTIVE, CATALOG, NEXT, answer_open_questions, start
from tests.test_dtr_package import bundles, post
from tests.test_pas_inquire_update import inquiry_for
from tests.test_validator_responses import conformance_errors

DTR = "hl7.fhir.us.davinci-dtr-2.0.1"
DTR_SD = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/"
PAS_SD = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"


def check(resource: dict, profile: str, package: str | None) -> None:
    errors = conformance_errors(resource, profile, package)
    print("\n".join(errors))
    assert errors == []


def package_bundle(client) -> dict:
    r = post(client, home_oxygen_request())
    assert r.status_code == 200, r.text
    [bundle] = bundles(r.json())
    return bundle


def test_questionnaire_package_bundle_meets_the_dtr_package_bundle_profile(client):
    check(package_bundle(client), DTR_SD + "DTR-QPackageBundle", DTR)


@pytest.mark.parametrize("rtype,profile", [
    ("Questionnaire", DTR_SD + "dtr-std-questionnaire"),
    ("Library", None),  # DTR 2.0.1 defines no Library or ValueSet profile: base type and claimed profiles
    ("ValueSet", None),
    ("QuestionnaireResponse", DTR_SD + "dtr-questionnaireresponse"),
])
def test_questionnaire_package_entries_meet_their_dtr_profiles(client, rtype, profile):
    found = [e["resource"] for e in package_bundle(client)["entry"] if e["resource"]["resourceType"] == rtype]
    assert found
    for resource in found:
        check(resource, profile, DTR)


@pytest.mark.parametrize("category", ADAPTIVE[:1])
def test_adaptive_search_questionnaire_meets_the_dtr_adaptive_search_profile(client, category):
    search, _ = start(client, category)
    check(search, DTR_SD + "dtr-questionnaire-adapt-search", DTR)


@pytest.mark.parametrize("category", ADAPTIVE[:1])
def test_next_question_output_meets_the_dtr_questionnaire_response_profile(client, category):
    """Driven as a DTR client does: the package asked for with the order, each answer marked as the user's."""
    t = CATALOG.templates[category]
    r = post(client, package_request(service_request("70551", "MRI brain"), questionnaires=[t.adaptive_url]))
    assert r.status_code == 200, r.text
    [bundle] = bundles(r.json())
    qr = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "QuestionnaireResponse")
    user = {"url": DTR_SD + "information-origin", "extension": [{"url": "source", "valueCode": "manual"},
                                                                 {"url": "author", "extension": [
                {"url": "role", "valueCodeableConcept": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/practitioner-role", "code": "doctor"}]}},
                {"url": "practitioner", "valueReference": {"reference": "Practitioner/prac-001"}}]}]}
    answers = t.examples["met"]
    for _ in range(40):
        before = {i["linkId"] for i in qr.get("item", [])}
        answer_open_questions(qr, category, answers)
        for item in qr.get("item", []):
            if item["linkId"] not in before:
                for a in item.get("answer", []):
                    a.setdefault("extension", []).append(user)
        r = post(client, qr, NEXT)
        assert r.status_code == 200, r.text
        qr = r.json()
        check(qr, DTR_SD + "dtr-questionnaireresponse", DTR)
        if qr["status"] == "completed":
            return
    raise AssertionError("the adaptive form never completed")


@pytest.mark.parametrize("version", ["2.0.1", "2.2.1"])
def test_inquiry_response_bundle_meets_the_pas_inquiry_response_profile(client, version):
    request = pas_request(version)
    assert submit(client, request).status_code == 200
    inquiry = inquiry_for(request, version)
    if version == "2.0.1":
        inquiry["meta"] = {"profile": [PAS_SD + "profile-pas-inquiry-request-bundle|2.0.1"]}
    r = submit(client, inquiry, "/fhir/Claim/$inquire")
    assert r.status_code == 200, r.text
    body = r.json()
    found = [body] if body["resourceType"] == "Bundle" else [p["resource"] for p in body["parameter"] if p["name"] == "return"]
    assert found
    for bundle in found:
        check(bundle, PAS_SD + "profile-pas-inquiry-response-bundle", f"hl7.fhir.us.davinci-pas-{version}")


@pytest.mark.parametrize("version", ["2.0.1", "2.2.1"])
def test_pas_information_request_task_meets_its_pas_profile(client, version):
    body = submit(client, pas_request(version, code=(CPT, "70551"), member="PCM000004")).json()
    tasks = [e["resource"] for e in body["entry"] if e["resource"]["resourceType"] == "Task"]
    assert tasks and all(t.get("meta", {}).get("profile") for t in tasks)
    for task in tasks:
        check(task, None, f"hl7.fhir.us.davinci-pas-{version}")  # against the PAS Task profile it claims
