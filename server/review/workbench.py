"""What the workbench does to cases beyond PAS's own decisions: the work queue and its counts,
notes, extensions of the decision clock, and the clock snapshot for operators.

Decisions themselves (approve, deny, modify, request information, assign) go through
:mod:`server.pas.decisions`, which updates the ClaimResponse and queues the notification.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from server.fhir.repository import Repository
from server.pas import cases as case_store
from server.review import appeals, clock
from server.review.dashboard import plans_by_coverage
from server.review.errors import LIST_FIELDS, ReviewError, clean_text
from server.review.labels import CATEGORIES
from server.review.view import age_on, coverage_plan, human_name, queue_facts
from server.rules import get_rules
from server.pas.constants import ReviewAction

QUEUE_LIMIT = 200
NOTE_MAX = 4000


STATUSES = ("pended", "decided", "all")
OUTCOMES = ("approved", "denied", "modified", "appealed", "overturned")
SEARCH_SCAN = 2000  # cases a text search reads at most (newest first)


@dataclass
class QueueFilter:
    """The work queue (pended cases, soonest due first) and the search over decided cases (newest
    first): status, category, urgency, clock, assignee, outcome, received date range, and text
    matched against the member's name and identifiers, the provider and the case number."""
    category: str = ""
    urgency: str = ""
    due: str = ""  # "" | "overdue" | "due-soon"
    assignee: str = ""  # "" | "unassigned" | a username
    status: str = "pended"  # "pended" | "decided" | "all"
    outcome: str = ""  # "" | one of OUTCOMES (decided cases)
    text: str = ""  # member name or id, provider name or NPI, case or authorization number
    received_from: date | None = None
    received_to: date | None = None  # inclusive
    # The dashboard's links: the cases behind one of its figures.
    decided_from: date | None = None
    decided_to: date | None = None  # inclusive
    plan: str = ""  # the plan of the member's coverage in the payer's records
    reviewed: str = ""  # "" | "automatic" | "human"
    info: str = ""  # "" | "none" | "requested"
    reason: str = ""  # a denial reason code (server.pas.reasons)
    decided_by: str = ""

    def query(self, now: datetime) -> dict:
        q: dict = {"status": "pended"} if self.status == "pended" else \
            {"status": "decided"} if self.status == "decided" else {"status": {"$in": ["pended", "decided"]}}
        if self.category:
            q["categories"] = self.category
        if self.urgency:
            q["urgency"] = self.urgency
        if self.assignee == "unassigned":
            q["assignee"] = None
        elif self.assignee:
            q["assignee"] = self.assignee
        if self.due == "overdue":
            q["due"] = {"$lt": now}
            q["status"] = "pended"
        elif self.due == "due-soon":
            q["$or"] = due_soon_clauses(now)
            q["status"] = "pended"
        received: dict = {}
        if self.received_from:
            received["$gte"] = datetime.combine(self.received_from, time.min, tzinfo=timezone.utc)
        if self.received_to:
            received["$lt"] = datetime.combine(self.received_to + timedelta(days=1), time.min, tzinfo=timezone.utc)
        if received:
            q["received"] = received
        decided: dict = {}
        if self.decided_from:
            decided["$gte"] = datetime.combine(self.decided_from, time.min, tzinfo=timezone.utc)
        if self.decided_to:
            decided["$lt"] = datetime.combine(self.decided_to + timedelta(days=1), time.min, tzinfo=timezone.utc)
        if decided:
            q["decided"] = decided
        if self.reviewed:
            q["reviewed_by_human"] = self.reviewed == "human"
        if self.decided_by:
            q["decided_by"] = self.decided_by
        and_: list[dict] = []
        if self.info == "none":
            and_ += [{"info_request": None}, {"info_requested": None}]
        elif self.info == "requested":
            and_.append({"info_requested": {"$ne": None}})
        if self.reason:
            denied_for = {"$elemMatch": {"action": ReviewAction.DENIED, "reason_code": self.reason}}
            and_.append({"$or": [{"original_decisions": denied_for}, {"original_decisions": None, "decisions": denied_for}]})
        if self.outcome == "approved":
            and_.append({"decisions.action": {"$in": [ReviewAction.APPROVED, ReviewAction.MODIFIED]}})
        elif self.outcome == "denied":
            and_ += [{"decisions.action": ReviewAction.DENIED}, {"decisions.action": {"$nin": [ReviewAction.APPROVED, ReviewAction.MODIFIED, ReviewAction.PENDED]}}]
        elif self.outcome == "modified":
            and_.append({"decisions.action": ReviewAction.MODIFIED})
        elif self.outcome == "appealed":
            and_.append({"appeals.0": {"$exists": True}})
        elif self.outcome == "overturned":
            and_.append({"overturned": {"$exists": True, "$ne": None}})
        if self.outcome:
            q["status"] = "decided"
        if and_:
            q["$and"] = and_
        return q

    @property
    def newest_first(self) -> bool:
        return self.status != "pended"

    def matches(self, r: dict) -> bool:
        """The text search, on a queue row (names are in the stored request, not indexed)."""
        needle = self.text.casefold()
        hay = [r["id"], r.get("auth_number") or "", r["member"], r["provider"], *r.get("member_ids", []), *r.get("provider_ids", [])]
        return any(needle in str(h).casefold() for h in hay if h)


