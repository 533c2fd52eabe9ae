"""Notification delivery under load and faults: one subscriber's dead endpoint delays no other's,
a thousand subscribers each get a decision exactly once without stalling the API, and a delivery
leased by a worker that died is delivered by another once the lease expires."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import orjson

from server.subscriptions.model import notification_bundle, read_subscription
from server.subscriptions.service import LEASE, MAX_IN_FLIGHT, SubscriptionService
from tests.pas_support import FHIR, Receiver, actions, claim_response, notification_type, pas_request, pas_subscription, submit
from tests.support import ThreadedServer, free_port


def test_a_never_answering_endpoint_does_not_hold_up_another_subscribers_handshake(client, unique):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(8)
    dead.settimeout(15)
    live = Receiver().start()
    created = []
    try:
        r = client.post("/fhir/Subscription", json=pas_subscription(f"http://127.0.0.1:{dead.getsockname()[1]}/notify", f"dead-{unique}"), headers=FHIR)
        assert r.status_code == 201, r.text
        created.append(r.json()["id"])
        held, _ = dead.accept()  # the dead endpoint's handshake is in flight, and never answered
        assert held.recv(65536).startswith(b"POST ")

        r = client.post("/fhir/Subscription", json=pas_subscription(live.url, f"live-{unique}"), headers=FHIR)
        assert r.status_code == 201, r.text
        created.append(r.json()["id"])
        live_id = created[-1]
        got = live.wait_for(lambda b: notification_type(b) == "handshake" and live_id in str(b), timeout=9)
        assert len(got) == 1

        # The dead endpoint's request is still being held open: the live one did not wait for it.
        held.setblocking(False)
        try:
            still_open = held.recv(1) != b""
        except BlockingIOError:
            still_open = True
        assert still_open
        held.close()
    finally:
        for sid in created:
            client.delete(f"/fhir/Subscription/{sid}")
        live.stop()
        dead.close()


# ------------------------------------------------------------------ 1,005 subscribers
class ManyEndpoints:
    """One loopback HTTP server that answers at ``/notify/<n>`` for any n. It records each POST by
    path, counts the requests it holds open at once (and the peak), and while ``hold`` is on keeps
    every request waiting until :meth:`release`."""

    def __init__(self):
        self.port = free_port()
        self.cond = threading.Condition()
        self.by_path: dict[str, list[dict]] = defaultdict(list)
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # kind -> path -> n
        self.open = 0
        self.peak = 0
        self.gate: asyncio.Event | None = None
        self.server: ThreadedServer | None = None

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.port}/notify/{n}"

    async def app(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    self.gate = asyncio.Event()
                    self.gate.set()
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        with self.cond:
            self.open += 1
            self.peak = max(self.peak, self.open)
            self.cond.notify_all()
        await self.gate.wait()
        bundle = orjson.loads(body)
        with self.cond:
            self.open -= 1
            self.by_path[scope["path"]].append(bundle)
            self.counts[notification_type(bundle)][scope["path"]] += 1
            self.cond.notify_all()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def start(self) -> "ManyEndpoints":
        async def asgi(scope, receive, send):
            await self.app(scope, receive, send)

        self.server = ThreadedServer(asgi, self.port).start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def hold(self) -> None:
        self.server.loop.call_soon_threadsafe(self.gate.clear)

    def release(self) -> None:
        self.server.loop.call_soon_threadsafe(self.gate.set)

    def wait_until(self, predicate, timeout: float, what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self), timeout), f"{what}: not within {timeout}s (open {self.open})"

    def paths(self, kind: str) -> int:
        """How many paths got at least one notification of ``kind``."""
        return len(self.counts[kind])


SUBSCRIBERS = 1005


def on_server_loop(server, coro, timeout: float = 60):
    return asyncio.run_coroutine_threadsafe(coro, server.loop).result(timeout)


def test_a_decision_reaches_all_1005_subscribers_exactly_once_with_bounded_concurrency_and_the_api_stays_up(server, client):
    org = "1" + uuid.uuid4().hex[:9].translate(str.maketrans("abcdef", "123456"))
    endpoints = ManyEndpoints().start()
    svc = server.app.state.precert.services["subscriptions"]
    created: list[str] = []
    try:
        def subscribe(n: int) -> str:
            r = client.post("/fhir/Subscription", json=pas_subscription(endpoints.url(n), org), headers=FHIR)
            assert r.status_code == 201, r.text
            return r.json()["id"]

        with ThreadPoolExecutor(4) as pool:
            created.extend(pool.map(subscribe, range(SUBSCRIBERS)))
        endpoints.wait_until(lambda e: e.paths("handshake") == SUBSCRIBERS, 300, "every handshake")
        assert set(endpoints.counts["handshake"].values()) == {1}

        # Every endpoint holds its request: the server runs MAX_IN_FLIGHT deliveries, no more.
        endpoints.hold()
        body = submit(client, pas_request("2.2.1", "Bundle-SurgicalRequestBundleExample.json", provider_npi=org)).json()
        assert actions(body) == {1: "A4"}
        number = next(e for e in claim_response(body)["item"][0]["extension"]
                      if e["url"].endswith("administrationReferenceNumber"))["valueString"].rsplit("-", 1)[0]
        assert client.post(f"/review/api/cases/{number}/decision", json={"action": "approve"}).status_code == 200
        endpoints.wait_until(lambda e: e.open == MAX_IN_FLIGHT, 30, "a full set of deliveries in flight")
        # Meanwhile the API answers: a read, a search and a new PAS request.
        assert client.get(f"/fhir/Subscription/{created[0]}").status_code == 200
        assert client.get("/fhir/Subscription", params={"_count": "1"}).status_code == 200
        assert actions(submit(client, pas_request("2.2.1", "Bundle-SurgicalRequestBundleExample.json", provider_npi=org)).json()) == {1: "A4"}
        endpoints.release()

        endpoints.wait_until(lambda e: e.paths("event-notification") == SUBSCRIBERS, 300, "every event notification")
        events = endpoints.counts["event-notification"]
        assert sorted(events) == sorted(f"/notify/{n}" for n in range(SUBSCRIBERS))
        assert set(events.values()) == {1}
        # Each is this decision, for its own subscription.
        for n in (0, SUBSCRIBERS // 2, SUBSCRIBERS - 1):
            note = orjson.dumps(endpoints.by_path[f"/notify/{n}"][-1]).decode()
            assert claim_response(body)["id"] in note and f"Subscription/{created[n]}" in note
        assert endpoints.peak == MAX_IN_FLIGHT
        # Each was delivered at the first attempt and nothing is left to send: no duplicate can follow.
        # (The receiver records a notification before it answers; the outbox is marked after.)
        outbox = svc.outbox
        deadline = time.monotonic() + 60
        while on_server_loop(server, outbox.count_documents({"case": number, "status": {"$ne": "delivered"}})):
            assert time.monotonic() < deadline, "deliveries the receiver answered were never marked delivered"
            time.sleep(0.05)  # polling the outbox, with a deadline
        assert on_server_loop(server, outbox.count_documents({"case": number, "status": "delivered", "attempts": 1})) == SUBSCRIBERS
    finally:
        endpoints.release()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda sid: client.delete(f"/fhir/Subscription/{sid}"), created))
        endpoints.stop()


# ------------------------------------------------------------------ a worker dies holding a lease
def test_a_delivery_leased_by_a_worker_that_died_is_delivered_once_by_another_after_the_lease(server, client, unique):
    state = server.app.state.precert
    svc = state.services["subscriptions"]
    receiver = Receiver().start()
    try:
        r = client.post("/fhir/Subscription", json=pas_subscription(receiver.url, f"lease-{unique}"), headers=FHIR)
        assert r.status_code == 201, r.text
        sub_id = r.json()["id"]
        receiver.wait_for(lambda b: notification_type(b) == "handshake" and sub_id in str(b))
        focus = f"http://example.org/ClaimResponse/lease-{unique}"

        # The dying worker lives an hour ahead, so the live worker (at the real time) leaves the
        # notification it queues alone until the test moves the live worker's clock.
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        dying = SubscriptionService(state)
        dying.clock = lambda: later

        async def queue_and_lease():
            stored = await state.storage.read("Subscription", sub_id)
            sub = read_subscription(stored.resource, stored.owner)
            await dying._enqueue(sub_id, "event-notification", notification_bundle(
                sub, "http://example.org", "event-notification", "active", 1, event_number=1, focus_url=focus))
            claimed = await dying._claim_due(1, subscription=sub_id)  # (other tests' notifications aside)
            return claimed[0] if claimed else None

        leased = on_server_loop(server, queue_and_lease())
        assert leased["subscription"] == sub_id and leased["status"] == "delivering"
        # ... and it dies here, before delivering.

        real = svc.clock
        try:
            svc.clock = lambda: later + LEASE - timedelta(seconds=1)
            assert on_server_loop(server, svc._claim_due(1, subscription=sub_id)) == []  # the lease still holds
            svc.clock = lambda: later + LEASE + timedelta(seconds=1)
            server.loop.call_soon_threadsafe(svc.wake.set)
            got = receiver.wait_for(lambda b: focus in str(b), timeout=20)
            assert len(got) == 1
            deadline = time.monotonic() + 20
            while (done := on_server_loop(server, svc.outbox.find_one({"_id": leased["_id"]})))["status"] != "delivered":
                assert time.monotonic() < deadline, f"still {done['status']}"
                time.sleep(0.05)  # polling the outbox record, with a deadline
            assert done["attempts"] == 1
            assert on_server_loop(server, svc._claim_due(1, subscription=sub_id)) == []  # nothing left to deliver again
        finally:
            svc.clock = real
        assert len([b for b in receiver.received if focus in str(b)]) == 1
    finally:
        client.delete(f"/fhir/Subscription/{sub_id}")
        receiver.stop()
