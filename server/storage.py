"""Storage: the one module that talks to MongoDB.

Resources are kept as their original JSON (bytes, exactly as serialized at write time) beside
extracted, indexed search keys. The current version lives in ``resources``; versions it replaced
move to ``resource_history``. A create is therefore one insert; an update or delete moves the old
version and writes the new one in one transaction, so a failed request never leaves half a record.

Other modules reach MongoDB only through :class:`Storage` (resources) and the named collections it
hands out for their own records (cases, outbox, audit).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

import mongomotor
from mongomotor.utils import get_sync_alias
import orjson
from mongoengine import connection as me_connection
import pymongo
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from server.fhir.search_params import extract_keys

log = logging.getLogger("precert.storage")

ALIAS = "precert"

# Search keys worth an index: the ones every client and every Da Vinci flow filters on.
# Each index costs every write (about 0.1 ms a write on the embedded server), so only the keys
# that Da Vinci flows and typical clients filter on are indexed; other parameters still work,
# narrowed by the type index.
INDEXED_KEYS = ("identifier", "patient", "subject", "status", "url", "request", "subscriber-id", "beneficiary")

# The indexes every hot-path query is served by (tests/test_query_plans.py proves each with
# explain). Some planners (SecantusDB's) use an index only when the fields a query names are a
# leading prefix of it, so each index starts with exactly the fields its queries name, in any
# order: a resource search names ``t``, ``del`` and its key (see ``Storage.search_query``).
# One index a line, so that concurrent additions merge cleanly.
HOT_PATH_INDEXES: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = (
    ("resources", (("t", ASCENDING), ("del", ASCENDING), ("lu", DESCENDING))),  # a type, newest first; _lastUpdated
    ("resources", (("t", ASCENDING), ("del", ASCENDING), ("id", ASCENDING))),  # _id searches
    ("resources", (("_id", ASCENDING), ("v", ASCENDING))),  # an update's version guard (``_write``)
    ("resources", (("t", ASCENDING), ("o", ASCENDING))),  # an organization's resources (isolation)
    ("resources", (("t", ASCENDING), ("del", ASCENDING), ("k.created.lo", ASCENDING))),
    *(("resources", (("t", ASCENDING), ("del", ASCENDING), (f"k.{key}", ASCENDING))) for key in INDEXED_KEYS),
    ("resource_history", (("t", ASCENDING), ("id", ASCENDING), ("v", DESCENDING))),
    ("notification_outbox", (("status", ASCENDING), ("next_at", ASCENDING), ("subscription", ASCENDING))),  # due notifications
    ("notification_outbox", (("status", ASCENDING), ("lease", ASCENDING), ("subscription", ASCENDING))),  # expired leases
    ("notification_outbox", (("_id", ASCENDING), ("status", ASCENDING), ("lease", ASCENDING))),  # taking a lease
    ("subscription_state", (("owner", ASCENDING), ("deleted", ASCENDING), ("topic", ASCENDING))),  # matching ($in last)
)


# Every database call is bounded, so a frozen or dead database answers 503 within seconds instead
# of holding requests for minutes. ``timeoutMS`` bounds a whole operation (selection, connection
# and round trips together); the others bound the steps for drivers and calls that ignore it.
TIMEOUTS = {
    "serverSelectionTimeoutMS": 2000,
    "connectTimeoutMS": 2000,
    "socketTimeoutMS": 5000,
    "timeoutMS": 5000,
}
# An acknowledged write is on disk on a majority of the replica set (on the embedded database,
# one node: written to its journal) before Precert answers.
WRITE_CONCERN = {"w": "majority", "journal": True}
# A readiness probe must answer well within a load balancer's own timeout.
PING_TIMEOUT = 1.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def fhir_instant(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class StoredResource:
    type: str
    id: str
    version: int
    last_updated: datetime
    json: bytes
    deleted: bool = False
    owner: str | None = None  # the provider organization whose data this is (isolation)

    @property
    def resource(self) -> dict:
        return orjson.loads(self.json)

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @classmethod
    def from_doc(cls, doc: dict) -> "StoredResource":
        lu = doc["lu"]
        lu = lu.replace(tzinfo=timezone.utc) if lu.tzinfo is None else lu.astimezone(timezone.utc)
        return cls(doc["t"], doc["id"], doc["v"], lu, doc.get("json") or b"", doc.get("del", False), doc.get("o"))


class VersionConflict(Exception):
    def __init__(self, current: int | None):
        super().__init__(f"current version is {current}")
        self.current = current


class Storage:
    """Connection lifecycle plus the resource repository."""

    def __init__(self, uri: str, db_name: str):
        self.uri = uri
        self.db_name = db_name
        self.client = None
        self.db = None
        # One mongoengine alias per Storage, so several apps (tests) can run in one process.
        self.alias = f"{ALIAS}-{uuid.uuid4().hex[:12]}"

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Connect once at start-up (mongomotor's connect is synchronous)."""
        # mongoengine hands back an existing client whose settings equal the new one's, which would
        # be another Storage's, bound to that Storage's event loop. The application name (sent to
        # the server, shown in its logs) carries this Storage's alias, so no two are equal.
        self.client = mongomotor.connect(db=self.db_name, alias=self.alias, host=self.uri, tz_aware=True,
                                         appname=self.alias, **TIMEOUTS, **WRITE_CONCERN)
        self.db = self.client[self.db_name]

    async def close(self) -> None:
        """Close the client on the server's event loop, then unregister this Storage's aliases with
        mongoengine's public ``disconnect`` (mongomotor's own starts an event loop of its own, which
        cannot run inside the server's)."""
        client, self.client = self.client, None
        if client is not None:
            await client.close()
        # mongomotor keeps a second, synchronous client under a derived alias: disconnect closes it.
        me_connection.disconnect(get_sync_alias(self.alias))
        # The asynchronous client is closed already; disconnect's own close() of it returns a
        # coroutine that needs no awaiting.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
            me_connection.disconnect(self.alias)

    def collection(self, name: str):
        return self.db[name]

    async def ensure_indexes(self) -> None:
        for name, keys in HOT_PATH_INDEXES:
            await self.db[name].create_index(list(keys))

    async def ping(self) -> bool:
        try:
            with pymongo.timeout(PING_TIMEOUT):
                await asyncio.wait_for(self.db.command("ping"), PING_TIMEOUT + 0.5)
            return True
        except Exception:
            return False

    # ------------------------------------------------------------------ resources
    def _document(self, rtype: str, rid: str, version: int, moment: datetime, resource: dict | None, owner: str | None = None) -> dict:
        if resource is not None:
            meta = dict(resource.get("meta") or {})
            meta["versionId"] = str(version)
            meta["lastUpdated"] = fhir_instant(moment)
            # resourceType, id and meta first, as FHIR servers conventionally write them.
            rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
            resource.clear()
            resource.update({"resourceType": rtype, "id": rid, "meta": meta, **rest})
            keys, sort = extract_keys(rtype, resource)
            body = orjson.dumps(resource)
        else:
            keys, sort, body = {}, {}, b""
        return {
            "_id": f"{rtype}/{rid}",
            "t": rtype,
            "id": rid,
            "v": version,
            "lu": moment,
            "del": resource is None,
            "json": body,
            "k": keys,
            "s": sort,
            "o": owner,
        }

    async def _write(self, doc: dict, current: dict | None, session) -> None:
        """Write ``doc`` as the current version; the version it replaces moves to the history."""
        if current is None:
            await self.db.resources.insert_one(doc, session=session)
            return
        old = {k: current.get(k) for k in ("t", "id", "v", "lu", "del", "json", "o")}
        old["_id"] = f"{current['_id']}/{current['v']}"
        await self.db.resource_history.insert_one(old, session=session)
        result = await self.db.resources.replace_one({"_id": doc["_id"], "v": current["v"]}, doc, session=session)
        if result.matched_count != 1:
            raise VersionConflict(None)

    async def transaction(self, fn) -> Any:
        """Run ``await fn(session)`` in one transaction (retried on transient write conflicts), for
        capabilities whose writes span several collections."""
        return await self._transact(fn)

    async def _transact(self, fn) -> Any:
        """Run ``fn(session)`` in a transaction, retried on transient write conflicts."""
        async with self.client.start_session() as session:
            return await session.with_transaction(fn)

    async def create(self, rtype: str, resource: dict, rid: str | None = None, owner: str | None = None, session=None) -> StoredResource:
        """Create a resource. With ``session``, the write joins the caller's transaction."""
        rid = rid or str(uuid.uuid4())
        doc = self._document(rtype, rid, 1, utcnow(), resource, owner)
        try:
            await self.db.resources.insert_one(doc, session=session)
        except DuplicateKeyError:
            raise VersionConflict(None) from None
        return StoredResource.from_doc(doc)

    async def create_many(self, items: list[tuple[str, dict, str]], owner: str | None = None, session=None) -> list[StoredResource]:
        """Create several new resources, (type, resource, id) each, in one round trip."""
        moment = utcnow()
        docs = [self._document(rtype, rid, 1, moment, resource, owner) for rtype, resource, rid in items]
        try:
            await self.db.resources.insert_many(docs, ordered=True, session=session)
        except DuplicateKeyError:
            raise VersionConflict(None) from None
        return [StoredResource.from_doc(d) for d in docs]

    async def read(self, rtype: str, rid: str) -> StoredResource | None:
        doc = await self.db.resources.find_one({"_id": f"{rtype}/{rid}"}, {"k": 0, "s": 0})
        return StoredResource.from_doc(doc) if doc else None

    async def vread(self, rtype: str, rid: str, version: int) -> StoredResource | None:
        # By ``_id`` alone, the version checked here: a filter on ``_id`` and ``v`` is a collection
        # scan on planners that need an index holding every field the filter names.
        current = await self.db.resources.find_one({"_id": f"{rtype}/{rid}"}, {"k": 0, "s": 0})
        if current is not None and current["v"] != version:
            current = None
        doc = current or await self.db.resource_history.find_one({"_id": f"{rtype}/{rid}/{version}"})
        return StoredResource.from_doc(doc) if doc else None

    async def history(self, rtype: str, rid: str, limit: int = 100) -> list[StoredResource]:
        current = await self.db.resources.find_one({"_id": f"{rtype}/{rid}"}, {"k": 0, "s": 0})
        cursor = self.db.resource_history.find({"t": rtype, "id": rid}).sort("v", DESCENDING).limit(limit)
        older = [StoredResource.from_doc(d) async for d in cursor]
        return ([StoredResource.from_doc(current)] if current else []) + older

    async def update(
        self, rtype: str, rid: str, resource: dict, if_match: int | None = None, owner: str | None = None, session=None
    ) -> tuple[StoredResource, bool]:
        """Update (or create at a client-chosen id). Returns (stored, created). The owner of an
        existing resource is kept; ``owner`` applies when the update creates it."""

        async def work(session):
            current = await self.db.resources.find_one({"_id": f"{rtype}/{rid}"}, {"k": 0, "s": 0}, session=session)
            if if_match is not None and (current is None or current["v"] != if_match or current.get("del")):
                raise VersionConflict(current["v"] if current else None)
            version = current["v"] + 1 if current else 1
            keep_owner = current.get("o") if current and current.get("o") else owner
            doc = self._document(rtype, rid, version, utcnow(), resource, keep_owner)
            await self._write(doc, current, session)
            return doc, current is None or bool(current.get("del"))

        if session is not None:
            doc, created = await work(session)
            return StoredResource.from_doc(doc), created
        try:
            doc, created = await self._transact(work)
        except DuplicateKeyError:
            raise VersionConflict(None) from None
        return StoredResource.from_doc(doc), created

    async def delete(self, rtype: str, rid: str) -> StoredResource | None:
        """Logical delete: a new, empty version. Returns None when there was nothing to delete."""

        async def work(session):
            current = await self.db.resources.find_one({"_id": f"{rtype}/{rid}"}, {"k": 0, "s": 0}, session=session)
            if current is None or current.get("del"):
                return None
            doc = self._document(rtype, rid, current["v"] + 1, utcnow(), None, current.get("o"))
            await self._write(doc, current, session)
            return doc

        doc = await self._transact(work)
        return StoredResource.from_doc(doc) if doc else None

    @staticmethod
    def search_query(rtype: str, criteria: dict) -> dict:
        """The filter :meth:`search` runs: current, undeleted resources of one type (each
        ``HOT_PATH_INDEXES`` entry for resources starts with these two fields)."""
        return {"t": rtype, "del": False, **criteria}

    async def search(
        self,
        rtype: str,
        criteria: dict,
        *,
        sort: list[tuple[str, int]] | None = None,
        offset: int = 0,
        count: int = 20,
        with_total: bool = True,
    ) -> tuple[list[StoredResource], int | None]:
        query = self.search_query(rtype, criteria)
        order = [(field, direction) for field, direction in (sort or [("lu", DESCENDING)])]
        order.append(("_id", ASCENDING))
        cursor = self.db.resources.find(query, {"k": 0, "s": 0}).sort(order).skip(offset).limit(count)
        found = [StoredResource.from_doc(d) async for d in cursor]
        total = None
        if with_total:
            if offset == 0 and len(found) < count:
                total = len(found)
            else:
                total = await self.db.resources.count_documents(query)
        return found, total

    async def read_many(self, refs: Iterable[str]) -> list[StoredResource]:
        ids = list(dict.fromkeys(refs))
        if not ids:
            return []
        # By ``_id`` alone (the primary index); deletion markers are dropped here.
        cursor = self.db.resources.find({"_id": {"$in": ids}}, {"k": 0, "s": 0})
        return [StoredResource.from_doc(d) async for d in cursor if not d.get("del")]

    async def bulk_load(self, items: Iterable[tuple[str, dict, str]], owner: str | None = None, batch: int = 500) -> int:
        """Insert many new resources, (type, resource, id) each, unordered and in batches, with no
        transaction and a generous time limit per batch. For seeding benchmark and test databases
        only: requests write through :meth:`create` and :meth:`create_many`."""
        moment = utcnow()
        docs: list[dict] = []
        written = 0

        async def flush() -> None:
            with pymongo.timeout(120):
                await self.db.resources.insert_many(docs, ordered=False)

        for rtype, resource, rid in items:
            docs.append(self._document(rtype, rid, 1, moment, resource, owner))
            if len(docs) >= batch:
                await flush()
                written, docs = written + len(docs), []
        if docs:
            await flush()
            written += len(docs)
        return written


