"""The operations dashboard for payer staff: how the utilization-management work is going, beside
(not instead of) the public CMS-0057-F report. Aggregates only, no member data, so that operators
and administrators can read it; each figure links to the cases behind it (the work queue filtered).

Which requests count, and how (also in docs/review.md):

* **Decided in the period**: requests whose first determination (``decided``) falls in the period,
  counted as in :mod:`server.review.metrics` (pended, invalid, withdrawn and no-authorization-needed
  requests left out). Filtered by service category and by plan (the plan of the member's coverage
  in the payer's own records).
* **Decided in real time**: decided by the rules at submission, with no human review.
* **First-pass approval**: approved (certified in full or with changes) at the first determination,
  with no request for more information on the way.
* **Denial rate by reason**: requests denied at the first determination, by the reason of their
  denied items (a request denied for two reasons counts under both), over all requests decided.
* **Appeal overturn rate by stage**: of the appeal stages decided (appeals of the requests counted),
  the share that overturned the denial.
* **Review turnaround by reviewer**: for requests decided by a person, hours from receipt to the
  decision, by the reviewer who decided (the time a case waited and was worked, not time at the desk).
* **Backlog**: requests pended now, by service category and urgency, and how many are overdue.
* **Trend by week**: the same counts per calendar week (Monday first) of the period.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from urllib.parse import urlencode

from server.fhir.repository import Repository
from server.pas import cases as case_store
from server.pas.reasons import REASONS
from server.review import appeals, clock, metrics
from server.pas.constants import ReviewAction

DEFAULT_DAYS = 84  # twelve weeks
CASE_FIELDS = {"status": 1, "urgency": 1, "received": 1, "decided": 1, "due": 1, "categories": 1, "coverage_id": 1,
               "decided_by": 1, "reviewed_by_human": 1, "info_request": 1, "info_requested": 1, "overturned": 1, "extension": 1,
               "decisions.action": 1, "decisions.pa_needed": 1, "decisions.reason_code": 1, "decisions.automatic_clinical_denial": 1,
               "original_decisions.action": 1, "original_decisions.pa_needed": 1, "original_decisions.reason_code": 1,
               "original_decisions.automatic_clinical_denial": 1}


def default_period(today: date | None = None) -> metrics.Period:
    today = today or clock.now().date()
    return metrics.Period(today - timedelta(days=DEFAULT_DAYS - 1), today)


def parse_period(start: str | None, end: str | None) -> metrics.Period:
    """``from``/``to`` (YYYY-MM-DD); by default the last twelve weeks to today."""
    default = default_period()
    return metrics.parse_period(start or default.start.isoformat(), end or default.end.isoformat())


def plan_of(coverage: dict) -> str:
    """The plan value of a Coverage (its ``plan`` class), as the payer's rules name plans."""
    for c in coverage.get("class") or []:
        if isinstance(c, dict) and any(x.get("code") == "plan" for x in (c.get("type") or {}).get("coding") or [] if isinstance(x, dict)):
            return str(c.get("value") or "")
    return ""


async def plans_by_coverage(repo: Repository, coverage_ids) -> dict[str, str]:
    ids = [f"Coverage/{c}" for c in dict.fromkeys(coverage_ids) if c]
    return {res.id: plan_of(res.resource) for res in await repo.read_many(ids)} if ids else {}


