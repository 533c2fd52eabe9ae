"""Every query on a hot path is served by an index, on a database already holding a payer's volume
of resources and cases, so its cost does not grow with every stored Claim.

The database is seeded through Storage (bench/seed.py) and the server's own start-up creates the
indexes. ``PRECERT_PLAN_RESOURCES`` sets how many resources are stored: 5,000 by default, so the
suite stays quick; ``bench/run`` runs this module with 50,000.
"""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pymongo
import pytest
from pymongo import ASCENDING, DESCENDING

from bench.seed import CLAIM_SYSTEM, MEMBER_SYSTEM, ORDER_SYSTEM, seed
from server.app import create_app
from server.fhir.search import parse_search
from server.pas.service import PasService
from server.settings import Settings
from server.storage import Storage, criteria_filter, utcnow
from server.subscriptions.service import PAS_TOPIC, SubscriptionService
from tests.support import ThreadedServer

RESOURCES = int(os.environ.get("PRECERT_PLAN_RESOURCES", "5000"))
CASES = RESOURCES // 5
RUN = "plan"
MEMBER = f"{RUN}-3"
SEARCH_ORDER = [("lu", DESCENDING), ("_id", ASCENDING)]


def plan_stages(plan: dict) -> list[dict]:
    out = [plan]
    for key in ("inputStage", "queryPlan"):
        if isinstance(plan.get(key), dict):
            out.extend(plan_stages(plan[key]))
    for child in plan.get("inputStages") or []:
        out.extend(plan_stages(child))
    return out


@pytest.fixture(scope="module")
async def storage(mongodb_uri):
    """A Storage on a database the server has started on (its indexes created), then seeded."""
    db_name = f"precert_plans_{uuid.uuid4().hex[:8]}"
    ThreadedServer(create_app(Settings(mongodb_uri=mongodb_uri, db_name=db_name, load_sandbox=False))).start().stop()
    st = Storage(mongodb_uri, db_name)
    st.connect()
    await seed(st, RESOURCES, CASES, run=RUN)
    now = utcnow()
    with pymongo.timeout(120):
        await st.collection("notification_outbox").insert_many(
            [{"status": "delivered", "subscription": f"s{i % 7}", "next_at": now, "created": now} for i in range(2000)])
    yield st
    with pymongo.timeout(300):
        await st.client.drop_database(db_name)
    await st.close()


def search(rtype: str, criteria: dict) -> tuple[str, dict, list]:
    return "resources", Storage.search_query(rtype, criteria), SEARCH_ORDER


def fhir_search(rtype: str, query: str) -> tuple[str, dict, list]:
    """The filter the FHIR REST search builds for ``GET /fhir/{rtype}?{query}``."""
    params = [tuple(p.split("=", 1)) for p in query.split("&")]
    return search(rtype, criteria_filter(parse_search(rtype, params).criteria))


