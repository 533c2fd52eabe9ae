"""The PAS information-request Task sent with a pend for documentation, per version answered."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fhir.resources.R4B.bundle import Bundle

from tests.pas_support import CPT, Receiver, claim_response, pas_request, submit
from tests.test_pas_inquire_update import inquiry_for
from tests.test_pas_review_notify import SURGICAL, case_number, events_for, npi, quick_retries, subscribe  # noqa: F401
from tests.test_validator_responses import conformance_errors

SD = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"


def references(value, out=None) -> list[str]:
    out = [] if out is None else out
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            out.append(value["reference"])
        for v in value.values():
            references(v, out)
    elif isinstance(value, list):
        for v in value:
            references(v, out)
    return out


def pended(client, version: str) -> tuple[dict, dict]:
    body = submit(client, pas_request(version, code=(CPT, "70551"), member="PCM000004")).json()
    Bundle.model_validate(body)
    task = next(e["resource"] for e in body["entry"] if e["resource"]["resourceType"] == "Task")
    return body, task


def input_codes(task: dict) -> list[str]:
    return [i["type"]["coding"][0]["code"] for i in task["input"]]


def test_a_2_2_1_task_uses_service_line_numbers_and_questionnaire_context(client):
    _, task = pended(client, "2.2.1")
    assert input_codes(task)[0] == "payer-url"
    assert "questionnaire-context" in input_codes(task) and "questionnaires-needed" not in input_codes(task)
    context = next(i for i in task["input"] if i["type"]["coding"][0]["code"] == "questionnaire-context")
    assert context["extension"][0] == {"url": SD + "extension-serviceLineNumber", "valuePositiveInt": 1}
    assert isinstance(context["valueString"], str)


def test_a_2_0_1_task_uses_pa_line_numbers_and_questionnaires_needed(client):
    _, task = pended(client, "2.0.1")
    assert "questionnaires-needed" in input_codes(task) and "questionnaire-context" not in input_codes(task)
    needed = next(i for i in task["input"] if i["type"]["coding"][0]["code"] == "questionnaires-needed")
    assert needed["extension"][0] == {"url": SD + "extension-paLineNumber", "valueInteger": 1}
    assert needed["valueIdentifier"]["value"].startswith("http")


def test_the_task_says_why_and_by_when(client):
    _, task = pended(client, "2.2.1")
    assert task["status"] == "requested" and task["intent"] == "order"
    assert "documentation" in task["statusReason"]["text"].lower()
    assert task["restriction"]["period"]["end"]
    assert task["code"]["coding"][0]["code"] == "attachment-request-questionnaire"
    assert task["reasonCode"]["coding"][0]["code"] == "priorAuthorization"
    assert task["owner"]["identifier"]["value"] and task["requester"]["identifier"]["value"]


def test_every_reference_of_the_task_and_response_resolves_inside_the_bundle(client):
    body, task = pended(client, "2.2.1")
    full_urls = {e["fullUrl"] for e in body["entry"]}
    assert task["for"]["reference"] in full_urls
    assert task["reasonReference"]["reference"] in full_urls
    assert task["owner"]["reference"] in full_urls
    # Relative references resolve against the fullUrl base of the entries (FHIR Bundle rules).
    dangling = [r for r in references(body) if r not in full_urls and not any(u.endswith("/" + r) for u in full_urls)]
    assert dangling == []


def test_the_task_can_be_read_by_the_provider(client):
    body, task = pended(client, "2.2.1")
    r = client.get(f"/fhir/Task/{task['id']}")
    assert r.status_code == 200
    assert r.json()["input"] == task["input"]
    assert r.json()["for"]["reference"].startswith("Patient/")


def test_an_approval_has_no_task(client):
    body = submit(client, pas_request("2.2.1", code=(CPT, "99213"))).json()
    assert claim_response(body)["outcome"] == "complete"
    assert not [e for e in body["entry"] if e["resource"]["resourceType"] == "Task"]


# ---------------------------------------------------------------------- a reviewer's request for information
@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def _tasks_of(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task"]


@pytest.mark.parametrize("version", ["2.0.1", "2.2.1"])
def test_a_reviewers_request_for_information_reaches_the_provider_as_the_pas_task(client, receiver, version):
    """What was asked (documents by LOINC code or in words), for which lines and by when: in the
    Task of the case's PAS version, in the answer to $inquire and in the notification."""
    org = npi()
    subscribe(client, receiver, org)
    request = pas_request(version, SURGICAL, provider_npi=org)
    body = submit(client, request).json()
    number = case_number(body)
    asked = ["Operative plan and cardiology consult note", "11506-3"]
    r = client.post(f"/review/api/cases/{number}/decision", json={"action": "request-info", "needed": asked})
    assert r.status_code == 200, r.text
    note = receiver.wait_for(events_for(receiver, number))[0]
    pushed = next(e["resource"] for e in note["entry"][1:] if e["resource"]["resourceType"] == "Bundle")
    [task] = _tasks_of(pushed)
    needed = [i for i in task["input"] if i["type"]["coding"][0]["code"] == "attachments-needed"]
    assert [i["valueCodeableConcept"] for i in needed] == [{"text": asked[0]}, {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]}]
    line = SD + ("extension-paLineNumber" if version == "2.0.1" else "extension-serviceLineNumber")
    assert all(i["extension"][0]["url"] == line for i in needed)
    due = datetime.fromisoformat(task["restriction"]["period"]["end"].replace("Z", "+00:00"))
    assert timedelta(days=13) < due - datetime.now(timezone.utc) <= timedelta(days=14)
    assert conformance_errors(task, None, f"hl7.fhir.us.davinci-pas-{version}") == []
    inquiry = inquiry_for(request, version)
    if version == "2.0.1":
        inquiry["meta"] = {"profile": [SD + "profile-pas-inquiry-request-bundle|2.0.1"]}
    answer = submit(client, inquiry, "/fhir/Claim/$inquire").json()
    found = [answer] if answer["resourceType"] == "Bundle" else [p["resource"] for p in answer["parameter"]]
    assert task["id"] in [t["id"] for b in found for t in _tasks_of(b)]
    stored = client.get(f"/fhir/Task/{task['id']}").json()
    assert stored["status"] == "requested" and stored["reasonReference"]["reference"].startswith("Claim/")