def _rate(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def _hours(values: list[float]) -> dict:
    return {"average_hours": round(statistics.fmean(values), 2) if values else None,
            "median_hours": round(statistics.median(values), 2) if values else None}


def link(**params) -> str:
    """The work queue filtered to the cases behind a figure."""
    return "/review?" + urlencode({k: v for k, v in params.items() if v not in (None, "")})


def first_items(case: case_store.Case) -> list[dict]:
    return metrics.counted_items(case.get("original_decisions") or case.get("decisions"))


def compute(cases: list[dict], open_cases: list[dict], stages: list[dict], period: metrics.Period, now: datetime,
            category: str = "", plan: str = "") -> dict:
    """The dashboard's figures from the decided cases of the period, the pended cases and the
    appeal stages of those decided cases (every argument already filtered by category and plan)."""
    scope = {"category": category, "plan": plan}
    decided_scope = {"status": "decided", "dfrom": period.start.isoformat(), "dto": period.end.isoformat(), **scope}
    rows = []
    for c in cases:
        out = metrics.outcome(c)
        if out is None or not period.start_at <= out["decided"] < period.end_at:
            continue
        rows.append((c, out))
    n = len(rows)
    real_time = [c for c, _ in rows if not c.get("reviewed_by_human")]
    first_pass = [c for c, o in rows if o["approved"] and not c.get("info_request") and not c.get("info_requested")]
    denied = [c for c, o in rows if o["denied"]]
    reasons: Counter = Counter()
    for c in denied:
        for code in dict.fromkeys(d.get("reason_code") or "unspecified" for d in first_items(c) if d["action"] == ReviewAction.DENIED):
            reasons[code] += 1
    by_reviewer: dict[str, list[float]] = defaultdict(list)
    for c, o in rows:
        if c.get("decided_by") and c.get("reviewed_by_human"):
            by_reviewer[c["decided_by"]].append(o["hours"])
    stage_rows = []
    for stage in appeals.STAGES:
        decided_stages = [s for s in stages if s["stage"] == stage and s.get("decision")]
        over = sum(1 for s in decided_stages if s["decision"] == "overturned")
        stage_rows.append({"stage": stage, "name": appeals.STAGE_NAMES[stage], "decided": len(decided_stages), "overturned": over,
                           "open": sum(1 for s in stages if s["stage"] == stage and not s.get("decision")),
                           "overturn_rate": _rate(over, len(decided_stages)), "link": "/review/appeals?status=all"})
    backlog: dict[tuple[str, str], dict] = {}
    for c in open_cases:
        urgency = "expedited" if c.get("urgency") == "expedited" else "standard"
        late = bool(c.get("due") and clock.aware(c["due"]) < now)
        for cat in c.get("categories") or ["uncategorized"]:
            if category and cat != category:
                continue
            b = backlog.setdefault((cat, urgency), {"category": cat, "urgency": urgency, "pended": 0, "overdue": 0,
                                                    "link": link(category=cat, urgency=urgency, plan=plan),
                                                    "overdue_link": link(category=cat, urgency=urgency, due="overdue", plan=plan)})
            b["pended"] += 1
            b["overdue"] += late
    weeks = []
    for start in metrics.buckets(period, "week"):
        end = min(start + timedelta(days=6), period.end)
        in_week = [(c, o) for c, o in rows if metrics.bucket_start(o["decided"].date(), "week") == start]
        count = len(in_week)
        weeks.append({"start": start.isoformat(), "end": end.isoformat(), "decided": count,
                      "real_time": sum(1 for c, _ in in_week if not c.get("reviewed_by_human")),
                      "approved": sum(1 for _, o in in_week if o["approved"]), "denied": sum(1 for _, o in in_week if o["denied"]),
                      "percent_approved": _rate(sum(1 for _, o in in_week if o["approved"]), count),
                      **_hours([o["hours"] for _, o in in_week]),
                      "link": link(status="decided", dfrom=max(start, period.start).isoformat(), dto=end.isoformat(), **scope)})
    return {
        "period": period.as_dict(),
        "filters": scope,
        "generated": now,
        "decided": {"count": n, "link": link(**decided_scope)},
        "real_time": {"count": len(real_time), "rate": _rate(len(real_time), n), "link": link(reviewed="automatic", **decided_scope)},
        "first_pass_approval": {"count": len(first_pass), "rate": _rate(len(first_pass), n),
                                "link": link(outcome="approved", info="none", **decided_scope)},
        "denied": {"count": len(denied), "rate": _rate(len(denied), n), "link": link(outcome="denied", **decided_scope)},
        "denials_by_reason": [{"reason": code, "text": REASONS.get(code, ("", "", code))[2], "class": REASONS.get(code, ("",))[0],
                               "count": count, "rate": _rate(count, n), "link": link(outcome="denied", reason=code, **decided_scope)}
                              for code, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))],
        "appeals_by_stage": stage_rows,
        "reviewers": [{"reviewer": who, "cases": len(hours), **_hours(hours), "link": link(decided_by=who, **decided_scope)}
                      for who, hours in sorted(by_reviewer.items())],
        "backlog": {"pended": len(open_cases), "overdue": sum(1 for c in open_cases if c.get("due") and clock.aware(c["due"]) < now),
                    "link": link(category=category, plan=plan), "overdue_link": link(due="overdue", category=category, plan=plan),
                    "by_category": sorted(backlog.values(), key=lambda b: (b["category"], b["urgency"]))},
        "weeks": weeks,
    }