NOW = utcnow()
HOT_PATH = {
    # $submit's member look-up, by member identifier and by subscriber id
    "member by identifier": search("Coverage", PasService.member_queries([f"{MEMBER_SYSTEM}|{MEMBER}", MEMBER])[0]),
    "member by subscriber id": search("Coverage", PasService.member_queries([f"{MEMBER_SYSTEM}|{MEMBER}", MEMBER])[1]),
    # CRD's member look-up (cds_hooks.routes) and the searches EHRs and DTR clients run
    "CRD Coverage by identifier": search("Coverage", {"k.identifier": {"$in": [f"{MEMBER_SYSTEM}|{MEMBER}"]}}),
    "Coverage by beneficiary": fhir_search("Coverage", f"beneficiary=Patient/p-{MEMBER}"),
    "Coverage by patient": fhir_search("Coverage", f"patient=Patient/p-{MEMBER}"),
    "Patient by identifier": fhir_search("Patient", f"identifier={MEMBER_SYSTEM}|{MEMBER}"),
    "Patient by _id": fhir_search("Patient", f"_id=p-{MEMBER}"),
    "Claim by identifier": fhir_search("Claim", f"identifier={CLAIM_SYSTEM}|{MEMBER}"),
    "Claim by patient": fhir_search("Claim", f"patient=Patient/p-{MEMBER}"),
    "ClaimResponse by request": fhir_search("ClaimResponse", f"request=Claim/cl-{MEMBER}"),
    "ServiceRequest by identifier": fhir_search("ServiceRequest", f"identifier={ORDER_SYSTEM}|{MEMBER}"),
    "Task by identifier": search("Task", {"k.identifier": {"$in": ["urn:case|x"]}}),
    "ValueSet by url": search("ValueSet", {"k.url": "http://example.org/ValueSet/x"}),
    "a type, newest first": search("Claim", {}),
    "_lastUpdated": fhir_search("Claim", "_lastUpdated=gt2020-01-01"),
    "read": ("resources", {"_id": f"Patient/p-{MEMBER}"}, None),
    "_include (read_many)": ("resources", {"_id": {"$in": [f"Patient/p-{MEMBER}", f"Coverage/c-{MEMBER}"]}}, None),
    "update's version guard": ("resources", {"_id": f"Patient/p-{MEMBER}", "v": 1}, None),
    "history": ("resource_history", {"t": "Patient", "id": f"p-{MEMBER}"}, [("v", DESCENDING)]),
    # cases: the retry of a submission, DTR's case context, the review queue
    "case by idempotency key": ("pas_cases", {"key": "x"}, None),
    "case by id": ("pas_cases", {"_id": {"$in": ["PA1", "PA2"]}}, None),
    "case by ClaimResponse": ("pas_cases", {"response_id": f"cr-{MEMBER}"}, None),
    "pended cases by due date": ("pas_cases", {"status": "pended"}, [("due", ASCENDING)]),
    # notification delivery (every worker, twice a second) and subscription matching
    "outbox: expired leases": ("notification_outbox", SubscriptionService.claim_queries(NOW)[0], [("next_at", ASCENDING)]),
    "outbox: due notifications": ("notification_outbox", SubscriptionService.claim_queries(NOW)[1], [("next_at", ASCENDING)]),
    "outbox: taking a lease": ("notification_outbox", {"_id": "x", "status": "delivering", "lease": NOW}, None),
    "heartbeats due": ("subscription_state", {"next_heartbeat": {"$lte": NOW}}, None),
    "subscriptions of an organization": ("subscription_state", {"owner": "org", "topic": {"$in": [PAS_TOPIC, None]}, "deleted": False}, None),
    # signed-JWT replay records (client assertions and EHR JWTs): the sweep of expired jti values;
    # shared caches' version stamps
    "JWT replay sweep": ("auth_jti", {"expires": {"$lt": NOW}}, None),
    "cache version stamp": ("cache_versions", {"_id": "pas-members"}, None),
    "CRD call by assertion": ("crd_hook_calls", {"assertion_ids": "x"}, None),
}


@pytest.mark.parametrize("name", list(HOT_PATH))
async def test_the_hot_path_query_uses_an_index(storage, name):
    collection, query, order = HOT_PATH[name]
    cursor = storage.collection(collection).find(query)
    if order:
        cursor = cursor.sort(order)
    # The plan, not the time: on a busy machine the database may take longer than a request's 5 s
    # to plan a sort over every stored resource.
    with pymongo.timeout(60):
        explained = await cursor.limit(20).explain()
    stages = plan_stages(explained["queryPlanner"]["winningPlan"])
    assert not any(s.get("stage") == "COLLSCAN" for s in stages), (query, stages)
    assert any(s.get("stage") in ("IXSCAN", "IDHACK", "EXPRESS_IXSCAN") for s in stages), (query, stages)


async def test_the_seeded_database_holds_what_the_plans_were_checked_on(storage):
    assert await storage.collection("resources").estimated_document_count() >= RESOURCES
    assert await storage.collection("pas_cases").estimated_document_count() == CASES
    found, _ = await storage.search("Coverage", PasService.member_queries([f"{MEMBER_SYSTEM}|{MEMBER}"])[0], count=1, with_total=False)
    assert [r.id for r in found] == [f"c-{MEMBER}"]
    assert timedelta(0) <= utcnow() - found[0].last_updated < timedelta(hours=1)