# ---------------------------------------------------------------------- search translation
def _date_clause(prefix: str, lo: datetime, hi: datetime) -> dict:
    if prefix == "eq":
        return {"lo": {"$gte": lo}, "hi": {"$lte": hi}}
    if prefix == "ne":
        return {"$or": [{"lo": {"$lt": lo}}, {"hi": {"$gt": hi}}]}
    if prefix == "gt":
        return {"hi": {"$gt": hi}}
    if prefix == "ge":
        return {"hi": {"$gte": lo}}
    if prefix == "lt":
        return {"lo": {"$lt": lo}}
    if prefix == "le":
        return {"lo": {"$lte": hi}}
    if prefix == "sa":
        return {"lo": {"$gt": hi}}
    if prefix == "eb":
        return {"hi": {"$lt": lo}}
    # "ap": overlapping
    return {"lo": {"$lte": hi}, "hi": {"$gte": lo}}


def _token_key(system: str | None, code: str | None) -> dict | str:
    if system is None:
        return code or ""
    if code is None:
        return {"$regex": "^" + re.escape(system) + r"\|"}
    return f"{system}|{code}"


def criteria_filter(criteria) -> dict:
    """Translate parsed search criteria (server.fhir.search.Criterion) into a MongoDB filter."""
    clauses: list[dict] = []
    for c in criteria:
        field = f"k.{c.name}"
        if c.modifier == "missing":
            clauses.append({field: {"$exists": not c.values[0]}})
            continue
        ors: list[dict] = []
        if c.type == "id":
            clauses.append({"id": {"$in": [str(v) for v in c.values]}})
            continue
        if c.name == "_lastUpdated":
            for prefix, lo, hi in c.values:
                clause = _date_clause(prefix, lo, hi)
                if "$or" in clause:
                    ors.append({"$or": [{"lu": cond["lo"] if "lo" in cond else cond["hi"]} for cond in clause["$or"]]})
                else:
                    cond: dict = {}
                    for part in clause.values():
                        cond.update(part)
                    ors.append({"lu": cond})
        elif c.type == "token":
            for system, code in c.values:
                key = _token_key(system, code)
                ors.append({field: key if isinstance(key, dict) else key})
            if c.modifier == "not":
                clauses.append({"$nor": ors})
                continue
        elif c.type == "reference":
            for value in c.values:
                if c.modifier == "identifier":
                    system, code = value
                    ors.append({field: f"identifier:{system}|{code}" if system is not None else f"identifier:{code}"})
                else:
                    ors.append({field: str(value).split("/_history/")[0]})
        elif c.type == "date":
            for prefix, lo, hi in c.values:
                ors.append({field: {"$elemMatch": _date_clause(prefix, lo, hi)}})
        elif c.type == "string":
            for value in c.values:
                norm = " ".join(str(value).lower().split())
                if c.modifier == "exact":
                    ors.append({field: norm})
                elif c.modifier == "contains":
                    ors.append({field: {"$regex": re.escape(norm)}})
                else:
                    ors.append({field: {"$regex": "^" + re.escape(norm)}})
        elif c.type == "uri":
            for value in c.values:
                if c.modifier == "below":
                    ors.append({field: {"$regex": "^" + re.escape(value)}})
                else:
                    ors.append({field: value})
        if len(ors) == 1:
            clauses.append(ors[0])
        elif ors:
            clauses.append({"$or": ors})
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def sort_spec(sort: list[tuple[str, str, bool]]) -> list[tuple[str, int]]:
    out = []
    for name, _type, desc in sort:
        direction = DESCENDING if desc else ASCENDING
        if name == "_lastUpdated":
            out.append(("lu", direction))
        elif name == "_id":
            out.append(("id", direction))
        else:
            out.append((f"s.{name}", direction))
    return out
