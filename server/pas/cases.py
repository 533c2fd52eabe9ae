"""Prior-authorization cases: the durable record of each request, its decisions and its history.

A case is written in the same transaction as the Claim and ClaimResponse it produces, before the
response is sent, and is keyed by the submitter's Bundle identifier, so a retried submission finds
the case instead of creating a second one (a unique index makes concurrent duplicates safe too).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal

from typing_extensions import TypedDict  # one pydantic can validate on Python 3.11 (the case model check)

import orjson
from pymongo import ASCENDING, DESCENDING

from server.storage import Storage, utcnow
from server import settings

EXPEDITED_HOURS = 72
STANDARD_DAYS = 7
# PAS: a request and its answer stay available to $inquire for at least six months after the end
# date of the services. PRECERT_PAS_RETENTION_DAYS can lengthen that, never shorten it.
MIN_RETENTION_DAYS = 183


# One line of a case's history (:func:`event`). The functional form, as one key is ``as``.
CaseEvent = TypedDict("CaseEvent", {
    "at": datetime,
    "event": str,
    "by": str,
    "detail": str,
    "sequence": int,  # the item an automatic decision was about
    "rule": "str | None",  # the payer rule that decided it
    "as": str,  # the role a person decided in ("physician reviewer (MD)")
}, total=False)


class Case(TypedDict, total=False):
    """A case as stored in ``pas_cases``: one per prior-authorization request. It is read and written
    as a document, so its shape is declared here, once, for every module that reads one (PAS,
    review, appeals, the dashboard and metrics). ``decisions`` hold
    :class:`server.pas.adjudicate.ItemDecision` as dictionaries."""

    # identity and retry
    _id: str  # the case number, also the administration reference number
    key: str  # idempotency key (:func:`idempotency_key`), unique
    hash: str  # the request Bundle's digest
    owner: str | None  # the submitting organization (isolation)
    version: str  # the PAS version answered: "2.0.1" or "2.2.1"
    # where it stands
    status: Literal["pended", "decided", "error", "cancelled", "superseded"]
    urgency: Literal["expedited", "standard"]
    received: datetime
    due: datetime  # the decision clock
    retain_until: datetime  # kept for $inquire until then
    decided: datetime | None
    decided_by: str | None
    decided_as: str | None  # the decider's role when a person decided
    signed: dict  # the physician's signature of a clinical decision: by, as, credentials, rationale, at
    recommendation: dict | None  # a nurse reviewer's recommendation of denial, for a physician to decide
    reviewed_by_human: bool
    assignee: str | None
    # what was asked and answered
    request: bytes  # the request Bundle as received (JSON)
    response: bytes  # the current response Bundle (JSON)
    response_id: str  # the ClaimResponse's id
    claim_id: str
    auth_number: str | None
    auth_numbers: list[str]
    decisions: list[dict]
    original_decisions: list[dict]  # the automatic or first decisions, when a person changed them
    errors: list[list[str]]  # (X12 901 code, text, FHIRPath) of a business error
    codes: list[str]
    categories: list[str]
    # who it is about and from: the $inquire and update keys
    member_ids: list[str]
    provider_ids: list[str]
    sender_ids: list[str]
    claim_keys: list[str]
    patient_id: str | None
    coverage_id: str | None
    # updates
    prior: str | None  # the case this one updates
    superseded_by: str | None
    # review
    history: list[CaseEvent]
    notes: list[dict]
    extension: dict | None  # a decision-clock extension taken
    info_request: dict | None  # a reviewer's request for more information
    info_requested: datetime | None
    attachments_received: list[dict]
    peer_to_peer: dict | None
    appeals: list[str]
    overturned: datetime | None
    overturned_by: str | None
    appeal: str | None  # the appeal that overturned the denial


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
    # The member look-up of every $submit (PasService.member_queries) is served by the FHIR store's
    # own indexes on identifier and subscriber-id (server.storage.HOT_PATH_INDEXES).


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


def event(kind: str, by: str, detail: str = "", **extra) -> CaseEvent:
    return {"at": utcnow(), "event": kind, "by": by, "detail": detail, **extra}


def retention_days() -> int:
    try:
        days = settings.pas_retention_days() or MIN_RETENTION_DAYS
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