@pytest.mark.parametrize("version", ["2.0.1", "2.2.1"])
def test_a_document_asked_for_with_a_loinc_modifier_is_signalled_as_the_version_defines(client, version):
    """2.2.1: the attachments-needed input carries the LOINC attachment modifier as contentModifier;
    2.0.1 defines contentModifier only on a CommunicationRequest payload, so the Task says it in words."""
    body = submit(client, pas_request(version, SURGICAL, provider_npi=npi())).json()
    number = case_number(body)
    asked = [{"code": "11506-3", "modifier": "18804-5", "text": "Most recent progress note"}]
    r = client.post(f"/review/api/cases/{number}/decision", json={"action": "request-info", "needed": asked, "due_days": 5})
    assert r.status_code == 200, r.text
    info = client.get(f"/review/api/cases/{number}").json()["info_request"]
    task = client.get(f"/fhir/Task/{info['task_id']}").json()
    [needed] = [i for i in task["input"] if i["type"]["coding"][0]["code"] == "attachments-needed"]
    assert needed["valueCodeableConcept"]["coding"] == [{"system": "http://loinc.org", "code": "11506-3"}]
    modifiers = [e for e in needed["extension"] if e["url"] == SD + "extension-contentModifier"]
    if version == "2.2.1":
        assert modifiers[0]["valueCodeableConcept"]["coding"][0]["code"] == "18804-5"
    else:
        assert modifiers == [] and "18804-5" in needed["valueCodeableConcept"]["text"]
    due = datetime.fromisoformat(task["restriction"]["period"]["end"].replace("Z", "+00:00"))
    assert timedelta(days=4) < due - datetime.now(timezone.utc) <= timedelta(days=5)
    assert conformance_errors(task, None, f"hl7.fhir.us.davinci-pas-{version}") == []


def test_a_request_for_information_with_a_malformed_item_is_refused(client):
    body = submit(client, pas_request("2.2.1", SURGICAL, provider_npi=npi())).json()
    r = client.post(f"/review/api/cases/{case_number(body)}/decision",
                    json={"action": "request-info", "needed": [{"code": "not-loinc"}]})
    assert r.status_code == 400
