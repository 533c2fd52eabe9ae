"""The staff review API (/review/api): one router, one error shape (RFC 9457 problem+json) on every
route, and who may do what: clinical reviewers, physician reviewers, and administrators kept out of
case data."""

from __future__ import annotations

import pytest

from tests.test_review_support import RATIONALE, denied_case, pended_request, physician_headers, staff_headers


@pytest.fixture(scope="module")
def reviewer(client):
    return staff_headers(client, "reviewer")


@pytest.fixture(scope="module")
def director(client):
    return staff_headers(client, "director")


@pytest.fixture(scope="module")
def admin(client):
    return staff_headers(client, "admin")


def is_problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"].startswith("https://")
    return body


def test_an_administrator_can_neither_read_nor_decide_cases(client, admin):
    _, number = pended_request(client)
    for method, path, body in (("GET", "/review/api/cases", None), ("GET", f"/review/api/cases/{number}", None),
                               ("POST", f"/review/api/cases/{number}/decision", {"action": "approve"}),
                               ("POST", f"/review/api/cases/{number}/assign", {"assignee": None}),
                               ("POST", f"/review/api/cases/{number}/extend", {"days": 2, "reason": {"code": "member-requested"}}),
                               ("POST", f"/review/api/cases/{number}/notes", {"text": "x"})):
        r = client.request(method, path, json=body, headers=admin)
        is_problem(r, 403)
    assert client.get(f"/review/cases/{number}", headers=admin).status_code == 403


@pytest.mark.parametrize("route, body", [
    ("decision", b"{nope"), ("decision", b"[1]"), ("decision", b'{"action": "launch"}'),
    ("decision", b'{"action": "modify", "items": [{"sequence": 1, "quantity": "lots"}]}'),
    ("extend", b"{nope"), ("extend", b'{"days": 3}'), ("assign", b'{"assignee": 42}'), ("notes", b"{}"),
    ("appeals", b"[]"),
])
def test_bad_bodies_get_the_same_problem_shape_on_every_route(client, reviewer, route, body):
    _, number = pended_request(client)
    r = client.post(f"/review/api/cases/{number}/{route}", content=body, headers={**reviewer, "Content-Type": "application/json"})
    is_problem(r, 400)


def test_unknown_cases_and_conflicts_are_problems_too(client, reviewer):
    is_problem(client.post("/review/api/cases/PA-NOPE/decision", json={"action": "approve"}, headers=reviewer), 404)
    is_problem(client.post("/review/api/cases/PA-NOPE/extend", json={"days": 2, "reason": {"code": "member-requested"}}, headers=reviewer), 404)
    _, number = pended_request(client)
    assert client.post(f"/review/api/cases/{number}/decision", json={"action": "approve"}, headers=reviewer).status_code == 200
    is_problem(client.post(f"/review/api/cases/{number}/decision", json={"action": "approve"}, headers=reviewer), 409)
    is_problem(client.get("/review/api/clocks"), 401)


def test_a_clinical_reviewer_cannot_deny_on_clinical_grounds(client, reviewer):
    _, number = pended_request(client)
    r = client.post(f"/review/api/cases/{number}/decision", headers=reviewer,
                    json={"action": "deny", "reason": {"code": "medical-necessity", "text": "No angiography."}, "rationale": RATIONALE})
    assert "physician reviewer" in is_problem(r, 403)["detail"]
    r = client.post(f"/review/api/cases/{number}/decision", headers=reviewer,
                    json={"action": "modify", "items": [{"sequence": 1, "quantity": 1}], "note": "one"})
    is_problem(r, 403)
    assert client.get(f"/review/api/cases/{number}", headers=reviewer).json()["status"] == "pended"


def test_a_clinical_reviewer_recommends_denial_and_the_case_stays_pended(client, reviewer):
    _, number = pended_request(client)
    r = client.post(f"/review/api/cases/{number}/decision", headers=reviewer,
                    json={"action": "recommend-denial", "reason": {"code": "medical-necessity"}, "rationale": RATIONALE})
    assert r.status_code == 200, r.text
    case = r.json()
    assert case["status"] == "pended"
    last = case["history"][-1]
    assert last["event"] == "recommend-denial" and last["as"] == "clinical reviewer (RN)" and "multivessel" in last["detail"]


