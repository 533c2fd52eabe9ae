"""Sign-in throttling: failed sign-ins slow down whoever fails; they never lock the account.

A lockout after N failures lets anyone who knows a reviewer's username keep that reviewer out
(N wrong passwords every quarter of an hour). Instead, failures are counted per (username, client
address) and per client address. Past a few free failures, each counter asks for an exponentially
growing wait (1 s, 2 s, 4 s ... at most ``max_wait``) before the next attempt from that address; an
attempt made during the wait is answered 429 with ``Retry-After`` and its password is not checked
(an attacker gets no answer and costs no scrypt). The owner, signing in from their own address, is
not slowed by failures made elsewhere.

The counters live in the database (``auth_login_throttle``), like the JWT replay records, so every
worker sees the same counts; each expires ``window`` seconds after its last failure or the end of the
wait that failure set, whichever is later (a TTL index
where the database has one, a sweep and a check on read everywhere).

A successful sign-in clears its (username, address) counter, not the address counter: otherwise an
attacker holding one account could reset the address counter between guesses at others.

Time comes from ``clock`` so tests move it instead of waiting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable


def wall_clock() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class SignInThrottled(Exception):
    """Too many recent failures from this address: try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class ThrottlePolicy:
    free_per_account: int = 5  # failures for one username from one address before waits begin
    free_per_address: int = 20  # failures from one address, any usernames (a clinic behind one NAT)
    first_wait: float = 1.0
    max_wait: float = 15 * 60
    window: float = 15 * 60  # a counter is forgotten this long after its last failure


class SignInThrottle:
    def __init__(self, collection, policy: ThrottlePolicy | None = None, clock: Callable[[], datetime] = wall_clock):
        self.collection = collection
        self.policy = policy or ThrottlePolicy()
        self.clock = clock
        self._last_sweep: datetime | None = None

    async def start(self) -> None:
        try:
            await self.collection.create_index("expires", expireAfterSeconds=0)
        except Exception:  # the embedded database may not expire documents; they are swept instead
            pass

    @staticmethod
    def _keys(username: str, address: str | None) -> tuple[str, str]:
        address = address or "unknown"
        return f"account\n{username}\n{address}", f"address\n{address}"

    async def check(self, username: str, address: str | None) -> None:
        """Raise :class:`SignInThrottled` while either counter asks this address to wait."""
        now = self.clock()
        wait = 0.0
        async for doc in self.collection.find({"_id": {"$in": list(self._keys(username, address))}}):
            until = doc.get("until")
            if until is not None and _aware(doc["expires"]) > now and _aware(until) > now:
                wait = max(wait, (_aware(until) - now).total_seconds())
        if wait > 0:
            raise SignInThrottled(max(1, math.ceil(wait)))

    async def failed(self, username: str, address: str | None) -> None:
        now = self.clock()
        account, addr = self._keys(username, address)
        for key, free in ((account, self.policy.free_per_account), (addr, self.policy.free_per_address)):
            await self.collection.delete_one({"_id": key, "expires": {"$lte": now}})
            doc = await self.collection.find_one_and_update(
                {"_id": key}, {"$inc": {"failures": 1}, "$set": {"expires": now + timedelta(seconds=self.policy.window)}},
                upsert=True, return_document=True)
            failures = (doc or {}).get("failures", 1)
            if failures >= free:
                wait = min(self.policy.max_wait, self.policy.first_wait * 2 ** min(failures - free, 30))
                until = now + timedelta(seconds=wait)
                await self.collection.update_one(
                    {"_id": key}, {"$set": {"until": until, "expires": until + timedelta(seconds=self.policy.window)}})
        await self._sweep(now)

    async def succeeded(self, username: str, address: str | None) -> None:
        await self.collection.delete_one({"_id": self._keys(username, address)[0]})

    async def _sweep(self, now: datetime) -> None:
        if self._last_sweep is not None and (now - self._last_sweep).total_seconds() < 60:
            return
        self._last_sweep = now
        await self.collection.delete_many({"expires": {"$lte": now}})
