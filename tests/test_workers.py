"""``precert serve --workers 2``: two server processes on one port share everything a request
depends on: each notification is delivered once, a case is decided once, and a Coverage change made
through one worker is seen by the other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from pymongo import MongoClient

from tests.pas_support import FHIR, Receiver, actions, claim_response, notification_type, pas_request, pas_subscription
from tests.support import ROOT, free_port

SURGICAL = "Bundle-SurgicalRequestBundleExample.json"
WORKERS = 2


@pytest.fixture(scope="module")
def two_workers(mongodb_uri):
    db_name = f"precert_workers_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {**os.environ, "PRECERT_MONGODB_URI": mongodb_uri, "PRECERT_DB_NAME": db_name}
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--workers", str(WORKERS), "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    ready = 0
    while time.monotonic() < deadline and ready < 10:  # ten ready answers in a row: both workers are up
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode())
        try:
            ready = ready + 1 if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200 else 0
        except httpx.HTTPError:
            ready = 0
            time.sleep(0.1)
    assert ready == 10, "precert serve --workers 2 did not become ready"
    db = MongoClient(mongodb_uri)[db_name]
    # No keep-alive: each request is a new connection, which either worker may accept.
    with httpx.Client(base_url=base, timeout=30, headers={"Accept": "application/fhir+json"},
                      limits=httpx.Limits(max_keepalive_connections=0)) as client:
        yield proc, client, db
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        db.client.close()


def test_two_worker_processes_serve_the_port(two_workers):
    proc, client, _ = two_workers
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    workers = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(workers) == WORKERS
    assert all(client.get("/fhir/Patient/pat-001").status_code == 200 for _ in range(20))


def _pended(client, org: str) -> tuple[dict, str]:
    body = client.post("/fhir/Claim/$submit", content=orjson.dumps(pas_request("2.2.1", SURGICAL, provider_npi=org)), headers=FHIR)
    assert body.status_code == 200, body.text
    response = body.json()
    assert actions(response) == {1: "A4"}
    ext = next(e for e in claim_response(response)["item"][0]["extension"] if e["url"].endswith("administrationReferenceNumber"))
    return response, ext["valueString"].rsplit("-", 1)[0]


def _delivery_settled(db, sub_id: str, expected_events: int, timeout: float = 30) -> None:
    """Wait until the outbox holds the expected events for the subscription, all delivered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        docs = list(db.notification_outbox.find({"subscription": sub_id}, {"status": 1, "kind": 1}))
        events = [d for d in docs if d.get("kind") != "handshake" and d.get("kind") != "heartbeat"]
        if len(events) >= expected_events and all(d["status"] == "delivered" for d in docs):
            return
        time.sleep(0.05)
    raise AssertionError(f"outbox not settled: {docs}")


def test_each_notification_is_delivered_exactly_once_across_workers(two_workers):
    _, client, db = two_workers
    receiver = Receiver().start()
    try:
        org = "1" + uuid.uuid4().int.__str__()[:9]
        sub = client.post("/fhir/Subscription", content=orjson.dumps(pas_subscription(receiver.url, org)), headers=FHIR)
        assert sub.status_code == 201, sub.text
        cases = [_pended(client, org) for _ in range(6)]
        for _, number in cases:  # decisions land on both workers
            assert client.post(f"/review/api/cases/{number}/decision", json={"action": "approve"}).status_code == 200
        _delivery_settled(db, sub.json()["id"], len(cases))
        events = [b for b in receiver.received if notification_type(b) == "event-notification"]
        for response, _ in cases:
            cr_id = claim_response(response)["id"]
            assert len([b for b in events if cr_id in orjson.dumps(b).decode()]) == 1
        assert len([b for b in receiver.received if notification_type(b) == "handshake"]) == 1
    finally:
        receiver.stop()


def test_a_case_decided_on_both_workers_at_once_is_decided_once(two_workers):
    _, client, _ = two_workers
    for _ in range(3):
        _, number = _pended(client, "1" + uuid.uuid4().int.__str__()[:9])
        statuses: list[int] = []
        start = threading.Barrier(4)

        def decide(action: dict) -> None:
            with httpx.Client(base_url=str(client.base_url), timeout=30) as own:  # own connection: another worker
                start.wait()
                statuses.append(own.post(f"/review/api/cases/{number}/decision", json=action).status_code)

        threads = [threading.Thread(target=decide, args=({"action": "approve"} if i % 2 else {"action": "deny", "reason": {"code": "other"}, "note": "not supported"},))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200, 409, 409, 409]
        history = client.get(f"/review/api/cases/{number}").json()
        assert history["status"] == "decided"


def test_a_coverage_change_through_one_worker_reaches_the_other(two_workers):
    _, client, _ = two_workers
    coverage = client.get("/fhir/Coverage/cov-004").json()
    member = coverage["identifier"][0]["value"]

    def submitted_error() -> str | None:
        body = client.post("/fhir/Claim/$submit", content=orjson.dumps(pas_request("2.2.1", member=member)), headers=FHIR).json()
        errors = claim_response(body).get("error") or []
        return errors[0]["code"]["coding"][0]["code"] if errors else None

    assert [submitted_error() for _ in range(8)] == [None] * 8  # both workers cache the active member
    changed = client.put("/fhir/Coverage/cov-004", content=orjson.dumps({**coverage, "status": "cancelled"}), headers=FHIR)
    assert changed.status_code == 200
    try:
        deadline = time.monotonic() + 10  # well inside the caches' 30 s lifetime
        while time.monotonic() < deadline:
            if [submitted_error() for _ in range(8)] == ["78"] * 8:
                break
        else:
            raise AssertionError("a worker still answers from the member as it was before the change")
    finally:
        client.put("/fhir/Coverage/cov-004", content=orjson.dumps(coverage), headers=FHIR)