def due_soon_clauses(now: datetime) -> list[dict]:
    return [
        {"urgency": "expedited", "due": {"$gte": now, "$lt": now + clock.DUE_SOON["expedited"]}},
        {"urgency": {"$ne": "expedited"}, "due": {"$gte": now, "$lt": now + clock.DUE_SOON["standard"]}},
    ]


def row(case: case_store.Case, now: datetime, with_member: bool = True) -> dict:
    due = clock.aware(case.get("due"))
    facts = queue_facts(case) if with_member else {}
    return {
        "id": case["_id"],
        "status": case.get("status"),
        "urgency": case.get("urgency") or "standard",
        "received": clock.aware(case.get("received")),
        "due": due,
        "decided": clock.aware(case.get("decided")),
        "clock": clock.clock_state(due, case.get("urgency"), now) if case.get("status") == "pended" else "stopped",
        "left": clock.describe_left(due, now) if case.get("status") == "pended" else "",
        "remaining_seconds": int((due - now).total_seconds()) if due else None,
        "categories": case.get("categories") or [],
        "assignee": case.get("assignee"),
        "member": facts.get("member", ""),
        "birth_date": facts.get("birth_date", ""),
        "age": age_on(facts.get("birth_date", ""), now.date()),
        "plan": facts.get("plan", ""),
        "provider": facts.get("provider", ""),
        "member_ids": [i for i in [*facts.get("member_ids", []), *(case.get("member_ids") or [])] if i],
        "provider_ids": list(case.get("provider_ids") or []),
        "patient_id": case.get("patient_id"),
        "coverage_id": case.get("coverage_id"),
        "auth_number": case.get("auth_number"),
        "outcome": outcome_word(case),
        "items": [{"sequence": d.get("sequence"), "action": d.get("action"), "summary": d.get("summary")} for d in case.get("decisions") or []],
        "extended": bool(case.get("extension")),
        "info_requested": bool(case.get("info_requested")),
        "appealed": bool(case.get("appeals")),
    }


def outcome_word(case: case_store.Case) -> str:
    """approved / denied / modified / partly approved / pended, from the items' current actions."""
    actions = {d.get("action") for d in case.get("decisions") or []}
    if case.get("status") == "pended" or ReviewAction.PENDED in actions:
        return "pended"
    if ReviewAction.MODIFIED in actions:
        return "modified"
    if ReviewAction.DENIED in actions and actions & {ReviewAction.APPROVED}:
        return "partly approved"
    if actions == {ReviewAction.DENIED}:
        return "denied"
    if ReviewAction.APPROVED in actions:
        return "approved"
    return case.get("status") or ""


async def payer_records(repo: Repository, rows: list[dict]) -> None:
    """Fill in the member's birth date (age) and plan from the payer's own Patient and Coverage
    records where the request left them out, as the staff member's repository ``repo`` shows them."""
    wanted = [f"Patient/{r['patient_id']}" for r in rows if not r["birth_date"] and r.get("patient_id")] + \
             [f"Coverage/{r['coverage_id']}" for r in rows if not r["plan"] and r.get("coverage_id")]
    if not wanted:
        return
    found = {f"{res.type}/{res.id}": res.resource for res in await repo.read_many(wanted)}
    today = clock.now().date()
    for r in rows:
        patient = found.get(f"Patient/{r.get('patient_id')}") or {}
        if not r["birth_date"] and patient.get("birthDate"):
            r["birth_date"], r["age"] = str(patient["birthDate"]), age_on(str(patient["birthDate"]), today)
            r["member"] = r["member"] or human_name(patient)
        coverage = found.get(f"Coverage/{r.get('coverage_id')}") or {}
        if not r["plan"] and coverage:
            r["plan"] = coverage_plan(coverage)


