"""Pended requests decided by payer staff, and the submitter notified through its PAS
Subscription: handshake, event notifications, retries while the endpoint is down, $status."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from tests.pas_support import (
    FHIR, Receiver, actions, claim_response, notification_type, pas_request, pas_subscription, submit,
)

SURGICAL = "Bundle-SurgicalRequestBundleExample.json"


@pytest.fixture(scope="module", autouse=True)
def quick_retries(server):
    service = server.app.state.precert.services["subscriptions"]
    before = service.backoff_base
    service.backoff_base = 0.2
    yield
    service.backoff_base = before


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def npi() -> str:
    return "1" + "".join(random.choice("0123456789") for _ in range(9))


def case_number(body: dict) -> str:
    ext = next(e for e in claim_response(body)["item"][0]["extension"] if e["url"].endswith("administrationReferenceNumber"))
    return ext["valueString"].rsplit("-", 1)[0]


def subscribe(client, receiver: Receiver, org: str, **kw) -> dict:
    r = client.post("/fhir/Subscription", json=pas_subscription(receiver.url, org, **kw), headers=FHIR)
    assert r.status_code == 201, r.text
    return r.json()


def pended(client, org_npi: str) -> tuple[dict, str]:
    body = submit(client, pas_request("2.2.1", SURGICAL, provider_npi=org_npi)).json()
    assert actions(body) == {1: "A4"}
    return body, case_number(body)


def events_for(receiver: Receiver, case: str | None = None):
    def match(bundle):
        if notification_type(bundle) != "event-notification":
            return False
        return case is None or case in str(bundle)
    return match


def test_subscription_is_requested_then_handshake_makes_it_active(client, receiver):
    sub = subscribe(client, receiver, npi())
    assert sub["status"] == "requested"
    handshake = receiver.wait_for(lambda b: notification_type(b) == "handshake")[0]
    status = handshake["entry"][0]
    assert handshake["type"] == "history"
    assert status["request"]["url"].endswith(f"Subscription/{sub['id']}/$status")
    params = {p["name"]: p for p in status["resource"]["parameter"]}
    assert params["status"]["valueCode"] == "requested"
    assert params["subscription"]["valueReference"]["reference"].endswith(f"Subscription/{sub['id']}")
    deadline = time.monotonic() + 10
    while client.get(f"/fhir/Subscription/{sub['id']}").json()["status"] != "active":
        assert time.monotonic() < deadline, "subscription never became active"
        time.sleep(0.05)


def test_subscription_with_wrong_topic_is_refused(client, receiver):
    bad = pas_subscription(receiver.url, "123")
    bad["criteria"] = "http://example.org/SubscriptionTopic/nope"
    r = client.post("/fhir/Subscription", json=bad, headers=FHIR)
    assert r.status_code == 400 and "Subscription.criteria" in r.json()["issue"][0]["expression"]


def test_subscription_without_org_filter_is_refused(client, receiver):
    bad = pas_subscription(receiver.url, "x")
    del bad["_criteria"]
    assert client.post("/fhir/Subscription", json=bad, headers=FHIR).status_code == 400


def test_subscription_with_bad_endpoint_is_refused(client):
    assert client.post("/fhir/Subscription", json=pas_subscription("ftp://example.org/x", "1"), headers=FHIR).status_code == 400


def test_pend_then_approve_then_the_submitter_is_notified_with_the_full_response(client, receiver):
    org = npi()
    subscribe(client, receiver, org)
    body, number = pended(client, org)
    queue = client.get("/review/api/cases", params={"status": "pended"}).json()
    assert number in [c["id"] for c in queue["cases"]]
    r = client.post(f"/review/api/cases/{number}/decision", json={"action": "approve", "note": "criteria met on review"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "decided"
    note = receiver.wait_for(events_for(receiver, claim_response(body)["id"]))[0]
    status = note["entry"][0]["resource"]
    params = {p["name"]: p for p in status["parameter"]}
    assert params["type"]["valueCode"] == "event-notification" and params["status"]["valueCode"] == "active"
    focus = next(p for p in params["notification-event"]["part"] if p["name"] == "focus")["valueReference"]["reference"]
    focus_entry = next(e for e in note["entry"] if e["fullUrl"] == focus)
    response = focus_entry["resource"]
    assert response["type"] == "collection" and actions(response) == {1: "A1"}
    assert all("request" in e and "response" in e for e in note["entry"])
    headers = receiver.headers[receiver.received.index(note)]
    assert headers["authorization"] == "Bearer receiver-secret"
    assert headers["content-type"].startswith("application/fhir+json")
    # The stored ClaimResponse now says A1, marked as reviewed by a person.
    cr = client.get(f"/fhir/ClaimResponse/{claim_response(response)['id']}").json()
    assert cr["meta"]["versionId"] == "2"
    reviewer = next(e for e in cr["extension"] if e["url"].endswith("claimResponseReviewer"))
    assert reviewer["extension"][0]["valueBoolean"] is True


def test_deny_with_reason_gives_the_reason_in_the_response(client, receiver):
    org = npi()
    subscribe(client, receiver, org)
    body, number = pended(client, org)
    r = client.post(f"/review/api/cases/{number}/decision", json={"action": "deny", "reason": {"code": "medical-necessity", "text": "No failed conservative therapy documented."}})
    assert r.status_code == 200
    note = receiver.wait_for(events_for(receiver, claim_response(body)["id"]))[0]
    response = next(e["resource"] for e in note["entry"][1:] if e["resource"]["resourceType"] == "Bundle")
    cr = claim_response(response)
    assert actions(response) == {1: "A3"}
    text = " ".join(n["text"] for n in cr["processNote"])
    assert "medically necessary" in text and "No failed conservative therapy documented." in text


def test_modify_authorizes_fewer_units(client):
    body, number = pended(client, npi())
    r = client.post(f"/review/api/cases/{number}/decision", json={"action": "modify", "items": [{"sequence": 1, "quantity": 1, "days": 30}], "note": "one procedure"})
    assert r.status_code == 200
    case = client.get(f"/review/api/cases/{number}").json()
    assert case["items"][0]["action"] == "A6"
    cr = client.get(f"/fhir/ClaimResponse/{case['claim_response_id']}").json()
    assert cr["addItem"][0]["itemSequence"] == [1]
    assert cr["addItem"][0]["quantity"]["value"] == 1 and cr["addItem"][0]["quantity"].get("unit")


def test_request_more_information_creates_a_task_and_keeps_the_case_pended(client):
    body, number = pended(client, npi())
    r = client.post(f"/review/api/cases/{number}/decision", json={"action": "request-info", "needed": ["Operative plan and cardiology consult note"]})
    assert r.status_code == 200
    assert r.json()["status"] == "pended"
    tasks = client.get("/fhir/Task", params={"identifier": f"http://precert.example.org/sid/case|{number}"}).json()
    asked = [e["resource"] for e in tasks["entry"] if any(i["type"]["coding"][0]["code"] == "attachments-needed" for i in e["resource"]["input"])]
    assert len(asked) == 1, "the reviewer's request is one Task (beside the one the pend itself sent)"
    task = asked[0]
    assert task["code"]["coding"][0]["code"] in ("attachment-request-code", "attachment-request-questionnaire")
    assert any(i["type"]["coding"][0]["code"] == "attachments-needed" for i in task["input"])


def test_decision_errors(client):
    body, number = pended(client, npi())
    assert client.post(f"/review/api/cases/{number}/decision", json={"action": "deny"}).status_code == 400
    assert client.post(f"/review/api/cases/{number}/decision", json={"action": "launch"}).status_code == 400
    assert client.post(f"/review/api/cases/{number}/decision", json={"action": "approve", "items": [{"sequence": 9}]}).status_code == 409
    assert client.post(f"/review/api/cases/{number}/decision", content=b"{nope", headers=FHIR).status_code == 400
    assert client.post("/review/api/cases/PA-NOPE/decision", json={"action": "approve"}).status_code == 404
    assert client.post(f"/review/api/cases/{number}/decision", json={"action": "approve"}).status_code == 200
    again = client.post(f"/review/api/cases/{number}/decision", json={"action": "deny", "reason": {"code": "other"}})
    assert again.status_code == 409


def outbox(server, query: dict) -> list[dict]:
    """The notifications queued for delivery that match ``query`` (read on the server's own loop)."""
    collection = server.app.state.precert.services["subscriptions"].outbox

    async def read():
        return [d async for d in collection.find(query, {"status": 1, "attempts": 1, "kind": 1})]

    return asyncio.run_coroutine_threadsafe(read(), server.loop).result(30)


def settled(server, sub_id: str, timeout: float = 30) -> list[dict]:
    """Poll (with a deadline) until every notification queued for ``sub_id`` is delivered."""
    deadline = time.monotonic() + timeout
    while True:
        docs = outbox(server, {"subscription": sub_id})
        if docs and all(d["status"] == "delivered" for d in docs):
            return docs
        assert time.monotonic() < deadline, f"outbox not settled: {docs}"
        time.sleep(0.05)


def test_subscriber_down_then_up_gets_the_notification_exactly_once(server, client):
    receiver = Receiver()  # not listening yet
    org = npi()
    sub = subscribe(client, receiver, org)
    body, number = pended(client, org)
    assert client.post(f"/review/api/cases/{number}/decision", json={"action": "approve"}).status_code == 200
    deadline = time.monotonic() + 30
    while True:  # delivery attempts fail meanwhile, and the failure becomes visible
        status = client.get(f"/fhir/Subscription/{sub['id']}/$status").json()
        params = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
        if "error" in params:
            break
        assert time.monotonic() < deadline, "no delivery failure reported in $status"
        time.sleep(0.05)
    receiver.start()
    try:
        receiver.wait_for(events_for(receiver, claim_response(body)["id"]), timeout=30)
        settled(server, sub["id"])  # nothing left to send: no second copy can follow
        assert len([b for b in receiver.received if events_for(receiver, claim_response(body)["id"])(b)]) == 1
        assert len([b for b in receiver.received if notification_type(b) == "handshake"]) == 1
    finally:
        receiver.stop()


def test_notifications_go_only_to_the_submitting_organization(server, client, receiver):
    mine, theirs = npi(), npi()
    sub = subscribe(client, receiver, theirs)
    body, number = pended(client, mine)
    assert client.post(f"/review/api/cases/{number}/decision", json={"action": "approve"}).status_code == 200
    # A decision queues its notifications in its own transaction: once it has answered, everything
    # it will ever send is in the outbox, and nothing there is for the other organization.
    assert outbox(server, {"case": number, "subscription": sub["id"]}) == []
    settled(server, sub["id"])  # (its handshake only)
    assert not [b for b in receiver.received if events_for(receiver, claim_response(body)["id"])(b)]


def test_id_only_subscription_gets_a_reference_not_the_resource(client, receiver):
    org = npi()
    subscribe(client, receiver, org, content="id-only", filter_name="orgIdentifier")
    body, number = pended(client, org)
    client.post(f"/review/api/cases/{number}/decision", json={"action": "approve"})
    note = receiver.wait_for(events_for(receiver))[0]
    assert len(note["entry"]) == 2 and "resource" not in note["entry"][1]
    assert note["entry"][1]["fullUrl"].endswith(f"ClaimResponse/{claim_response(body)['id']}")


def test_status_counts_events(client, receiver):
    org = npi()
    sub = subscribe(client, receiver, org)
    for _ in range(2):
        body, number = pended(client, org)
        client.post(f"/review/api/cases/{number}/decision", json={"action": "approve"})
    receiver.wait_for(lambda b: notification_type(b) == "event-notification" and '"events-since-subscription-start","valueString":"2"' in __import__("orjson").dumps(b).decode())
    status = client.get(f"/fhir/Subscription/{sub['id']}/$status").json()
    params = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert params["events-since-subscription-start"]["valueString"] == "2"
    assert params["type"]["valueCode"] == "query-status"


def test_case_history_records_every_step(client, receiver):
    org = npi()
    subscribe(client, receiver, org)
    body, number = pended(client, org)
    client.post(f"/review/api/cases/{number}/assign", json={"assignee": "dr.who"})
    client.post(f"/review/api/cases/{number}/decision", json={"action": "approve"})
    history = client.get(f"/review/api/cases/{number}").json()["history"]
    events = [h["event"] for h in history]
    assert events[:2] == ["submitted", "item-pended"]
    assert "assigned" in events and "approve" in events and "notification-queued" in events
    approve = next(h for h in history if h["event"] == "approve")
    assert approve["by"] == "sandbox-reviewer" and approve["at"]