def test_a_clinical_reviewer_may_deny_for_an_administrative_reason(client, reviewer):
    _, number = pended_request(client)
    r = client.post(f"/review/api/cases/{number}/decision", headers=reviewer,
                    json={"action": "deny", "reason": {"code": "not-covered", "text": "Excluded under the member's plan."}})
    assert r.status_code == 200, r.text
    item = r.json()["items"][0]
    assert item["action"] == "A3" and item["reason_class"] == "administrative" and r.json()["peer_to_peer"] is None


def test_a_physician_denial_needs_a_rationale_in_their_own_words(client, director):
    _, number = pended_request(client)
    r = client.post(f"/review/api/cases/{number}/decision", headers=director,
                    json={"action": "deny", "reason": {"code": "medical-necessity"}})
    assert "rationale" in is_problem(r, 400)["detail"]


def test_a_physician_denial_names_the_reason_policy_and_peer_to_peer_and_says_a_human_reviewed_it(client):
    _, number = denied_case(client)
    case = client.get(f"/review/api/cases/{number}", headers=physician_headers(client)).json()
    item = case["items"][0]
    assert item["action"] == "A3" and item["reason_code"] == "medical-necessity" and item["reason_class"] == "clinical"
    assert "Policy: payer rule" in item["reason"] and RATIONALE in item["reason"] and "peer-to-peer" in item["reason"]
    assert case["decided_as"] == "physician reviewer (MD)" and case["reviewed_by_human"] is True
    assert case["peer_to_peer"]["window_days"] == 14 and case["peer_to_peer"]["contact"]
    response = client.get(f"/fhir/ClaimResponse/{case['claim_response_id']}", headers={"Accept": "application/fhir+json"}).json()
    review = next(e for e in response["item"][0]["adjudication"][0]["extension"] if e["url"].endswith("extension-reviewAction"))
    reason = next(e for e in review["extension"] if e["url"] == "reasonCode")["valueCodeableConcept"]["coding"][0]
    assert reason["system"] == "https://codesystem.x12.org/external/886" and reason["code"]
    flag = next(e for e in response["extension"] if e["url"].endswith("extension-claimResponseReviewer"))
    assert flag["extension"][0]["valueBoolean"] is True
    assert "peer-to-peer" in " ".join(n["text"] for n in response["processNote"])


def test_request_for_information_records_what_was_asked_and_the_due_date(client, reviewer):
    _, number = pended_request(client)
    r = client.post(f"/review/api/cases/{number}/decision", headers=reviewer,
                    json={"action": "request-info", "needed": ["Angiography report", "11488-4"]})
    assert r.status_code == 200, r.text
    case = r.json()
    assert case["info_request"]["needed"] == ["Angiography report", "11488-4"] and case["info_request"]["due"]
    assert "asked for: Angiography report; 11488-4" in case["history"][-1]["detail"]
    task = client.get(f"/fhir/Task/{case['info_request']['task_id']}", headers={"Accept": "application/fhir+json"}).json()
    assert task["restriction"]["period"]["end"] == case["info_request"]["due"]


@pytest.fixture(scope="module")
def appeal_id(client, director):
    _, number = denied_case(client)
    r = client.post(f"/review/api/cases/{number}/appeals", headers=director, json={"reason": "The member has triple-vessel disease."})
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.mark.parametrize("body, field", [
    ({"days": "3", "reason": {"code": "member-requested"}}, "days"),
    ({"days": 0, "reason": {"code": "member-requested"}}, "days"),
    ({"days": 3.5, "reason": {"code": "member-requested"}}, "days"),
    ({"days": 3, "reason": "member-requested"}, "reason"),
    ({"days": 3, "reason": {"code": "lunch"}}, "reason.code"),
    ({"days": 3, "reason": {"code": "other", "text": "x" * 1001}}, "reason.text"),
    ({"days": 3}, "reason"),
])
def test_an_extension_body_is_typed_days_and_a_known_reason(client, reviewer, body, field):
    _, number = pended_request(client)
    detail = is_problem(client.post(f"/review/api/cases/{number}/extend", json=body, headers=reviewer), 400)["detail"]
    assert field in detail
    assert client.get(f"/review/api/cases/{number}", headers=reviewer).json()["history"][-1]["event"] != "extended"


