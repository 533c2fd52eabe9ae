"""The additional-documentation loop: a pend for documentation, the Task, $submit-attachment,
re-adjudication and the notification, with a real loopback subscriber."""

from __future__ import annotations

import base64
import uuid

import orjson
import pytest

from tests.pas_support import CPT, FHIR, Receiver, actions, claim_response, entry, pas_request, submit
from tests.test_pas_dtr import examples, questionnaire_response
from tests.test_pas_review_notify import events_for, npi, subscribe


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def pended_for_documentation(client, org_npi: str, member: str = "PCM000006") -> tuple[dict, dict, dict]:
    request = pas_request("2.2.1", code=(CPT, "70551"), member=member, provider_npi=org_npi)
    body = submit(client, request).json()
    assert actions(body) == {1: "A4"}
    task = next(e["resource"] for e in body["entry"] if e["resource"]["resourceType"] == "Task")
    return request, body, task


def attachment(request: dict, task: dict, content: dict, lines=(1,)) -> dict:
    coverage = entry(request, "Coverage")
    member = coverage["identifier"][0]
    return {"resourceType": "Parameters", "parameter": [
        {"name": "trackingId", "valueIdentifier": task["identifier"][0]},
        {"name": "attachTo", "valueCode": "preauthorization"},
        {"name": "memberId", "valueIdentifier": {"system": member["system"], "value": member["value"]}},
        {"name": "attachment", "part": [*({"name": "lineItem", "valueString": str(n)} for n in lines),
                                        {"name": "content", "resource": content}]},
    ]}


def send(client, params: dict):
    return client.post("/fhir/$submit-attachment", content=orjson.dumps(params), headers=FHIR)


def met_answers() -> dict:
    return questionnaire_response("advanced-imaging", examples("advanced-imaging")["met"])


def test_answers_sent_for_the_task_certify_the_request_and_notify(client, receiver):
    org = npi()
    subscribe(client, receiver, org)
    request, body, task = pended_for_documentation(client, org)
    r = send(client, attachment(request, task, met_answers()))
    assert r.status_code == 200, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    cr = client.get(f"/fhir/ClaimResponse/{claim_response(body)['id']}").json()
    codes = [s["valueCodeableConcept"]["coding"][0]["code"] for s in cr["item"][0]["adjudication"][0]["extension"][0]["extension"] if s["url"].endswith("reviewActionCode")]
    assert codes == ["A1"] and cr["preAuthRef"]
    note = receiver.wait_for(events_for(receiver, claim_response(body)["id"]))[0]
    assert "A1" in orjson.dumps(note).decode()
    assert client.get(f"/fhir/Task/{task['id']}").json()["status"] == "completed"


def test_an_attachment_for_an_unknown_tracking_id_is_404_and_changes_nothing(client):
    request, body, task = pended_for_documentation(client, npi())
    params = attachment(request, task, met_answers())
    params["parameter"][0]["valueIdentifier"] = {"system": "http://precert.example.org/sid/case", "value": "PA-" + uuid.uuid4().hex}
    r = send(client, params)
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"


def test_an_attachment_for_another_member_is_404(client):
    request, body, task = pended_for_documentation(client, npi())
    params = attachment(request, task, met_answers())
    params["parameter"][2]["valueIdentifier"] = {"system": "urn:other", "value": "someone-else"}
    assert send(client, params).status_code == 404


def test_an_attachment_for_a_line_not_waiting_is_422(client):
    request, body, task = pended_for_documentation(client, npi())
    r = send(client, attachment(request, task, met_answers(), lines=(7,)))
    assert r.status_code == 422
    cr = client.get(f"/fhir/ClaimResponse/{claim_response(body)['id']}").json()
    assert cr["outcome"] == "complete" and "preAuthRef" not in cr


def test_a_duplicate_attachment_is_409(client):
    request, body, task = pended_for_documentation(client, npi())
    incomplete = questionnaire_response("advanced-imaging", {})
    assert send(client, attachment(request, task, incomplete)).status_code == 200
    assert send(client, attachment(request, task, incomplete)).status_code == 409


def test_a_late_attachment_for_a_decided_request_is_409(client):
    request, body, task = pended_for_documentation(client, npi())
    assert send(client, attachment(request, task, met_answers())).status_code == 200
    other = met_answers()
    assert send(client, attachment(request, task, other)).status_code == 409


