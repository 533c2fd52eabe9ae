"""The prior-authorization metrics CMS-0057-F requires payers to publish (45 CFR 156.223(b),
42 CFR 422.122(c) and their Medicaid/CHIP counterparts), for a chosen period, separately for
standard and expedited requests.

Which requests count, and how (Precert's reading, also in docs/review.md):

* A request counts in the period in which its **first determination** was made (``decided``),
  whether Precert decided it at once or a reviewer did. Requests still pended, rejected as
  invalid (``error``) or withdrawn (``cancelled``) are not determinations and are left out; so
  are items for which the rules say no prior authorization is needed, and a request made only of
  such items.
* A request is **approved** when at least one of its items was certified (A1) or certified with
  changes (A6), and **denied** when every item was not certified (A3). So approved + denied is the
  whole. The first determination counts here, even when an appeal later overturned it.
* **Approved after appeal**: denied at first, then certified when an appeal overturned the denial
  (as of when the report is made).
* **Approved after an extended timeframe**: the decision timeframe was extended and the request
  was approved.
* Percentages are of all the requests counted for that urgency in the period, to two decimals.
* **Time to decision**: from receipt to the first determination, in hours; the average and the
  median (the mean of the two middle values when the count is even).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from server.pas import cases as case_store
from server.review import clock
from server.review.view import service_code_name
from server.rules import get_rules
from server.pas.constants import ReviewAction

URGENCIES = ("standard", "expedited")
FIELDS = ("requests", "approved", "denied", "approved_after_appeal", "extended", "approved_after_extension", "decided_late",
          "automatic_clinical_denials")
MAX_SPAN_DAYS = 3660


class PeriodError(ValueError):
    pass


@dataclass
class Period:
    start: date
    end: date  # inclusive

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=timezone.utc)

    @property
    def end_at(self) -> datetime:
        """Exclusive upper bound: midnight after ``end``."""
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=timezone.utc)

    def as_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def parse_period(start: str | None, end: str | None, today: date | None = None) -> Period:
    """The period from ``from``/``to`` (YYYY-MM-DD, both inclusive); by default the calendar year
    so far."""
    today = today or clock.now().date()

    def one(value, name, default):
        if value is None or value == "":
            return default
        if not isinstance(value, str) or len(value) != 10:
            raise PeriodError(f"'{name}' must be a date as YYYY-MM-DD")
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise PeriodError(f"'{name}' must be a date as YYYY-MM-DD") from None

    to = one(end, "to", today)
    frm = one(start, "from", date(to.year, 1, 1))
    if frm > to:
        raise PeriodError("'from' must not be after 'to'")
    if (to - frm).days > MAX_SPAN_DAYS:
        raise PeriodError("the period can be at most ten years")
    return Period(frm, to)


def counted_items(decisions: list[dict]) -> list[dict]:
    return [d for d in decisions or [] if isinstance(d, dict) and d.get("action") in (ReviewAction.APPROVED, ReviewAction.DENIED, ReviewAction.MODIFIED) and d.get("pa_needed") != "no-auth"]


def outcome(case: case_store.Case) -> dict | None:
    """How one case counts: {urgency, approved, denied, after_appeal, extended, hours, decided},
    or None when it is not a prior-authorization determination."""
    if case.get("status") in ("error", "cancelled", "pended") or case.get("decided") is None or case.get("received") is None:
        return None
    first = counted_items(case.get("original_decisions") or case.get("decisions"))
    if not first:
        return None
    denied = all(d["action"] == ReviewAction.DENIED for d in first)
    now_items = counted_items(case.get("decisions"))
    after_appeal = denied and bool(case.get("overturned")) and any(d["action"] in (ReviewAction.APPROVED, ReviewAction.MODIFIED) for d in now_items)
    decided, received = clock.aware(case["decided"]), clock.aware(case["received"])
    urgency = "expedited" if case.get("urgency") == "expedited" else "standard"
    due = clock.aware(case.get("due"))
    if due is None:  # cases stored without their clock: the default timeframe, plus any extension
        due = received + (clock.EXPEDITED if urgency == "expedited" else clock.STANDARD) + \
            timedelta(days=int((case.get("extension") or {}).get("days") or 0))
    return {
        "urgency": "expedited" if case.get("urgency") == "expedited" else "standard",
        "approved": not denied,
        "denied": denied,
        "after_appeal": after_appeal,
        "extended": bool(case.get("extension")),
        "hours": max(0.0, (decided - received).total_seconds() / 3600),
        "decided": decided,
        "late": decided > due,
        "automatic_clinical_denial": any(d.get("automatic_clinical_denial") for d in first),
    }


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def figures(outcomes: list[dict]) -> dict:
    """The CMS-0057-F figures of a set of outcomes (one urgency, or all)."""
    n = len(outcomes)
    approved = sum(o["approved"] for o in outcomes)
    denied = sum(o["denied"] for o in outcomes)
    after_appeal = sum(o["after_appeal"] for o in outcomes)
    extended = sum(o["extended"] for o in outcomes)
    approved_extended = sum(o["extended"] and o["approved"] for o in outcomes)
    hours = [o["hours"] for o in outcomes]
    return {
        "requests": n,
        "approved": approved,
        "denied": denied,
        "approved_after_appeal": after_appeal,
        "extended": extended,
        "approved_after_extension": approved_extended,
        "decided_late": sum(o["late"] for o in outcomes),
        "automatic_clinical_denials": sum(o["automatic_clinical_denial"] for o in outcomes),
        "percent_approved": _pct(approved, n),
        "percent_denied": _pct(denied, n),
        "percent_approved_after_appeal": _pct(after_appeal, n),
        "percent_approved_after_extension": _pct(approved_extended, n),
        "average_hours": round(statistics.fmean(hours), 2) if hours else None,
        "median_hours": round(statistics.median(hours), 2) if hours else None,
    }


def granularity(period: Period) -> str:
    days = (period.end - period.start).days + 1
    if days > 92:
        return "month"
    if days > 21:
        return "week"
    return "day"


def bucket_start(d: date, unit: str) -> date:
    if unit == "month":
        return d.replace(day=1)
    if unit == "week":
        return d - timedelta(days=d.weekday())
    return d


def _next_bucket(d: date, unit: str) -> date:
    if unit == "month":
        return (d.replace(day=28) + timedelta(days=4)).replace(day=1)
    return d + timedelta(days=7 if unit == "week" else 1)


def buckets(period: Period, unit: str) -> list[date]:
    out, d = [], bucket_start(period.start, unit)
    while d <= period.end:
        out.append(d)
        d = _next_bucket(d, unit)
    return out


def compute(cases: list[dict], period: Period, unit: str | None = None) -> dict:
    """Figures for the period, by urgency and overall, and the same per day, week or month."""
    outs = [o for o in (outcome(c) for c in cases) if o and period.start_at <= o["decided"] < period.end_at]
    unit = unit or granularity(period)
    by_urgency = {u: figures([o for o in outs if o["urgency"] == u]) for u in URGENCIES}
    series = []
    for start in buckets(period, unit):
        in_bucket = [o for o in outs if bucket_start(o["decided"].date(), unit) == start]
        series.append({"start": start.isoformat(), **{u: figures([o for o in in_bucket if o["urgency"] == u]) for u in URGENCIES}})
    return {"period": period.as_dict(), "unit": unit, "standard": by_urgency["standard"], "expedited": by_urgency["expedited"],
            "all": figures(outs), "series": series}


async def load_cases(state, period: Period) -> list[dict]:
    projection = {"status": 1, "urgency": 1, "received": 1, "decided": 1, "due": 1, "decisions.action": 1, "decisions.pa_needed": 1,
                  "decisions.automatic_clinical_denial": 1, "original_decisions.action": 1, "original_decisions.pa_needed": 1,
                  "original_decisions.automatic_clinical_denial": 1, "overturned": 1, "extension": 1}
    query = {"decided": {"$gte": period.start_at, "$lt": period.end_at}, "status": {"$nin": ["error", "cancelled", "pended"]}}
    return [c async for c in case_store.collection(state.storage).find(query, projection)]


async def report(state, period: Period, unit: str | None = None) -> dict:
    result = compute(await load_cases(state, period), period, unit)
    rules = get_rules(state)
    result["payer"] = rules.payer.name
    result["generated"] = clock.now()
    result["prior_auth_list"] = [dict(entry, codes=[dict(c, name=service_code_name(c)) if isinstance(c, dict) and c.get("code") else c
                                                    for c in entry["codes"]]) for entry in rules.prior_auth_list()]
    result["definitions"] = DEFINITIONS
    return result


DEFINITIONS = {
    "requests": "Prior-authorization requests with a first determination in the period (pended, invalid and withdrawn requests, and services needing no authorization, are not counted).",
    "percent_approved": "Requests with at least one item certified, in full or with changes, at the first determination.",
    "percent_denied": "Requests with every item not certified at the first determination.",
    "percent_approved_after_appeal": "Requests denied at first and certified when an appeal overturned the denial.",
    "percent_approved_after_extension": "Requests whose decision timeframe was extended and that were approved.",
    "average_hours": "Average time from receipt of the request to the first determination, in hours.",
    "median_hours": "Median time from receipt of the request to the first determination, in hours.",
    "decided_late": "Requests whose first determination came after their decision clock ran out (72 hours expedited, 7 days standard, or the payer's clock for the category, plus any extension).",
    "automatic_clinical_denials": "Requests denied on clinical grounds without a human review, under a payer rule that opts in where its jurisdiction allows.",
}

CSV_COLUMNS = ("period_start", "period_end", "bucket_start", "urgency") + FIELDS + (
    "percent_approved", "percent_denied", "percent_approved_after_appeal", "percent_approved_after_extension",
    "average_hours", "median_hours")


def csv_rows(result: dict, by_bucket: bool) -> list[list]:
    p = result["period"]
    rows: list[list] = []

    def add(bucket, urgency, f):
        rows.append([p["start"], p["end"], bucket, urgency] + ["" if f[c] is None else f[c] for c in CSV_COLUMNS[4:]])

    if by_bucket:
        for b in result["series"]:
            for u in URGENCIES:
                add(b["start"], u, b[u])
    else:
        for u in URGENCIES + ("all",):
            add("", u, result[u])
    return rows
