"""Appeals of denied requests: first level, peer-to-peer, second level and external review, each
with its own clock, decision and outcome, linked to the original request; an overturned denial
updates the decision and the ClaimResponse and notifies the submitter."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import httpx
import pytest

from server.review import clock
from tests.pas_support import FHIR, Receiver, actions, claim_response, notification_type, pas_subscription
from tests.test_review_support import RATIONALE, cases_collection, denied_case, npi, pended_request, physician_name, staff_headers


@pytest.fixture
def time_machine():
    yield clock
    clock.reset()


@pytest.fixture(scope="module")
def reviewer(client):
    return staff_headers(client, "reviewer")


@pytest.fixture(scope="module")
def director(client):
    return staff_headers(client, "director")


@pytest.fixture(scope="module")
def admin(client):
    return staff_headers(client, "admin")


@pytest.fixture(scope="module")
def second_director(client, admin):
    """Another medical director, for the stages the first one may not decide twice."""
    name = f"md-{uuid.uuid4().hex[:6]}"
    password = "second-director-" + uuid.uuid4().hex[:8]
    r = client.post("/admin/auth/staff", headers=admin, json={"username": name, "password": password, "roles": ["medical-director"], "display": "Dr Second"})
    assert r.status_code == 201, r.text
    r = httpx.post(str(client.base_url).rstrip("/") + "/staff/login", json={"username": name, "password": password})
    return {"Authorization": f"Bearer {r.json()['token']}"}


def parse(instant: str) -> datetime:
    return datetime.fromisoformat(instant.replace("Z", "+00:00"))


def file(client, headers, number, **body):
    return client.post(f"/review/api/cases/{number}/appeals", headers=headers,
                       json={"reason": "Angiography report now attached.", **body})


def decide(client, headers, appeal_id, decision, note="Reviewed the new documentation."):
    return client.post(f"/review/api/appeals/{appeal_id}/decision", headers=headers, json={"decision": decision, "note": note})


def escalate(client, headers, appeal_id, stage):
    return client.post(f"/review/api/appeals/{appeal_id}/escalate", headers=headers, json={"stage": stage})


def test_an_appeal_through_every_stage_overturned_at_external_review(client, reviewer, director, second_director, admin,
                                                                    time_machine, mongodb_uri, settings):
    receiver = Receiver().start()
    try:
        org = npi()
        assert client.post("/fhir/Subscription", json=pas_subscription(receiver.url, org), headers=FHIR).status_code == 201
        body, number = denied_case(client, reviewer, org)
        start = clock.now().replace(microsecond=0)
        time_machine.freeze(start)

        # First level: 30 days; decided by a medical director who took no part in the denial.
        r = file(client, director, number, appellant="provider")
        assert r.status_code == 201, r.text
        appeal = r.json()
        aid = appeal["id"]
        assert r.headers["location"] == f"/review/api/appeals/{aid}"
        assert appeal["case_id"] == number and appeal["items"] == [1] and appeal["status"] == "open"
        assert appeal["stage"] == "first-level" and parse(appeal["stages"][0]["due"]) == start + timedelta(days=30)
        assert appeal["clock"] == "on-time" and appeal["denied_by"] == physician_name(client)
        assert decide(client, reviewer, aid, "overturned").status_code == 403  # a reviewer cannot decide appeals
        time_machine.advance(timedelta(days=3))
        r = decide(client, director, aid, "upheld", "No new evidence of multivessel disease.")
        assert r.status_code == 200, r.text
        appeal = r.json()
        assert appeal["stages"][0]["decision"] == "upheld" and appeal["stages"][0]["by"] == "director"
        assert appeal["status"] == "open" and appeal["next_stages"] == ["peer-to-peer", "second-level", "external-review"]

        # Peer-to-peer: 5 days.
        appeal = escalate(client, reviewer, aid, "peer-to-peer").json()
        assert appeal["stage"] == "peer-to-peer" and parse(appeal["stages"][1]["due"]) == start + timedelta(days=8)
        assert decide(client, director, aid, "upheld", "Discussed with the surgeon; criteria still not met.").status_code == 200

        # Second level: 30 days; the director who decided the first level may not decide it.
        appeal = escalate(client, reviewer, aid, "second-level").json()
        assert parse(appeal["stages"][2]["due"]) == start + timedelta(days=33)
        refused = decide(client, director, aid, "overturned")
        assert refused.status_code == 403 and "took no part" in refused.json()["detail"]
        assert decide(client, second_director, aid, "upheld", "Agree with the first-level decision.").status_code == 200

        # External review: 45 days; the independent organization's decision, recorded by an administrator.
        appeal = escalate(client, reviewer, aid, "external-review").json()
        assert parse(appeal["stages"][3]["due"]) == start + timedelta(days=48)
        snapshot = client.get("/review/api/clocks", headers=admin).json()
        stage = next(s for s in snapshot["appeals"]["stages"] if s["id"] == aid)
        assert stage["stage"] == "external-review" and stage["clock"] == "on-time"
        r = decide(client, admin, aid, "overturned", "IRO: surgery is medically necessary.")
        assert r.status_code == 200, r.text
        appeal = r.json()
        assert appeal["status"] == "closed" and appeal["outcome"] == "overturned" and appeal["clock"] == "stopped"
        assert [s["decision"] for s in appeal["stages"]] == ["upheld", "upheld", "upheld", "overturned"]
        assert [s["stage"] for s in appeal["stages"]] == ["first-level", "peer-to-peer", "second-level", "external-review"]

        # The request is now certified, the ClaimResponse says so, and the submitter was told.
        case = client.get(f"/review/api/cases/{number}", headers=reviewer).json()
        assert case["status"] == "decided" and case["items"][0]["action"] == "A1" and case["auth_number"]
        events = [h["event"] for h in case["history"]]
        assert events.count("appeal-stage") == 3 and "appeal-filed" in events and "overturned" in events and "appeal-closed" in events
        cr = client.get(f"/fhir/ClaimResponse/{case['claim_response_id']}", headers=FHIR).json()
        assert cr["meta"]["versionId"] == "3" and cr["preAuthRef"] == case["auth_number"]
        def certified(b):  # the notification carrying the re-issued ClaimResponse, not the earlier denial's
            bundles = [e["resource"] for e in b["entry"][1:] if e.get("resource", {}).get("resourceType") == "Bundle"]
            return (notification_type(b) == "event-notification" and claim_response(body)["id"] in str(b)
                    and any(actions(r) == {1: "A1"} for r in bundles))
        note = receiver.wait_for(certified)[0]
        response = next(e["resource"] for e in note["entry"][1:] if e["resource"]["resourceType"] == "Bundle")
        assert actions(response) == {1: "A1"}
        # The first determination is kept for the CMS-0057-F figures.
        stored = cases_collection(mongodb_uri, settings).find_one({"_id": number})
        assert stored["original_decisions"][0]["action"] == "A3" and stored["overturned"] and stored["appeal"] == aid
        assert stored["decided"] < stored["overturned"]
        assert escalate(client, reviewer, aid, "external-review").status_code == 409
        assert decide(client, admin, aid, "upheld").status_code == 409
    finally:
        receiver.stop()


def test_a_denial_overturned_at_the_first_level(client, reviewer, director):
    _, number = denied_case(client, reviewer)
    aid = file(client, reviewer, number, appellant="member").json()["id"]
    r = decide(client, director, aid, "overturned", "")
    assert r.status_code == 200 and r.json()["outcome"] == "overturned"
    case = client.get(f"/review/api/cases/{number}", headers=reviewer).json()
    assert case["items"][0]["action"] == "A1" and "Certified on appeal" in case["items"][0]["reason"]
    assert file(client, reviewer, number).status_code == 409  # nothing denied any more


def test_external_review_upholding_the_denial_is_final(client, reviewer, director, second_director, admin):
    _, number = denied_case(client, reviewer)
    aid = file(client, reviewer, number, stage="peer-to-peer").json()["id"]
    assert decide(client, director, aid, "upheld").status_code == 200
    assert escalate(client, reviewer, aid, "external-review").status_code == 200  # later stages may be skipped
    r = decide(client, admin, aid, "upheld", "IRO upheld the denial.")
    assert r.status_code == 200
    appeal = r.json()
    assert appeal["status"] == "closed" and appeal["outcome"] == "upheld" and appeal["next_stages"] == []
    assert client.get(f"/review/api/cases/{number}", headers=reviewer).json()["items"][0]["action"] == "A3"
    assert file(client, reviewer, number).status_code == 201  # a closed appeal does not block a new one


def test_an_appeal_is_closed_when_the_denial_stands_or_withdrawn(client, reviewer, director):
    _, number = denied_case(client, reviewer)
    aid = file(client, reviewer, number).json()["id"]
    r = client.post(f"/review/api/appeals/{aid}/close", headers=reviewer, json={})
    assert r.status_code == 400 and "withdrawn" in r.json()["detail"]
    r = client.post(f"/review/api/appeals/{aid}/close", headers=reviewer, json={"note": "Provider withdrew the appeal by phone."})
    assert r.status_code == 200 and r.json()["outcome"] == "withdrawn"
    assert client.post(f"/review/api/appeals/{aid}/close", headers=reviewer, json={"note": "again"}).status_code == 409
    aid = file(client, reviewer, number).json()["id"]
    decide(client, director, aid, "upheld")
    r = client.post(f"/review/api/appeals/{aid}/close", headers=reviewer, json={})
    assert r.status_code == 200 and r.json()["outcome"] == "upheld"
    listed = client.get("/review/api/appeals", params={"status": "closed"}, headers=reviewer).json()["appeals"]
    assert aid in [a["id"] for a in listed]
    assert aid not in [a["id"] for a in client.get("/review/api/appeals", headers=reviewer).json()["appeals"]]


def test_only_a_denied_request_can_be_appealed_and_once_at_a_time(client, reviewer):
    _, pended = pended_request(client)
    r = file(client, reviewer, pended)
    assert r.status_code == 409 and "denied item" in r.json()["detail"]
    _, approved = pended_request(client)
    client.post(f"/review/api/cases/{approved}/decision", headers=reviewer, json={"action": "approve"})
    assert file(client, reviewer, approved).status_code == 409
    _, denied = denied_case(client, reviewer)
    assert file(client, reviewer, denied).status_code == 201
    again = file(client, reviewer, denied)
    assert again.status_code == 409 and "already has an open appeal" in again.json()["detail"]
    assert file(client, reviewer, "PA-NOPE").status_code == 404


def test_appeal_stage_clocks_for_an_expedited_appeal(client, reviewer, director, time_machine):
    _, number = denied_case(client, reviewer)
    start = clock.now().replace(microsecond=0)
    time_machine.freeze(start)
    appeal = file(client, reviewer, number, urgency="expedited").json()
    assert appeal["urgency"] == "expedited" and parse(appeal["stages"][0]["due"]) == start + timedelta(hours=72)
    time_machine.advance(timedelta(hours=50))
    assert client.get(f"/review/api/appeals/{appeal['id']}", headers=reviewer).json()["clock"] == "due-soon"
    time_machine.advance(timedelta(hours=23))
    got = client.get(f"/review/api/appeals/{appeal['id']}", headers=reviewer).json()
    assert got["clock"] == "overdue" and got["remaining_seconds"] == -3600
    snapshot = client.get("/review/api/clocks", headers=reviewer).json()["appeals"]
    assert snapshot["overdue"] >= 1 and appeal["id"] in [s["id"] for s in snapshot["stages"]]
    decide(client, director, appeal["id"], "upheld")
    p2p = escalate(client, reviewer, appeal["id"], "peer-to-peer").json()
    assert parse(p2p["stages"][1]["due"]) == start + timedelta(hours=73 + 24)


@pytest.mark.parametrize("body, status, words", [
    ({}, 400, "'reason' is required"),
    ({"reason": "   "}, 400, "'reason' is required"),
    ({"reason": 7}, 400, "strings"),
    ({"reason": "x", "appellant": "lawyer"}, 400, "appellant"),
    ({"reason": "x", "stage": "second-level"}, 400, "starts at"),
    ({"reason": "x", "stage": "<script>"}, 400, "starts at"),
    ({"reason": "x", "urgency": "stat"}, 400, "urgency"),
    ({"reason": "x", "items": "1"}, 400, "items"),
    ({"reason": "x", "items": []}, 400, "items"),
    ({"reason": "x", "items": [True]}, 400, "items"),
    ({"reason": "x", "items": [7]}, 409, "only denied items"),
])
def test_bad_appeals_are_refused(client, reviewer, body, status, words):
    _, number = denied_case(client, reviewer)
    r = client.post(f"/review/api/cases/{number}/appeals", headers=reviewer, json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_bad_stage_decisions_and_escalations_are_refused(client, reviewer, director):
    _, number = denied_case(client, reviewer)
    aid = file(client, reviewer, number).json()["id"]
    url = f"/review/api/appeals/{aid}"
    for raw in (b"{", b"[]", b"", b'"x"'):
        r = client.post(url + "/decision", headers={**director, "Content-Type": "application/json"}, content=raw)
        assert r.status_code == 400 and r.json()["detail"]
    assert client.post(url + "/decision", headers=director, json={"decision": "maybe"}).status_code == 400
    r = client.post(url + "/decision", headers=director, json={"decision": "upheld"})
    assert r.status_code == 400 and "note is required" in r.json()["detail"]
    assert client.post(url + "/decision", headers=director, content=b"decision=upheld",
                       ).status_code in (400, 415)
    r = escalate(client, reviewer, aid, "second-level")
    assert r.status_code == 409 and "not decided yet" in r.json()["detail"]
    assert escalate(client, reviewer, aid, "nowhere").status_code == 400
    decide(client, director, aid, "upheld")
    r = escalate(client, reviewer, aid, "first-level")
    assert r.status_code == 409 and "moves forward" in r.json()["detail"]
    assert decide(client, director, aid, "overturned").status_code == 409  # already decided: escalate or close
    for path in ("", "/decision", "/escalate", "/close"):
        method = client.get if not path else client.post
        kwargs = {} if not path else {"json": {"decision": "upheld", "note": "x", "stage": "peer-to-peer"}}
        assert method(f"/review/api/appeals/AP-NOPE{path}", headers=director, **kwargs).status_code == 404
    assert client.get("/review/api/appeals", params={"status": "weird"}, headers=reviewer).status_code == 400


def test_appeal_pages(client, reviewer, director):
    _, number = denied_case(client, reviewer)
    hostile = "<script>alert('appeal')</script> grounds"
    aid = file(client, reviewer, number, reason=hostile).json()["id"]
    listing = client.get("/review/appeals", headers=reviewer).text
    assert aid in listing and number in listing
    page = client.get(f"/review/appeals/{aid}", headers=director).text
    assert "&lt;script&gt;alert(&#39;appeal&#39;)&lt;/script&gt; grounds" in page and hostile not in page
    assert "First-level appeal" in page and "Record decision" in page
    # The clinical context of the denial is on the appeal itself: what was asked, against which
    # criteria, and the denying physician's own rationale.
    assert "Clinical context of the request" in page
    assert "Documentation and the payer's criteria" in page and "<h2>Diagnoses</h2>" in page
    assert RATIONALE.replace("'", "&#39;") in page
    # the reviewer sees the appeal but not the decision form
    assert "Record decision" not in client.get(f"/review/appeals/{aid}", headers=reviewer).text
    case_page = client.get(f"/review/cases/{number}", headers=reviewer).text
    assert f"/review/appeals/{aid}" in case_page and "File an appeal" not in case_page
    r = client.post(f"/review/appeals/{aid}/decide", data={"note": "no decision chosen"}, headers=director)
    assert r.status_code == 400 and "decision must be one of" in r.text
    assert client.post(f"/review/appeals/{aid}/decide", data={"decision": "upheld"}, headers=reviewer).status_code == 403
    r = client.post(f"/review/appeals/{aid}/decide", data={"decision": "upheld", "note": "Still not met."}, headers=director)
    assert r.status_code == 303 and r.headers["location"].endswith("?done=appeal-decided")
    r = client.post(f"/review/appeals/{aid}/escalate", data={"stage": "second-level"}, headers=reviewer)
    assert r.status_code == 303
    assert "Second-level appeal" in client.get(f"/review/appeals/{aid}", headers=reviewer).text
    assert client.post(f"/review/appeals/{aid}/escalate", data={"stage": "first-level"}, headers=reviewer).status_code == 409
    assert client.post(f"/review/appeals/{aid}/close", data={}, headers=reviewer).status_code in (400, 415)
    assert client.get("/review/appeals/AP-NOPE", headers=reviewer).status_code == 404
    assert client.get("/review/appeals", params={"status": "<x>"}, headers=reviewer).status_code == 200
    r = client.post(f"/review/cases/{number}/appeals", data={"reason": "second try"}, headers=reviewer)
    assert r.status_code == 409  # the open appeal blocks a second one