async def fill_request_view(repo: Repository, case: case_store.Case, req: dict) -> dict:
    """The case page's member: age, and birth date and plan from the payer's own records where the
    request omits them (marked, so the reviewer knows where they come from)."""
    member, coverage = req["member"], req["coverage"]
    wanted = ([f"Patient/{case['patient_id']}"] if not member["birth_date"] and case.get("patient_id") else []) + \
             ([f"Coverage/{case['coverage_id']}"] if not coverage["plan"] and case.get("coverage_id") else [])
    found = {f"{res.type}/{res.id}": res.resource for res in await repo.read_many(wanted)} if wanted else {}
    patient = found.get(f"Patient/{case.get('patient_id')}") or {}
    if patient.get("birthDate"):
        member["birth_date"], member["birth_date_from_records"] = str(patient["birthDate"]), True
    plan = coverage_plan(found.get(f"Coverage/{case.get('coverage_id')}") or {})
    if plan:
        coverage["plan"], coverage["plan_from_records"] = plan, True
    member["age"] = age_on(member["birth_date"], clock.now().date())
    return req


async def queue(state, repo: Repository, flt: QueueFilter, limit: int = QUEUE_LIMIT, skip: int = 0) -> tuple[list[dict], int]:
    """One page of the queue (soonest due first; decided cases newest first) and how many cases
    match in all. A text search reads at most :data:`SEARCH_SCAN` cases."""
    now = clock.now()
    cases = case_store.collection(state.storage)
    q = flt.query(now)
    if flt.plan:
        q["coverage_id"] = {"$in": await coverage_ids_on_plan(state, repo, q, flt.plan)}
    projection = {"response": 0}
    order = [("received", -1), ("_id", 1)] if flt.newest_first else [("due", 1), ("received", 1), ("_id", 1)]
    if flt.text:
        matched = [r async for r in _rows(cases.find(q, projection).sort(order).limit(SEARCH_SCAN), now)]
        await payer_records(repo, matched)
        matched = [r for r in matched if flt.matches(r)]
        return matched[max(0, skip):max(0, skip) + limit], len(matched)
    found = [r async for r in _rows(cases.find(q, projection).sort(order).skip(max(0, skip)).limit(limit), now)]
    await payer_records(repo, found)
    return found, await cases.count_documents(q)


async def coverage_ids_on_plan(state, repo: Repository, q: dict, plan: str) -> list[str]:
    """The coverages (of the cases ``q`` selects) whose plan in the payer's records is ``plan``."""
    try:
        ids = [c for c in await case_store.collection(state.storage).distinct("coverage_id", q) if isinstance(c, str)]
    except Exception:  # a database without distinct
        ids = [c["coverage_id"] async for c in case_store.collection(state.storage).find(q, {"coverage_id": 1}).limit(SEARCH_SCAN)
               if isinstance(c.get("coverage_id"), str)]
    plans = await plans_by_coverage(repo, ids)
    return [c for c, p in plans.items() if p == plan]


async def _rows(cursor, now: datetime):
    async for c in cursor:
        yield row(c, now)


async def counts(state, username: str | None = None) -> dict:
    now = clock.now()
    cases = case_store.collection(state.storage)
    base = {"status": "pended"}
    out = {
        "pended": await cases.count_documents(base),
        "expedited": await cases.count_documents({**base, "urgency": "expedited"}),
        "overdue": await cases.count_documents({**base, "due": {"$lt": now}}),
        "due_soon": await cases.count_documents({**base, "$or": due_soon_clauses(now)}),
        "unassigned": await cases.count_documents({**base, "assignee": None}),
    }
    out["standard"] = out["pended"] - out["expedited"]
    out["appeals"] = await appeals.collection(state.storage).count_documents({"status": "open"})
    if username:
        out["mine"] = await cases.count_documents({**base, "assignee": username})
    return out


async def categories(state) -> list[str]:
    cases = case_store.collection(state.storage)
    try:
        found = await cases.distinct("categories", {"status": "pended"})
    except Exception:  # a database without distinct: fall back to the fixed list
        found = []
    return sorted(set(CATEGORIES) | {c for c in found if isinstance(c, str)})


async def load(state, case_id: str, with_request: bool = True) -> dict:
    if not isinstance(case_id, str) or not case_id or len(case_id) > 64:
        raise ReviewError(404, "no such case")
    projection = {"response": 0} if with_request else LIST_FIELDS
    case = await case_store.collection(state.storage).find_one({"_id": case_id}, projection)
    if case is None:
        raise ReviewError(404, f"case {case_id[:40]} is not known")
    return case


async def add_note(state, case_id: str, text, who: str) -> dict:
    text = clean_text(text, NOTE_MAX)
    if not text:
        raise ReviewError(400, "a note needs some text")
    at = clock.now()
    note = {"at": at, "by": who, "text": text}
    result = await case_store.collection(state.storage).find_one_and_update(
        {"_id": case_id},
        {"$push": {"notes": note, "history": {"at": at, "event": "note", "by": who, "detail": text[:200]}}},
        projection=LIST_FIELDS, return_document=True,
    )
    if result is None:
        raise ReviewError(404, f"case {str(case_id)[:40]} is not known")
    return result