async def dashboard(state, repo: Repository, period: metrics.Period, category: str = "", plan: str = "") -> dict:
    cases_coll = case_store.collection(state.storage)
    scope: dict = {"categories": category} if category else {}
    decided = [c async for c in cases_coll.find({"decided": {"$gte": period.start_at, "$lt": period.end_at},
                                                 "status": {"$nin": ["error", "cancelled", "pended"]}, **scope}, CASE_FIELDS)]
    open_cases = [c async for c in cases_coll.find({"status": "pended", **scope}, CASE_FIELDS)]
    if plan:
        plans = await plans_by_coverage(repo, [c.get("coverage_id") for c in decided + open_cases])
        decided = [c for c in decided if plans.get(c.get("coverage_id")) == plan]
        open_cases = [c for c in open_cases if plans.get(c.get("coverage_id")) == plan]
    ids = [c["_id"] for c in decided]
    stages = []
    if ids:
        async for a in appeals.collection(state.storage).find({"case_id": {"$in": ids}}, {"stages": 1}):
            stages.extend(a.get("stages") or [])
    return compute(decided, open_cases, stages, period, clock.now(), category, plan)


CSV_COLUMNS = ("section", "group", "subgroup", "count", "of", "percent", "average_hours", "median_hours")


def csv_rows(d: dict) -> list[list]:
    """The dashboard as long-format CSV rows."""
    blank = lambda v: "" if v is None else v  # noqa: E731
    n = d["decided"]["count"]
    rows = [["decided", "", "", n, "", "", "", ""],
            ["real-time", "", "", d["real_time"]["count"], n, blank(d["real_time"]["rate"]), "", ""],
            ["first-pass-approval", "", "", d["first_pass_approval"]["count"], n, blank(d["first_pass_approval"]["rate"]), "", ""],
            ["denied", "", "", d["denied"]["count"], n, blank(d["denied"]["rate"]), "", ""]]
    rows += [["denial-reason", r["reason"], r["class"], r["count"], n, blank(r["rate"]), "", ""] for r in d["denials_by_reason"]]
    rows += [["appeal-stage", s["stage"], "overturned", s["overturned"], s["decided"], blank(s["overturn_rate"]), "", ""]
             for s in d["appeals_by_stage"]]
    rows += [["reviewer", r["reviewer"], "", r["cases"], "", "", blank(r["average_hours"]), blank(r["median_hours"])] for r in d["reviewers"]]
    rows += [["backlog", b["category"], b["urgency"], b["pended"], "", "", "", ""] for b in d["backlog"]["by_category"]]
    rows += [["overdue", b["category"], b["urgency"], b["overdue"], b["pended"], "", "", ""] for b in d["backlog"]["by_category"]]
    rows += [["week", w["start"], "decided", w["decided"], "", blank(w["percent_approved"]), blank(w["average_hours"]), blank(w["median_hours"])]
             for w in d["weeks"]]
    return rows
