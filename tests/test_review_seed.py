"""Sandbox start-up seeds a handful of review cases in every state (pended standard and expedited,
overdue, waiting on information, approved, denied, modified, appealed), once per database: two
workers starting together and every later restart leave exactly one set."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import replace

import httpx
import pymongo
import pytest

from server.app import create_app
from server.review import clock, view
from server.review.seed import SEED_SYSTEM, SEEDS, seed_cases
from server.sandbox import load_sandbox
from tests.support import ThreadedServer
from tests.test_review_support import staff_headers

SEED_KEY = {"key": {"$regex": "^-\\|" + re.escape(SEED_SYSTEM) + "\\|"}}


@pytest.fixture(scope="module")
def reviewer(client):
    return staff_headers(client, "reviewer")


def seeded(client, reviewer, **params) -> str:
    return client.get("/review", params=params, headers=reviewer).text


def test_the_sandbox_queue_opens_with_seeded_cases_in_every_state(client, reviewer, mongodb_uri, settings):
    cases = {c["key"].split("|")[2]: c for c in pymongo.MongoClient(mongodb_uri)[settings.db_name]["pas_cases"].find(SEED_KEY)}
    assert set(cases) == {s.key for s in SEEDS}
    state = {k: (c["status"], sorted({d["action"] for d in c["decisions"]})) for k, c in cases.items()}
    assert state["seed-pended"] == ("pended", ["A4"]) and state["seed-expedited"] == ("pended", ["A4"])
    assert state["seed-approved"] == ("decided", ["A1"]) and state["seed-denied"] == ("decided", ["A3"])
    assert state["seed-modified"] == ("decided", ["A6"]) and state["seed-appealed"] == ("decided", ["A3"])
    assert cases["seed-info"]["info_request"]["needed"] == ["Cardiac catheterization report", "Cardiology consult note"]
    assert cases["seed-denied"]["decided_as"] == "physician reviewer (MD)" and cases["seed-appealed"]["appeals"]
    # The queue: overdue first, the member's age from the payer's records, the expedited one marked.
    queue = seeded(client, reviewer, q="Nguyen")
    assert cases["seed-overdue"]["_id"] in queue and "overdue by" in queue
    age = view.age_on("1939-12-25", clock.now().date())  # pat-007's birth date, in the payer's records only
    assert re.search(rf'data-label="Age" class="age">{age}<', queue)
    assert cases["seed-expedited"]["_id"] in seeded(client, reviewer, urgency="expedited")
    decided = seeded(client, reviewer, status="decided", q="Patel")
    assert cases["seed-denied"]["_id"] in decided and "Denied" in decided
    appeals = client.get("/review/api/appeals", headers=reviewer).json()["appeals"]
    assert any(a["case_id"] == cases["seed-appealed"]["_id"] for a in appeals)


def test_seeding_happens_once_across_workers_and_restarts(mongodb_uri, settings):
    fresh = replace(settings, db_name=f"precert_seed_{uuid.uuid4().hex[:8]}", load_sandbox=False)
    first = ThreadedServer(create_app(fresh)).start()
    try:
        state = first.app.state.precert

        async def two_workers_start_together():
            await load_sandbox(state)
            return await asyncio.gather(seed_cases(state), seed_cases(state))

        made = asyncio.run_coroutine_threadsafe(two_workers_start_together(), first.loop).result(120)
    finally:
        first.stop()
    assert sorted(made) == [0, len(SEEDS)]
    db = pymongo.MongoClient(mongodb_uri)[fresh.db_name]
    assert db["pas_cases"].count_documents(SEED_KEY) == len(SEEDS)
    assert db["sandbox_markers"].find_one({"_id": "review-cases-v1"})["status"] == "done"
    # A restart with the sandbox load on (as `precert serve` in sandbox mode) seeds nothing more.
    again = ThreadedServer(create_app(replace(fresh, load_sandbox=True))).start()
    try:
        assert httpx.get(again.url + "/reports/prior-auth.json", timeout=30).status_code == 200
    finally:
        again.stop()
    assert db["pas_cases"].count_documents(SEED_KEY) == len(SEEDS)
    assert db["review_appeals"].count_documents({}) == 1


def test_only_a_sandbox_seeds_cases(settings):
    production = type("State", (), {"settings": replace(settings, mode="production"), "storage": None})()
    assert asyncio.run(seed_cases(production)) == 0  # returns before touching the database