def test_a_malformed_submission_is_400(client):
    assert send(client, {"resourceType": "Parameters", "parameter": [{"name": "attachTo", "valueCode": "claim"}]}).status_code == 400
    assert send(client, {"resourceType": "Patient"}).status_code == 400


def test_attachments_are_matched_only_within_the_callers_organization(harness, http):
    def headers(org_npi: str, scope: str) -> dict:
        cid, key = harness.register(npi=org_npi, scopes=scope)
        return {**FHIR, "Authorization": f"Bearer {harness.token(cid, key, scope)}"}

    clinic = headers("1234567893", "system/Claim.cr system/ClaimResponse.rs")
    hospital = headers("1245319599", "system/Claim.cr system/ClaimResponse.rs")
    request = pas_request("2.2.1", code=(CPT, "70551"), member="PCM000008")
    body = http.post("/fhir/Claim/$submit", content=orjson.dumps(request), headers=clinic).json()
    task = next(e["resource"] for e in body["entry"] if e["resource"]["resourceType"] == "Task")
    params = orjson.dumps(attachment(request, task, met_answers()))
    assert http.post("/fhir/$submit-attachment", content=params, headers=hospital).status_code == 404
    assert http.post("/fhir/$submit-attachment", content=params, headers=clinic).status_code == 200


def document_reference(content_type: str, data: bytes, title: str) -> dict:
    return {"resourceType": "DocumentReference", "id": uuid.uuid4().hex[:12], "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]},
            "content": [{"attachment": {"contentType": content_type, "data": base64.b64encode(data).decode(), "title": title}}]}


def review_action_codes(cr: dict) -> list[str]:
    return [s["valueCodeableConcept"]["coding"][0]["code"] for s in cr["item"][0]["adjudication"][0]["extension"][0]["extension"]
            if s["url"].endswith("reviewActionCode")]


def test_dtr_answers_sent_inside_a_document_reference_certify_the_line(client, receiver):
    org = npi()
    subscribe(client, receiver, org)
    request, body, task = pended_for_documentation(client, org)
    document = document_reference("application/fhir+json", orjson.dumps(met_answers()), "DTR answers")
    r = send(client, attachment(request, task, document))
    assert r.status_code == 200, r.text
    cr = client.get(f"/fhir/ClaimResponse/{claim_response(body)['id']}").json()
    assert review_action_codes(cr) == ["A1"] and cr["preAuthRef"]
    assert client.get(f"/fhir/Task/{task['id']}").json()["status"] == "completed"


def test_a_document_no_rule_can_read_is_received_and_the_line_goes_to_a_clinician_with_a_notification(client, receiver):
    """The request stays pended, but it changed (documentation received, now for clinical review):
    the ClaimResponse says so, the Task is answered and the submitter is notified."""
    org = npi()
    subscribe(client, receiver, org)
    request, body, task = pended_for_documentation(client, org)
    document = document_reference("application/pdf", b"%PDF-1.4 progress note", "Progress note 2026-11-30")
    r = send(client, attachment(request, task, document))
    assert r.status_code == 200, r.text
    assert "still pended" in r.json()["issue"][0]["diagnostics"]
    cr = client.get(f"/fhir/ClaimResponse/{claim_response(body)['id']}").json()
    assert review_action_codes(cr) == ["A4"]
    assert any("Documentation received (Progress note 2026-11-30)" in n["text"] for n in cr["processNote"])
    assert "communicationRequest" not in cr, "nothing is asked of the provider any more"
    assert client.get(f"/fhir/Task/{task['id']}").json()["status"] == "completed"
    note = receiver.wait_for(events_for(receiver, claim_response(body)["id"]))[0]
    pushed = next(e["resource"] for e in note["entry"][1:] if e.get("resource", {}).get("resourceType") == "Bundle")
    assert "Documentation received" in orjson.dumps(pushed).decode()
    case = claim_response(body)["item"][0]
    number = next(e["valueString"] for e in case["extension"] if e["url"].endswith("administrationReferenceNumber")).rsplit("-", 1)[0]
    queue = client.get("/review/api/cases", params={"status": "pended"}).json()
    assert number in [c["id"] for c in queue["cases"]]