@pytest.mark.parametrize("body", [{"text": ""}, {"text": "   "}, {"text": 42}, {"text": "x" * 4001}, {"note": "wrong field"}])
def test_a_note_body_needs_text_of_a_sensible_length(client, reviewer, body):
    _, number = pended_request(client)
    assert is_problem(client.post(f"/review/api/cases/{number}/notes", json=body, headers=reviewer), 400)["detail"].startswith("text: a note needs some text")


@pytest.mark.parametrize("body, field", [
    ({}, "reason"), ({"reason": ""}, "reason"), ({"reason": "x" * 2001}, "reason"),
    ({"reason": "r", "appellant": "neighbour"}, "appellant"), ({"reason": "r", "stage": "external-review"}, "stage"),
    ({"reason": "r", "urgency": "asap"}, "urgency"), ({"reason": "r", "items": ["1"]}, "items"), ({"reason": "r", "items": []}, "items"),
])
def test_an_appeal_body_is_typed(client, reviewer, body, field):
    _, number = denied_case(client)
    detail = is_problem(client.post(f"/review/api/cases/{number}/appeals", json=body, headers=reviewer), 400)["detail"]
    assert field in detail
    assert client.get(f"/review/api/cases/{number}", headers=reviewer).json()["status"] == "decided"


def test_appeal_stage_bodies_are_typed(client, director, appeal_id):
    is_problem(client.post(f"/review/api/appeals/{appeal_id}/decision", json={"decision": "maybe"}, headers=director), 400)
    is_problem(client.post(f"/review/api/appeals/{appeal_id}/decision", json={"decision": "upheld", "note": 7}, headers=director), 400)
    is_problem(client.post(f"/review/api/appeals/{appeal_id}/escalate", json={"stage": "supreme-court"}, headers=director), 400)
    is_problem(client.post(f"/review/api/appeals/{appeal_id}/close", json={"note": ["x"]}, headers=director), 400)
    assert client.get(f"/review/api/appeals/{appeal_id}", headers=director).json()["status"] == "open"


def test_a_well_typed_extension_and_note_are_accepted(client, reviewer):
    _, number = pended_request(client)
    r = client.post(f"/review/api/cases/{number}/extend", headers=reviewer,
                    json={"days": 5, "reason": {"code": "information-requested", "text": "  waiting for the angiogram  "}})
    assert r.status_code == 200, r.text
    assert r.json()["extension"]["days"] == 5 and r.json()["extension"]["reason"].endswith("waiting for the angiogram")
    r = client.post(f"/review/api/cases/{number}/notes", headers=reviewer, json={"text": "Called the surgeon's office."})
    assert r.status_code == 201 and r.json()["notes"][-1]["text"] == "Called the surgeon's office."


def test_the_case_list_carries_the_queue_columns(client):
    """Member, age, plan and requesting provider, as the workbench queue shows them."""
    body, number = pended_request(client)
    reviewer = staff_headers(client, "reviewer")
    r = client.get("/review/api/cases", params={"status": "pended", "limit": 500}, headers=reviewer)
    assert r.status_code == 200, r.text
    listed = next(c for c in r.json()["cases"] if c["id"] == number)
    bundle_patient = next(e["resource"] for e in body["entry"] if e["resource"]["resourceType"] == "Patient")
    family = bundle_patient["name"][0]["family"]
    assert family in listed["member"]
    assert isinstance(listed["age"], int) and listed["age"] > 0
    assert listed["provider"]
