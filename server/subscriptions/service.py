"""Topic-based subscriptions and their durable notification outbox.

Every notification (handshake, heartbeat, event) is first written to the ``notification_outbox``
collection, in the same transaction as the decision that caused it, and then delivered by a worker.
A delivery that fails is retried with exponential backoff (capped at five minutes) for as long as
the subscription exists; nothing is dropped.

Deliveries run concurrently, one at a time per subscription (so each subscriber sees its
notifications in order) and at most ``MAX_IN_FLIGHT`` at once, each with its own timeout: an
endpoint that never answers holds up only its own notifications. A notification is leased while
it is delivered; the lease outlasts the longest delivery timeout, so no live delivery is taken
twice, and is short, so one in flight at a crash is retried seconds after the restart. Each subscription's state (event count, failures, last
error) is visible through ``$status``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

import httpx
import orjson
from pymongo import ASCENDING, ReturnDocument

from server.events import CaseDecided, EventBus, ResourceWritten
from server.outbound import OutboundRefused, check_destination, safe_headers
from server.fhir.repository import Repository, Transaction
from server.pas import cases as case_store
from server.storage import StoredResource, utcnow
from server.subscriptions.model import (
    PAS_TOPIC, TopicSubscription, check_subscription, notification_bundle, read_subscription, status_parameters,
)
from server import settings

log = logging.getLogger("precert.subscriptions")

# The longest a single delivery may take, whatever the subscription asks for.
MAX_DELIVERY_SECONDS = 10.0
LEASE = timedelta(seconds=MAX_DELIVERY_SECONDS + 5)
MAX_IN_FLIGHT = 32
ERROR_AFTER_FAILURES = 3
# The internal actor that delivers notifications and keeps each Subscription's status.
NOTIFIER = "notification-worker"


def _chunks(items: list, size: int = 100) -> list[list]:
    """``$in`` lists (and insert batches) of at most ``size``: the embedded database's cost grows
    faster than the list (100 ids: 48 ms; 1,005: 3.5 s, near the operation timeout), so a thousand
    go in chunks, each with its own operation timeout."""
    return [items[i:i + size] for i in range(0, len(items), size)]


class SubscriptionService:
    def __init__(self, state):
        self.state = state
        self.storage = state.storage
        self.repo = Repository.system(state, NOTIFIER)
        self.outbox = state.storage.collection("notification_outbox")
        self.subs = state.storage.collection("subscription_state")
        self.backoff_base, self.backoff_cap = settings.notify_backoff()
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.client: httpx.AsyncClient | None = None
        self.stopping = False
        self.in_flight: dict[str, asyncio.Task] = {}  # subscription id -> its delivery
        # The time that queues and leases notifications; tests move it to expire a lease at once.
        self.clock = utcnow

    async def ensure_indexes(self) -> None:
        await self.outbox.create_index([("status", ASCENDING), ("next_at", ASCENDING)])
        await self.outbox.create_index([("status", ASCENDING), ("lease", ASCENDING)])
        await self.outbox.create_index([("subscription", ASCENDING), ("created", ASCENDING)])
        await self.subs.create_index([("next_heartbeat", ASCENDING)])
        # Matching reads an organization's subscriptions to one topic, never everyone's.
        await self.subs.create_index([("owner", ASCENDING), ("topic", ASCENDING), ("deleted", ASCENDING)])

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.client = httpx.AsyncClient(follow_redirects=False)
        self.task = asyncio.create_task(self._run(), name="precert-notifications")

    async def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        if self.task:
            try:
                await asyncio.wait_for(self.task, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self.task.cancel()
        pending = list(self.in_flight.values())
        if pending:
            # Deliveries still running are abandoned; their leases expire and they are retried.
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self.client:
            await self.client.aclose()

    def listen(self, events: EventBus) -> None:
        """Join the repository's events: a decision queues its notifications in the deciding
        transaction (so they commit, or roll back, with it); Subscription writes start a handshake."""
        events.on(CaseDecided, self.queue_decision, phase="transaction")
        events.on(CaseDecided, self.wake_up)
        events.on(ResourceWritten, self.subscription_written)

    async def wake_up(self, event) -> None:
        self.wake.set()

    async def queue_decision(self, event: CaseDecided, tx: Transaction) -> None:
        queued = await self.notify_decision(event.case, event.response, session=tx.session)
        if queued:
            await case_store.collection(self.storage).update_one(
                {"_id": event.case["_id"]},
                {"$push": {"history": case_store.event("notification-queued", "precert", f"{queued} subscription(s)")}},
                session=tx.session)

    # ------------------------------------------------------------------ checks and events on /fhir/Subscription
    async def before_write(self, request, rtype: str, resource: dict) -> None:
        if rtype != "Subscription":
            return
        check_subscription(resource, self.state.settings.mode == "production")
        if resource.get("status") != "off":
            # The server owns the status: a new or changed subscription starts with a handshake.
            resource["status"] = "requested"

    async def subscription_written(self, event: ResourceWritten) -> None:
        stored, action = event.stored, event.action
        if stored.type != "Subscription" or event.actor == NOTIFIER:
            return  # the worker's own status changes need no new handshake
        if action == "delete":
            await self.subs.update_one({"_id": stored.id}, {"$set": {"deleted": True, "next_heartbeat": None}})
            return
        resource = stored.resource
        sub = read_subscription(resource, stored.owner)
        base = event.base or ""
        heartbeat = int(sub.heartbeat) if sub.heartbeat else None
        await self.subs.update_one(
            {"_id": stored.id},
            {"$set": {"base": base, "owner": stored.owner, "topic": sub.topic, "heartbeat": heartbeat, "deleted": False,
                      "next_heartbeat": utcnow() + timedelta(seconds=heartbeat) if heartbeat else None},
             "$setOnInsert": {"events": 0, "failures": 0, "created": utcnow()}},
            upsert=True,
        )
        if sub.status == "requested":
            bundle = notification_bundle(sub, base, "handshake", "requested", 0)
            await self._enqueue(stored.id, "handshake", bundle)

    # ------------------------------------------------------------------ events
    async def _enqueue(self, sub_id: str, kind: str, bundle: dict, session=None, case_id: str | None = None) -> None:
        await self._enqueue_many([(sub_id, kind, bundle, case_id)], session=session)

    async def _enqueue_many(self, items: list[tuple[str, str, dict, str | None]], session=None) -> None:
        """Queue (subscription, kind, bundle, case) notifications: batched writes in the caller's
        transaction, when there is one."""
        if not items:
            return
        now = self.clock()
        docs = [{
            "_id": str(uuid.uuid4()),
            "subscription": sub_id,
            "kind": kind,
            "case": case_id,
            "body": orjson.dumps(bundle),
            "status": "pending",
            "attempts": 0,
            "created": now,
            "next_at": now,
            "last_error": None,
        } for sub_id, kind, bundle, case_id in items]
        for batch in _chunks(docs):
            await self.outbox.insert_many(batch, session=session)
        self.wake.set()

    async def matching_subscriptions(self, owner: str | None, sender_ids: list[str]) -> list[tuple[TopicSubscription, dict]]:
        states = {s["_id"]: s async for s in self.subs.find({"owner": owner, "topic": {"$in": [PAS_TOPIC, None]}, "deleted": False})}
        out = []
        found = []
        for ids in _chunks(list(states)):
            found.extend(await self.repo.read_many(f"Subscription/{sid}" for sid in ids))
        for stored in found:
            if stored.owner != owner or stored.resource.get("status") not in ("requested", "active", "error"):
                continue
            sub = read_subscription(stored.resource, stored.owner)
            if sub.topic != PAS_TOPIC or not sub.matches(sender_ids):
                continue
            out.append((sub, states[stored.id]))
        return out

    async def notify_decision(self, case: case_store.Case, response: dict, session=None) -> int:
        """Queue a PAS 'result-available' notification for each matching subscription. Runs inside
        the caller's transaction, so the decision and its notifications commit together."""
        matched = await self.matching_subscriptions(case.get("owner"), case.get("sender_ids") or [])
        if not matched:
            return 0
        # One write counts the event for every subscriber and one reads the counts back (inside the
        # transaction, so each sees its own number): a topic with a thousand subscribers costs a
        # few round trips, not two thousand, and the decision's transaction stays short.
        events: dict[str, int] = {}
        for ids in _chunks([sub.id for sub, _ in matched]):
            await self.subs.update_many({"_id": {"$in": ids}}, {"$inc": {"events": 1}}, session=session)
            events.update({d["_id"]: d.get("events", 1)
                           async for d in self.subs.find({"_id": {"$in": ids}}, {"events": 1}, session=session)})
        items = []
        for sub, state in matched:
            number = events.get(sub.id, 1)
            base = state.get("base") or ""
            bundle = notification_bundle(
                sub, base, "event-notification", "active", number, event_number=number,
                focus_resource=response, focus_url=f"{base}/ClaimResponse/{case.get('response_id')}",
            )
            items.append((sub.id, "event-notification", bundle, case.get("_id")))
        await self._enqueue_many(items, session=session)
        return len(items)

    async def status(self, sub_id: str, resource: dict, owner: str | None, base: str) -> dict:
        sub = read_subscription(resource, owner)
        state = await self.subs.find_one({"_id": sub_id}) or {}
        params = status_parameters(sub, base, "query-status", resource.get("status", ""), int(state.get("events", 0)))
        if state.get("last_error"):
            params["parameter"].append({"name": "error", "valueCodeableConcept": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscription-error", "code": "no-response"}],
                "text": state["last_error"][:300]}})
        return params

    # ------------------------------------------------------------------ delivery
    async def _run(self) -> None:
        while not self.stopping:
            try:
                delivered = await self._deliver_due()
                await self._heartbeats()
            except Exception:  # the worker must outlive any single failure
                log.exception("notification worker error")
                delivered = 0
            if delivered:
                continue
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass

    @staticmethod
    def claim_queries(now) -> list[dict]:
        """Notifications whose lease expired (a worker died delivering them: the oldest work),
        then due ones. Two plain queries, each served by its own index (``notification_outbox``
        in ``storage.HOT_PATH_INDEXES``): an ``$or``, or a ``$nin`` on the busy subscriptions,
        scans every notification ever delivered on planners such as SecantusDB's."""
        return [{"status": "delivering", "lease": {"$lt": now}}, {"status": "pending", "next_at": {"$lte": now}}]

    async def _claim_next(self) -> dict | None:
        claimed = await self._claim_due(1)
        return claimed[0] if claimed else None

    async def _claim_due(self, limit: int, subscription: str | None = None) -> list[dict]:
        """Lease up to ``limit`` due notifications, at most one per subscription and none for a
        subscription with a delivery in flight. One read per kind finds the candidates (the embedded
        database fetches every match of an index range, so reading once per batch rather than once
        per notification is what keeps a thousand queued notifications from taking minutes); each
        is then leased by its id, on the condition that it is still due, so two workers never lease
        the same notification. ``subscription`` confines the claim to one subscription's (tests)."""
        now = self.clock()
        only = {"subscription": subscription} if subscription else {}
        busy = set(self.in_flight)
        picked: list[dict] = []
        for due in self.claim_queries(now):  # expired leases (the oldest work) first, then due ones
            async for cand in self.outbox.find({**due, **only}, {"_id": 1, "subscription": 1}).sort("next_at", ASCENDING):
                if len(picked) >= limit:
                    return picked
                if cand["subscription"] in busy:
                    continue
                doc = await self.outbox.find_one_and_update(
                    {"_id": cand["_id"], **due}, {"$set": {"status": "delivering", "lease": now + LEASE}},
                    return_document=ReturnDocument.AFTER,
                )
                if doc is not None:
                    busy.add(doc["subscription"])
                    picked.append(doc)
        return picked

    async def _deliver_due(self) -> int:
        """Start the delivery of every due notification whose subscription has none running."""
        n = 0
        while not self.stopping and len(self.in_flight) < MAX_IN_FLIGHT:
            claimed = await self._claim_due(MAX_IN_FLIGHT - len(self.in_flight))
            if not claimed:
                return n
            for doc in claimed:
                sub_id = doc["subscription"]
                self.in_flight[sub_id] = asyncio.create_task(self._deliver_then_wake(sub_id, doc), name=f"notify-{sub_id}")
                n += 1
        return n

    async def _deliver_then_wake(self, sub_id: str, doc: dict) -> None:
        try:
            await self._deliver(doc)
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed bookkeeping write: the lease expires and it is retried
            log.exception("delivery of notification %s failed", doc["_id"])
        finally:
            self.in_flight.pop(sub_id, None)
            self.wake.set()  # this subscription's next notification may be due

    async def _deliver(self, doc: dict) -> None:
        stored = await self.repo.read("Subscription", doc["subscription"])
        if stored is None or stored.deleted or stored.resource.get("status") == "off":
            await self.outbox.update_one({"_id": doc["_id"]}, {"$set": {"status": "cancelled", "finished": utcnow()}})
            return
        sub = read_subscription(stored.resource, stored.owner)
        headers = {"Content-Type": sub.payload_type}
        for name, value in safe_headers(sub.headers):
            headers[name] = value
        error = None
        try:
            if self.state.settings.mode == "production":
                await check_destination(sub.endpoint)
            resp = await asyncio.wait_for(
                self.client.post(sub.endpoint, content=doc["body"], headers=headers, timeout=min(sub.timeout, MAX_DELIVERY_SECONDS)),
                MAX_DELIVERY_SECONDS,
            )
            if not 200 <= resp.status_code < 300:
                error = f"endpoint answered HTTP {resp.status_code}"
        except OutboundRefused as exc:
            error = f"endpoint refused: {exc}"
        except (httpx.HTTPError, asyncio.TimeoutError) as exc:
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        if error is None:
            await self.outbox.update_one({"_id": doc["_id"]}, {"$set": {"status": "delivered", "finished": utcnow(), "attempts": doc["attempts"] + 1}})
            await self.subs.update_one({"_id": sub.id}, {"$set": {"failures": 0, "last_success": utcnow()}})
            if doc["kind"] == "handshake" or stored.resource.get("status") == "error":
                await self._set_status(stored, "active")
            log.info("notification %s (%s) delivered to subscription %s", doc["_id"], doc["kind"], sub.id)
            return
        attempts = doc["attempts"] + 1
        delay = min(self.backoff_cap, self.backoff_base * (2 ** (attempts - 1)))
        await self.outbox.update_one(
            {"_id": doc["_id"]},
            {"$set": {"status": "pending", "attempts": attempts, "next_at": utcnow() + timedelta(seconds=delay), "last_error": error}},
        )
        state = await self.subs.find_one_and_update(
            {"_id": sub.id}, {"$inc": {"failures": 1}, "$set": {"last_error": error, "last_failure": utcnow()}},
            upsert=True, return_document=ReturnDocument.AFTER,
        )
        log.warning("notification %s to subscription %s failed (attempt %d, retry in %.1fs): %s", doc["_id"], sub.id, attempts, delay, error)
        if state.get("failures", 0) >= ERROR_AFTER_FAILURES and stored.resource.get("status") != "error":
            await self._set_status(stored, "error")

    async def _set_status(self, stored: StoredResource, status: str) -> None:
        current = await self.repo.read("Subscription", stored.id)
        if current is None or current.deleted:
            return
        resource = current.resource
        if resource.get("status") == status:
            return
        resource["status"] = status
        try:
            await self.repo.put("Subscription", stored.id, resource, current.version, owner=current.owner,
                                reason=f"subscription status {status}")
        except Exception:  # changed meanwhile by its owner: their write wins
            log.info("subscription %s changed while its status was being set", stored.id)

    async def _heartbeats(self) -> None:
        now = utcnow()
        # ``$lte`` alone (never true of a missing or null time) keeps this an index range; a
        # deleted subscription's heartbeat is cleared, and skipped here in case one is left.
        async for state in self.subs.find({"next_heartbeat": {"$lte": now}}):
            if state.get("deleted"):
                continue
            stored = await self.repo.read("Subscription", state["_id"])
            if stored is None or stored.deleted or stored.resource.get("status") not in ("active", "error"):
                await self.subs.update_one({"_id": state["_id"]}, {"$set": {"next_heartbeat": now + timedelta(seconds=state["heartbeat"])}})
                continue
            sub = read_subscription(stored.resource, stored.owner)
            bundle = notification_bundle(sub, state.get("base", ""), "heartbeat", stored.resource.get("status"), int(state.get("events", 0)))
            await self._enqueue(sub.id, "heartbeat", bundle)
            await self.subs.update_one({"_id": state["_id"]}, {"$set": {"next_heartbeat": now + timedelta(seconds=state["heartbeat"])}})
