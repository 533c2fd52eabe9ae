"""Member caches shared by workers: a change through one worker clears every worker's entries, and
an expired entry under load is read from the database once, not once per waiting request."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pymongo import AsyncMongoClient

from server.shared_cache import SharedCache


@pytest.fixture
async def versions(mongodb_uri):
    client = AsyncMongoClient(mongodb_uri)
    yield client[f"precert_cache_{uuid.uuid4().hex[:8]}"]["cache_versions"]
    await client.close()


def worker_cache(versions, **kw) -> SharedCache:
    """What one worker process holds (each worker builds its own)."""
    return SharedCache(versions, "members", ttl=60, check_interval=kw.pop("check_interval", 0), **kw)


async def test_a_change_through_one_worker_clears_the_other_workers_entries(versions):
    first, second = worker_cache(versions), worker_cache(versions)
    record = {"status": "active"}

    async def load():
        return dict(record)

    assert (await first.get("PCM1", load))["status"] == "active"
    assert (await second.get("PCM1", load))["status"] == "active"
    record["status"] = "cancelled"
    assert (await second.get("PCM1", load))["status"] == "active"  # cached until told
    await first.invalidate()
    assert (await second.get("PCM1", load))["status"] == "cancelled"
    assert (await first.get("PCM1", load))["status"] == "cancelled"


async def test_the_worker_that_made_the_change_sees_it_at_once(versions):
    cache = worker_cache(versions, check_interval=3600)
    value = {"n": 1}

    async def load():
        return dict(value)

    assert (await cache.get("k", load))["n"] == 1
    value["n"] = 2
    await cache.invalidate()
    assert (await cache.get("k", load))["n"] == 2


async def test_concurrent_misses_read_the_database_once(versions):
    cache = worker_cache(versions)
    loads = 0
    release = asyncio.Event()

    async def load():
        nonlocal loads
        loads += 1
        await release.wait()
        return "record"

    waiting = [asyncio.create_task(cache.get("k", load)) for _ in range(20)]
    while loads == 0:
        await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == ["record"] * 20
    assert loads == 1


async def test_a_failed_load_is_not_remembered(versions):
    cache = worker_cache(versions)
    calls = 0

    async def load():
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database unreachable")
        return "record"

    with pytest.raises(ConnectionError):
        await cache.get("k", load)
    assert await cache.get("k", load) == "record"


async def test_a_cancelled_load_lets_a_waiting_request_load_itself(versions):
    cache = worker_cache(versions)
    started = asyncio.Event()

    async def slow():
        started.set()
        await asyncio.Event().wait()

    async def fast():
        return "record"

    first = asyncio.create_task(cache.get("k", slow))
    await started.wait()
    second = asyncio.create_task(cache.get("k", fast))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == "record"
