"""The operations dashboard for payer staff, against figures computed by hand from the sandbox's
seeded cases (a fresh database holding only them): real-time and first-pass shares, denials by
reason, appeals by stage, turnaround by reviewer, backlog and overdue, weeks; filters by plan and
category; each figure links to the cases behind it; CSV export."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest

from server.app import create_app
from server.review import clock, metrics
from server.review.seed import SEEDS
from tests.support import ThreadedServer

# The seeded cases, by hand (server/review/seed.py):
#   decided: approved (RN, 30 h, silver), approved expedited (RN, 6 h, silver), denied medical necessity (MD, 50 h, gold),
#            modified (MD, 20 h, gold), denied medical necessity and appealed (MD, 60 h, gold) -> 5
#   pended:  standard (gold), expedited (gold), overdue (received 9 days ago, gold), information requested (gold) -> 4, 1 overdue
#   none decided at submission; nobody was asked for information among the decided ones.
ALL = {"decided": 5, "real_time": (0, 0.0), "first_pass": (3, 60.0), "denied": (2, 40.0)}


@pytest.fixture(scope="module")
def fresh(settings):
    srv = ThreadedServer(create_app(replace(settings, db_name=f"precert_dash_{uuid.uuid4().hex[:8]}"))).start()
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        token = http.post("/staff/login", json={"username": "reviewer", "password": "reviewer-sandbox"}).json()["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        yield http
    srv.stop()


def figures(http, **params) -> dict:
    r = http.get("/review/api/dashboard", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def queue_cases(http, href: str) -> set[str]:
    assert href.startswith("/review?")
    page = http.get(href)
    assert page.status_code == 200
    return set(re.findall(r'class="case-link" href="/review/cases/([^"]+)"', page.text))


def test_the_headline_figures_match_the_seeded_cases(fresh):
    d = figures(fresh)
    assert d["decided"]["count"] == ALL["decided"]
    assert (d["real_time"]["count"], d["real_time"]["rate"]) == ALL["real_time"]
    assert (d["first_pass_approval"]["count"], d["first_pass_approval"]["rate"]) == ALL["first_pass"]
    assert (d["denied"]["count"], d["denied"]["rate"]) == ALL["denied"]
    assert [(r["reason"], r["class"], r["count"], r["rate"]) for r in d["denials_by_reason"]] == [("medical-necessity", "clinical", 2, 40.0)]
    first = next(s for s in d["appeals_by_stage"] if s["stage"] == "first-level")
    assert (first["decided"], first["overturned"], first["open"], first["overturn_rate"]) == (0, 0, 1, None)
    assert [(r["reviewer"], r["cases"], r["average_hours"], r["median_hours"]) for r in d["reviewers"]] == \
        [("director", 3, 43.33, 50.0), ("reviewer", 2, 18.0, 18.0)]
    assert (d["backlog"]["pended"], d["backlog"]["overdue"]) == (4, 1)
    assert [(b["category"], b["urgency"], b["pended"], b["overdue"]) for b in d["backlog"]["by_category"]] == \
        [("inpatient-surgery", "expedited", 1, 0), ("inpatient-surgery", "standard", 3, 1)]


def test_weeks_count_each_decision_in_the_week_it_was_made(fresh):
    d = figures(fresh)
    now = clock.now()
    expected = Counter(metrics.bucket_start((now - timedelta(days=s.received_days_ago) + timedelta(hours=s.decided_after_hours)).date(), "week").isoformat()
                       for s in SEEDS if s.decided_after_hours is not None)
    assert {w["start"]: w["decided"] for w in d["weeks"] if w["decided"]} == dict(expected)
    assert sum(w["approved"] for w in d["weeks"]) == 3 and sum(w["denied"] for w in d["weeks"]) == 2


def test_plan_and_category_filters(fresh):
    silver = figures(fresh, plan="SILVER-HMO")
    assert silver["decided"]["count"] == 2 and silver["first_pass_approval"]["rate"] == 100.0 and silver["denied"]["count"] == 0
    assert silver["backlog"]["pended"] == 0
    gold = figures(fresh, plan="GOLD-PPO")
    assert gold["decided"]["count"] == 3 and gold["first_pass_approval"]["rate"] == 33.33 and gold["denied"]["rate"] == 66.67
    assert (gold["backlog"]["pended"], gold["backlog"]["overdue"]) == (4, 1)
    imaging = figures(fresh, category="advanced-imaging")
    assert imaging["decided"]["count"] == 0 and imaging["backlog"]["pended"] == 0 and imaging["denied"]["rate"] is None
    r = fresh.get("/review/api/dashboard", params={"from": "2026-13-01"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")


def test_each_figure_links_to_the_cases_behind_it(fresh):
    d = figures(fresh)
    assert len(queue_cases(fresh, d["decided"]["link"])) == 5
    denied = queue_cases(fresh, d["denied"]["link"])
    assert len(denied) == 2 and queue_cases(fresh, d["denials_by_reason"][0]["link"]) == denied
    assert len(queue_cases(fresh, d["first_pass_approval"]["link"])) == 3
    assert queue_cases(fresh, d["real_time"]["link"]) == set()
    director = next(r for r in d["reviewers"] if r["reviewer"] == "director")
    assert len(queue_cases(fresh, director["link"])) == 3
    assert len(queue_cases(fresh, d["backlog"]["link"])) == 4 and len(queue_cases(fresh, d["backlog"]["overdue_link"])) == 1
    silver = figures(fresh, plan="SILVER-HMO")
    assert len(queue_cases(fresh, silver["decided"]["link"])) == 2
    week = next(w for w in d["weeks"] if w["decided"])
    assert len(queue_cases(fresh, week["link"])) == week["decided"]


def test_the_dashboard_page_and_csv_export(fresh):
    page = fresh.get("/review/dashboard")
    assert page.status_code == 200
    assert re.search(r'id="fig-first-pass"><a href="[^"]+">60\.0%</a>', page.text)
    assert re.search(r'id="fig-overdue"><a href="/review\?due=overdue">1</a>', page.text)
    rows = list(csv.reader(io.StringIO(fresh.get("/review/api/dashboard.csv").text)))
    assert rows[0] == ["section", "group", "subgroup", "count", "of", "percent", "average_hours", "median_hours"]
    assert ["first-pass-approval", "", "", "3", "5", "60.0", "", ""] in rows
    assert ["denial-reason", "medical-necessity", "clinical", "2", "5", "40.0", "", ""] in rows
    assert ["reviewer", "director", "", "3", "", "", "43.33", "50.0"] in rows


def test_an_administrator_sees_the_figures_without_links_to_cases(fresh):
    base = str(fresh.base_url)
    token = httpx.post(base + "/staff/login", json={"username": "admin", "password": "admin-sandbox"}, timeout=30).json()["token"]
    page = httpx.get(base + "/review/dashboard", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert page.status_code == 200 and 'id="fig-decided">5<' in page.text and 'href="/review?' not in page.text