def payer_clocks(state) -> dict:
    """The payer's clocks and extension rules by service category (``payer.clocks`` in the rules)."""
    return getattr(get_rules(state).payer, "clocks", None) or {}


def extension_rule(state, case: case_store.Case) -> clock.ExtensionRule:
    """The payer's extension rule for this case's service categories and urgency."""
    return clock.extension_rule(payer_clocks(state), case.get("categories") or (), case.get("urgency"))


async def extend(state, case_id: str, days, reason_code, text, who: str) -> dict:
    """Extend the decision clock of a pended request once, as the payer's extension rule for its
    category and urgency allows (see :mod:`server.review.clock`)."""
    if isinstance(days, str) and days.strip().isdigit():
        days = int(days.strip())
    if reason_code not in clock.EXTENSION_REASONS:
        raise ReviewError(400, f"an extension needs a reason: one of {', '.join(clock.EXTENSION_REASONS)}")
    text = clean_text(text, 1000)
    if reason_code == "other" and not text:
        raise ReviewError(400, "say why the timeframe is extended (the reason 'other' needs a note)")
    case = await load(state, case_id, with_request=False)
    now = clock.now()
    rule = extension_rule(state, case)
    why = clock.check_extension(case, days, now, rule)
    if why:
        raise ReviewError(400 if "days must" in why else 409, why)
    if reason_code not in rule.reasons:
        raise ReviewError(400, f"the payer's extension rule ({rule.source}) allows only these reasons: {', '.join(rule.reasons)}")
    previous = clock.aware(case["due"])
    new_due = previous + timedelta(days=days)
    reason = clock.EXTENSION_REASONS[reason_code] + (f" {text}" if text else "")
    extension = {"at": now, "by": who, "days": days, "reason_code": reason_code, "reason": reason, "previous_due": previous,
                 "rule": rule.public()}
    result = await case_store.collection(state.storage).find_one_and_update(
        {"_id": case_id, "status": "pended", "extension": None},
        {"$set": {"extension": extension, "due": new_due},
         "$push": {"history": {"at": now, "event": "extended", "by": who, "detail": f"decision due date moved by {days} day(s) to {new_due:%Y-%m-%d %H:%M} UTC: {reason}"[:600]}}},
        projection=LIST_FIELDS, return_document=True,
    )
    if result is None:
        raise ReviewError(409, "the case changed meanwhile (decided or already extended); reload it")
    return result


def extension_rules(state) -> dict:
    """Every category's extension rule, standard and expedited, for operators and the docs."""
    clocks = payer_clocks(state)
    return {cat: {u: clock.extension_rule(clocks, [cat] if cat != "default" else (), u).public() for u in ("standard", "expedited")}
            for cat in ["default", *CATEGORIES]}


async def clock_snapshot(state) -> dict:
    """Every open clock, for an operator's monitoring: pended cases and open appeal stages."""
    now = clock.now()
    cases = case_store.collection(state.storage)
    open_cases = [row(c, now, with_member=False) async for c in cases.find({"status": "pended"}, LIST_FIELDS).sort("due", 1).limit(5000)]
    by_state = {"overdue": 0, "due-soon": 0, "on-time": 0}
    by_urgency: dict = {"expedited": dict(by_state), "standard": dict(by_state)}
    for r in open_cases:
        by_state[r["clock"]] += 1
        by_urgency.setdefault(r["urgency"], dict.fromkeys(by_state, 0))[r["clock"]] += 1
    open_appeals = await appeals.open_clocks(state, now)
    return {
        "now": now,
        "rules": {"expedited_hours": int(clock.EXPEDITED.total_seconds() // 3600), "standard_days": clock.STANDARD.days,
                  "due_soon_hours": {k: int(v.total_seconds() // 3600) for k, v in clock.DUE_SOON.items()},
                  "extension": {"urgencies": sorted(clock.EXTENDABLE), "max_days": clock.EXTENSION_MAX_DAYS, "times": 1},
                  "extensions": extension_rules(state)},
        "pended": len(open_cases),
        "overdue": by_state["overdue"],
        "due_soon": by_state["due-soon"],
        "on_time": by_state["on-time"],
        "by_urgency": by_urgency,
        "oldest_due": open_cases[0]["due"] if open_cases else None,
        "cases": [{k: r[k] for k in ("id", "urgency", "received", "due", "clock", "remaining_seconds", "assignee", "extended")} for r in open_cases],
        "appeals": open_appeals,
    }
