"""Retention: requests stay answerable by $inquire for at least six months after the services end."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

from pymongo import AsyncMongoClient

from server.pas import cases
from tests.pas_support import CPT, pas_request, submit

RECEIVED = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def test_retention_runs_six_months_from_the_last_service_date():
    claim = {"item": [{"servicedDate": "2026-04-01"}, {"servicedPeriod": {"start": "2026-04-10", "end": "2026-05-20"}}]}
    until = cases.retain_until(claim, RECEIVED)
    assert until.date() == (datetime(2026, 5, 20) + timedelta(days=183)).date()


def test_a_request_naming_no_service_date_is_kept_six_months_from_receipt():
    assert cases.retain_until({"item": [{}]}, RECEIVED).date() == (RECEIVED + timedelta(days=183)).date()


def test_the_setting_can_lengthen_retention_but_never_shorten_it(monkeypatch):
    monkeypatch.setenv("PRECERT_PAS_RETENTION_DAYS", "30")
    assert cases.retention_days() == 183
    monkeypatch.setenv("PRECERT_PAS_RETENTION_DAYS", "3650")
    assert cases.retention_days() == 3650


class _Storage:
    def __init__(self, db):
        self.db = db

    def collection(self, name):
        return self.db[name]


def test_purging_removes_only_expired_decided_cases(client, settings, mongodb_uri):
    request = pas_request("2.2.1", code=(CPT, "99213"), member="PCM000005")
    submit(client, request)
    marker = uuid.uuid4().hex

    async def scenario():
        mongo = AsyncMongoClient(mongodb_uri)
        storage = _Storage(mongo[settings.db_name])
        col = cases.collection(storage)
        past = datetime.now(timezone.utc) - timedelta(days=1)
        future = datetime.now(timezone.utc) + timedelta(days=30)
        await col.insert_many([
            {"_id": f"expired-{marker}", "key": f"a-{marker}", "status": "decided", "retain_until": past},
            {"_id": f"pended-{marker}", "key": f"b-{marker}", "status": "pended", "retain_until": past},
            {"_id": f"kept-{marker}", "key": f"c-{marker}", "status": "decided", "retain_until": future},
        ])
        await cases.purge_expired(storage)
        left = sorted([d["_id"].split("-")[0] async for d in col.find({"_id": {"$regex": f"-{marker}$"}})])
        newest = await col.find_one({"member_ids": "PCM000005"}, sort=[("received", -1)])
        await col.delete_many({"_id": {"$regex": f"-{marker}$"}})
        await mongo.close()
        return left, newest

    left, newest = asyncio.run(scenario())
    assert left == ["kept", "pended"]
    assert newest["retain_until"].replace(tzinfo=timezone.utc) > datetime.now(timezone.utc) + timedelta(days=182)
