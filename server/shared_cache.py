"""Short-lived caches that stay right across workers, and that do not stampede.

Each worker keeps its own entries (a ``cachetools.TTLCache``), but a change that makes them stale
(a Coverage or Patient written through any worker) bumps a version stamp in the database
(``cache_versions``). Every worker compares its stamp with the database's at most once per
``check_interval`` (one small indexed read per second per cache), so a change made through one
worker reaches the others within that interval, and is seen at once by the worker that made it.

Loads are single-flight per key: when an entry expires under load, one request reads the database
and the others arriving meanwhile wait for its answer instead of all running the same query.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Hashable

from cachetools import TTLCache


class SharedCache:
    def __init__(self, collection, name: str, *, ttl: float, maxsize: int = 10_000, check_interval: float = 1.0):
        self.collection = collection  # the database's ``cache_versions`` collection
        self.name = name
        self.entries: TTLCache = TTLCache(maxsize=maxsize, ttl=ttl)
        self.check_interval = check_interval
        self._version: int | None = None
        self._checked = float("-inf")
        self._loading: dict[Hashable, asyncio.Future] = {}
        # Bumped by every invalidation: a load that started before one must not store its answer.
        self._generation = 0

    async def _fresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_interval:
            return
        self._checked = now
        doc = await self.collection.find_one({"_id": self.name})
        version = (doc or {}).get("v", 0)
        if version != self._version:
            self.entries.clear()
            self._generation += 1
            self._version = version

    async def get(self, key: Hashable, load: Callable[[], Awaitable[Any]]) -> Any:
        await self._fresh()
        try:
            return self.entries[key]
        except KeyError:
            pass
        waiting = self._loading.get(key)
        if waiting is not None:
            try:
                return await asyncio.shield(waiting)
            except asyncio.CancelledError:
                if not waiting.cancelled():  # this request itself was cancelled
                    raise
                # the loading request went away (its client hung up): load here instead
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        generation = self._generation
        try:
            value = await load()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: waiters get it, nothing logs "never retrieved"
            raise
        finally:
            self._loading.pop(key, None)
        if generation == self._generation:
            self.entries[key] = value
        future.set_result(value)
        return value

    async def invalidate(self) -> None:
        """Forget every entry here and, through the stamp, in every other worker."""
        self.entries.clear()
        self._generation += 1
        doc = await self.collection.find_one_and_update({"_id": self.name}, {"$inc": {"v": 1}}, upsert=True, return_document=True)
        self._version = (doc or {}).get("v")
        self._checked = time.monotonic()
