"""The member look-up of every $submit stays an index look-up however many resources are stored,
and concurrent look-ups of one member share one query."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pymongo import DESCENDING, ASCENDING, MongoClient

from server.fhir.repository import Repository
from server.pas.service import PasService
from server.shared_cache import SharedCache
from tests.pas_support import claim_response, entry, pas_request, submit

STORED = 20_000


def plan_stages(plan: dict) -> list[dict]:
    out = [plan]
    for key in ("inputStage", "queryPlan"):
        if isinstance(plan.get(key), dict):
            out.extend(plan_stages(plan[key]))
    for child in plan.get("inputStages") or []:
        out.extend(plan_stages(child))
    return out


@pytest.fixture(scope="module")
def resources(server, settings, mongodb_uri):
    """The server's resources collection, holding tens of thousands of other stored resources."""
    mongo = MongoClient(mongodb_uri)
    col = mongo[settings.db_name]["resources"]
    run = uuid.uuid4().hex[:8]
    docs = [{"_id": f"Coverage/bulk-{run}-{i}", "t": "Coverage", "id": f"bulk-{run}-{i}", "v": 1, "del": False,
             "k": {"identifier": [f"urn:bulk|{run}-{i}", f"{run}-{i}"], "subscriber-id": [f"{run}-{i}"], "status": ["active"]}}
            for i in range(STORED)]
    for start in range(0, STORED, 5_000):
        col.insert_many(docs[start:start + 5_000], ordered=False)
    yield col
    col.delete_many({"_id": {"$regex": f"^Coverage/bulk-{run}-"}})
    mongo.close()


@pytest.mark.parametrize("member", [["urn:bulk|x-17", "x-17"], ["PCM000001"]])
def test_the_member_look_up_is_served_by_an_index(resources, member):
    for criteria in PasService.member_queries(member):
        query = {"t": "Coverage", "del": False, **criteria}
        explained = resources.find(query).sort([("lu", DESCENDING), ("_id", ASCENDING)]).limit(1).explain()
        stages = plan_stages(explained["queryPlanner"]["winningPlan"])
        assert not any(s.get("stage") == "COLLSCAN" for s in stages), stages
        assert any(s.get("indexName") for s in stages), stages
        examined = (explained.get("executionStats") or {}).get("totalDocsExamined")
        if examined is not None:
            assert examined < 100, f"{examined} documents examined of {STORED}"


def test_a_member_known_only_by_subscriber_id_is_found(client, resources):
    request = pas_request("2.2.1", member="PCM000001")
    for ident in entry(request, "Coverage")["identifier"]:
        ident["system"] = "urn:elsewhere"
    for ident in entry(request, "Patient")["identifier"]:
        ident["system"] = "urn:elsewhere"
    cr = claim_response(submit(client, request).json())
    assert cr["outcome"] != "error", cr.get("error")


class CountingStorage:
    def __init__(self):
        self.searches = 0
        self.release = asyncio.Event()

    async def search(self, rtype, criteria, **kw):
        self.searches += 1
        await self.release.wait()
        return [], None

    async def read(self, *a):
        return None


class BareState:
    """Just enough of AppState for a system repository: its storage, and no isolation hooks."""

    owner_resolver = None

    def __init__(self, storage):
        self.storage = storage

    async def search_filter_for(self, principal, rtype):
        return None

    async def visible_to(self, principal, stored):
        return True


class NoVersions:
    """The cache_versions collection of a database nobody has written to."""

    async def find_one(self, *a, **kw):
        return None


def test_concurrent_look_ups_of_one_member_share_one_query():
    async def scenario():
        service = PasService.__new__(PasService)
        service.storage = CountingStorage()
        # The member look-up's system repository, over the counting storage and no isolation hooks.
        service.member_records = Repository.system(BareState(service.storage), actor="pas-member-lookup")
        service.members = SharedCache(NoVersions(), "pas-members", ttl=30)
        waiting = [asyncio.ensure_future(service._member_records(["urn:x|m1"])) for _ in range(50)]

        async def release():  # runs after all fifty have asked (tasks start in creation order)
            service.storage.release.set()

        results = await asyncio.gather(*waiting, release())
        results = results[:50]
        return service.storage.searches, results

    searches, results = asyncio.run(scenario())
    assert searches == len(PasService.member_queries(["urn:x|m1"])), "one look-up (its queries) for fifty requests"
    assert all(r == (None, None) for r in results)
