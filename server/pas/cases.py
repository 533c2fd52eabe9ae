"""Prior-authorization cases: the durable record of each request, its decisions and its history.

A case is written in the same transaction as the Claim and ClaimResponse it produces, before the
response is sent, and is keyed by the submitter's Bundle identifier, so a retried submission finds
the case instead of creating a second one (a unique index makes concurrent duplicates safe too).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from datetime import date, datetime, time, timedelta, timezone

import orjson
from pymongo import ASCENDING, DESCENDING

from server.storage import Storage, utcnow

EXPEDITED_HOURS = 72
STANDARD_DAYS = 7
# PAS: a request and its answer stay available to $inquire for at least six months after the end
# date of the services. PRECERT_PAS_RETENTION_DAYS can lengthen that, never shorten it.
MIN_RETENTION_DAYS = 183


def collection(storage: Storage):
    return storage.collection("pas_cases")


async def ensure_indexes(storage: Storage) -> None:
    cases = collection(storage)
    await cases.create_index([("key", ASCENDING)], unique=True)
    await cases.create_index([("member_ids", ASCENDING)])
    await cases.create_index([("status", ASCENDING), ("due", ASCENDING)])
    await cases.create_index([("owner", ASCENDING), ("received", DESCENDING)])
    await cases.create_index([("response_id", ASCENDING)])
    await cases.create_index([("claim_id", ASCENDING)])
    await cases.create_index([("claim_keys", ASCENDING)])
    await cases.create_index([("retain_until", ASCENDING)])
    # The member look-up of every $submit (PasService.member_queries). Each index holds every field
    # its query names, so that planners which use an index only then (SecantusDB) use it too.
    resources = storage.collection("resources")
    for key in ("k.identifier", "k.subscriber-id"):
        await resources.create_index([("t", ASCENDING), ("del", ASCENDING), (key, ASCENDING)])


def new_case_id() -> str:
    return "PA" + utcnow().strftime("%y%m%d") + secrets.token_hex(4).upper()


def new_auth_number() -> str:
    return "AUTH" + secrets.token_hex(5).upper()


def request_hash(bundle: dict) -> str:
    return hashlib.sha256(orjson.dumps(bundle, option=orjson.OPT_SORT_KEYS)).hexdigest()


def idempotency_key(owner: str | None, bundle: dict, digest: str) -> str:
    """A retry is the same Bundle (identifier and content) from the same organization. A different
    Bundle that reuses an identifier, as test tools do with their fixed example payloads, is a new
    request: refusing it would fail those tools, and answering it with another request's decision
    would be wrong."""
    ident = bundle.get("identifier") or {}
    return f"{owner or '-'}|{ident.get('system') or ''}|{ident.get('value') or ''}|{digest}"


def due_time(received: datetime, expedited: bool, categories=(), clocks: dict | None = None) -> datetime:
    """The decision clock: the payer's clock for the request's service categories (the shortest,
    when it has several; ``payer.clocks`` in the rules), else its ``default``, else CMS-0057-F's
    72 hours for expedited requests and 7 calendar days for standard."""
    urgency = "expedited" if expedited else "standard"
    clocks = clocks or {}
    hours = [clocks[c][urgency] for c in categories or () if urgency in clocks.get(c, {})]
    if not hours and urgency in clocks.get("default", {}):
        hours = [clocks["default"][urgency]]
    if hours:
        return received + timedelta(hours=min(hours))
    return received + (timedelta(hours=EXPEDITED_HOURS) if expedited else timedelta(days=STANDARD_DAYS))


def event(kind: str, by: str, detail: str = "", **extra) -> dict:
    return {"at": utcnow(), "event": kind, "by": by, "detail": detail, **extra}


def retention_days() -> int:
    try:
        days = int(os.environ.get("PRECERT_PAS_RETENTION_DAYS", "") or MIN_RETENTION_DAYS)
    except ValueError:
        days = MIN_RETENTION_DAYS
    return max(days, MIN_RETENTION_DAYS)


def services_end(claim: dict, received: datetime) -> datetime:
    """The last date of the services asked for (items' service dates or periods, else the Claim's
    billable period), or the day the request was received when it names none."""
    dates: list[date] = []
    texts = [claim.get("billablePeriod", {}).get("end") if isinstance(claim.get("billablePeriod"), dict) else None]
    for item in claim.get("item") or []:
        if isinstance(item, dict):
            texts.append(item.get("servicedDate"))
            period = item.get("servicedPeriod")
            if isinstance(period, dict):
                texts.append(period.get("end") or period.get("start"))
    for text in texts:
        if isinstance(text, str) and len(text) >= 10:
            try:
                dates.append(date.fromisoformat(text[:10]))
            except ValueError:
                continue
    end = max(dates, default=received.date())
    return datetime.combine(max(end, received.date()), time.max, tzinfo=timezone.utc)


def retain_until(claim: dict, received: datetime) -> datetime:
    return services_end(claim, received) + timedelta(days=retention_days())


async def purge_expired(storage: Storage, now: datetime | None = None) -> int:
    """Delete the cases whose retention has ended (never a pended one). Returns how many."""
    result = await collection(storage).delete_many({"retain_until": {"$lt": now or utcnow()}, "status": {"$ne": "pended"}})
    return result.deleted_count
