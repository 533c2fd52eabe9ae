"""Appeals of denied prior-authorization requests.

A denied request (one or more items not certified, A3) can be appealed. An appeal goes through
stages, in this order, each with its own clock, decision and outcome:

1. ``first-level``: reconsideration by a physician who took no part in the denial;
2. ``peer-to-peer``: the requesting clinician talks the case through with the payer's medical director;
3. ``second-level``: a second internal review, again by a physician new to the case;
4. ``external-review``: an independent review organization decides; the payer records the result.

An appeal starts at the first level (or at peer-to-peer, which many payers offer before a formal
appeal). When a stage upholds the denial, the appeal may be escalated to any later stage, or
closed. When a stage overturns it, the denied items are certified through
:func:`server.pas.decisions.overturn` (new ClaimResponse version, PAS notification) in the same
transaction that closes the appeal. An external review's decision is final.

Stage clocks (Precert's defaults; from receipt of the stage):

=================  ===========  ==========
stage              standard     expedited
=================  ===========  ==========
first-level        30 days      72 hours      (42 CFR 422.590 pre-service reconsideration)
peer-to-peer       5 days       24 hours      (payer practice)
second-level       30 days      72 hours
external-review    45 days      72 hours      (45 CFR 147.136 external review)
=================  ===========  ==========
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from pymongo import ASCENDING

from server.pas import cases as case_store
from server.pas.decisions import overturn
from server.review import clock
from server.review.errors import LIST_FIELDS, ReviewError, clean_text
from server.pas.constants import ReviewAction

STAGES = ("first-level", "peer-to-peer", "second-level", "external-review")
STAGE_NAMES = {
    "first-level": "First-level appeal",
    "peer-to-peer": "Peer-to-peer review",
    "second-level": "Second-level appeal",
    "external-review": "External review",
}
START_STAGES = ("first-level", "peer-to-peer")
STAGE_CLOCKS = {
    "first-level": {"standard": timedelta(days=30), "expedited": timedelta(hours=72)},
    "peer-to-peer": {"standard": timedelta(days=5), "expedited": timedelta(hours=24)},
    "second-level": {"standard": timedelta(days=30), "expedited": timedelta(hours=72)},
    "external-review": {"standard": timedelta(days=45), "expedited": timedelta(hours=72)},
}
DECISIONS = ("upheld", "overturned")
APPELLANTS = {"provider": "Requesting provider", "member": "Member", "representative": "Member's representative"}
# Who may decide a stage. The physician stages need a medical director; an external review's
# result comes from the independent organization and is recorded by a director or an administrator.
DECIDERS = {
    "first-level": ("medical-director",),
    "peer-to-peer": ("medical-director",),
    "second-level": ("medical-director",),
    "external-review": ("medical-director", "administrator"),
}
# Stages a person who made the denial (or decided an earlier stage) may not decide.
INDEPENDENT = ("first-level", "second-level")


def collection(storage):
    return storage.collection("review_appeals")


async def ensure_indexes(storage) -> None:
    appeals = collection(storage)
    await appeals.create_index([("case_id", ASCENDING)])
    await appeals.create_index([("status", ASCENDING), ("due", ASCENDING)])


def new_appeal_id() -> str:
    return "AP" + clock.now().strftime("%y%m%d") + secrets.token_hex(4).upper()


def stage_due(stage: str, urgency: str, opened: datetime) -> datetime:
    return opened + STAGE_CLOCKS[stage]["expedited" if urgency == "expedited" else "standard"]


def _new_stage(stage: str, urgency: str, at: datetime, by: str) -> dict:
    return {"stage": stage, "opened": at, "opened_by": by, "due": stage_due(stage, urgency, at),
            "decided": None, "decision": None, "note": "", "by": None}


def _str_field(body: dict, key: str, limit: int, required: bool = False) -> str:
    value = clean_text(body.get(key), limit)
    if required and not value:
        raise ReviewError(400, f"'{key}' is required")
    return value


async def file(state, case_id: str, body, who: str) -> dict:
    """Open an appeal of a denied request. ``body``: {reason, appellant?, stage?, urgency?, items?}."""
    if not isinstance(body, dict):
        raise ReviewError(400, "the appeal must be a JSON object")
    reason = _str_field(body, "reason", 2000, required=True)
    appellant = body.get("appellant") or "provider"
    if appellant not in APPELLANTS:
        raise ReviewError(400, f"appellant must be one of {', '.join(APPELLANTS)}")
    stage = body.get("stage") or "first-level"
    if stage not in START_STAGES:
        raise ReviewError(400, f"an appeal starts at {' or '.join(START_STAGES)}")
    cases = case_store.collection(state.storage)
    case = await cases.find_one({"_id": case_id}, LIST_FIELDS) if isinstance(case_id, str) and len(case_id) <= 64 else None
    if case is None:
        raise ReviewError(404, f"case {str(case_id)[:40]} is not known")
    urgency = body.get("urgency") or case.get("urgency") or "standard"
    if urgency not in ("standard", "expedited"):
        raise ReviewError(400, "urgency must be standard or expedited")
    denied = [d["sequence"] for d in case.get("decisions") or [] if d.get("action") == ReviewAction.DENIED]
    if case.get("status") != "decided" or not denied:
        raise ReviewError(409, "only a decided request with a denied item can be appealed")
    items = body.get("items")
    if items is None:
        items = denied
    if not isinstance(items, list) or not items or not all(isinstance(s, int) and not isinstance(s, bool) for s in items):
        raise ReviewError(400, "items must be a non-empty list of item sequence numbers")
    if any(s not in denied for s in items):
        raise ReviewError(409, f"only denied items can be appealed; denied items: {', '.join(map(str, denied))}")
    appeals = collection(state.storage)
    if await appeals.find_one({"case_id": case_id, "status": "open"}, {"_id": 1}):
        raise ReviewError(409, "this request already has an open appeal")
    now = clock.now()
    first = _new_stage(stage, urgency, now, who)
    doc = {
        "_id": new_appeal_id(),
        "case_id": case_id,
        "urgency": urgency,
        "appellant": appellant,
        "reason": reason,
        "items": list(dict.fromkeys(items)),
        "filed": now,
        "filed_by": who,
        "status": "open",
        "outcome": None,
        "closed": None,
        "stage": stage,
        "due": first["due"],
        "stages": [first],
        "denied_by": case.get("decided_by"),
        "history": [{"at": now, "event": "filed", "by": who, "detail": f"{APPELLANTS[appellant]}: {reason[:300]}"},
                    {"at": now, "event": "stage-opened", "by": who, "detail": STAGE_NAMES[stage]}],
    }
    await appeals.insert_one(doc)
    await cases.update_one({"_id": case_id}, {"$addToSet": {"appeals": doc["_id"]},
                                              "$push": {"history": {"at": now, "event": "appeal-filed", "by": who, "detail": f"appeal {doc['_id']} ({STAGE_NAMES[stage]})"}}})
    return doc


async def get(state, appeal_id: str) -> dict:
    if not isinstance(appeal_id, str) or not appeal_id or len(appeal_id) > 64:
        raise ReviewError(404, "no such appeal")
    doc = await collection(state.storage).find_one({"_id": appeal_id})
    if doc is None:
        raise ReviewError(404, f"appeal {appeal_id[:40]} is not known")
    return doc


async def for_case(state, case_id: str) -> list[dict]:
    return [a async for a in collection(state.storage).find({"case_id": case_id}).sort("filed", 1)]


async def listing(state, status: str = "open", limit: int = 200) -> list[dict]:
    q = {} if status == "all" else {"status": status}
    return [a async for a in collection(state.storage).find(q).sort("due", 1).limit(limit)]


def _deciders_check(appeal: dict, stage: dict, who) -> None:
    roles = DECIDERS[stage["stage"]]
    if not who.has(*roles):
        raise ReviewError(403, f"deciding a {STAGE_NAMES[stage['stage']].lower()} needs the {' or '.join(roles)} role")
    if stage["stage"] in INDEPENDENT:
        earlier = {appeal.get("denied_by")} | {s.get("by") for s in appeal["stages"][:-1]}
        if who.username in earlier:
            raise ReviewError(403, f"{STAGE_NAMES[stage['stage']]} must be decided by someone who took no part in the denial or an earlier stage")


async def decide(state, appeal_id: str, body, who, base: str) -> dict:
    """Decide the current stage: {"decision": "upheld"|"overturned", "note": "..."}."""
    if not isinstance(body, dict):
        raise ReviewError(400, "the decision must be a JSON object")
    decision = body.get("decision")
    if decision not in DECISIONS:
        raise ReviewError(400, f"decision must be one of {', '.join(DECISIONS)}")
    note = _str_field(body, "note", 2000)
    if decision == "upheld" and not note:
        raise ReviewError(400, "say why the denial is upheld (a note is required)")
    appeal = await get(state, appeal_id)
    if appeal["status"] != "open":
        raise ReviewError(409, f"appeal {appeal_id} is closed ({appeal.get('outcome')})")
    stage = appeal["stages"][-1]
    if stage["decided"] is not None:
        raise ReviewError(409, f"the {STAGE_NAMES[stage['stage']].lower()} was already decided; escalate or close the appeal")
    _deciders_check(appeal, stage, who)
    now = clock.now()
    index = len(appeal["stages"]) - 1
    stage_set = {f"stages.{index}.decided": now, f"stages.{index}.decision": decision,
                 f"stages.{index}.note": note, f"stages.{index}.by": who.username}
    event = {"at": now, "event": "stage-decided", "by": who.username, "detail": f"{STAGE_NAMES[stage['stage']]}: denial {decision}" + (f" ({note[:300]})" if note else "")}
    appeals = collection(state.storage)
    guard = {"_id": appeal_id, "status": "open", f"stages.{index}.decided": None, "stages": {"$size": index + 1}}
    final = decision == "overturned" or stage["stage"] == STAGES[-1]
    change: dict = {"$set": dict(stage_set), "$push": {"history": event}}
    if final:
        change["$set"].update({"status": "closed", "outcome": decision, "closed": now, "due": None})
    if decision == "overturned":
        async def record(session):
            result = await appeals.update_one(guard, change, session=session)
            if result.matched_count != 1:
                raise ReviewError(409, "the appeal changed meanwhile; reload it")
            await case_store.collection(state.storage).update_one(
                {"_id": appeal["case_id"]},
                {"$push": {"history": {"at": now, "event": "appeal-closed", "by": who.username, "detail": f"appeal {appeal_id}: denial overturned at {STAGE_NAMES[stage['stage']].lower()}"}}},
                session=session)

        await overturn(state, appeal["case_id"], appeal["items"], who, base, note=note, appeal_id=appeal_id, within=record,
                       roles=DECIDERS[stage["stage"]])
    else:
        result = await appeals.update_one(guard, change)
        if result.matched_count != 1:
            raise ReviewError(409, "the appeal changed meanwhile; reload it")
        if final:
            await case_store.collection(state.storage).update_one(
                {"_id": appeal["case_id"]},
                {"$push": {"history": {"at": now, "event": "appeal-closed", "by": who.username, "detail": f"appeal {appeal_id}: denial upheld at external review (final)"}}})
    return await get(state, appeal_id)


async def escalate(state, appeal_id: str, body, who: str) -> dict:
    """Open a later stage after the current one upheld the denial: {"stage": "..."}."""
    if not isinstance(body, dict):
        raise ReviewError(400, "the escalation must be a JSON object")
    target = body.get("stage")
    if target not in STAGES:
        raise ReviewError(400, f"stage must be one of {', '.join(STAGES)}")
    appeal = await get(state, appeal_id)
    if appeal["status"] != "open":
        raise ReviewError(409, f"appeal {appeal_id} is closed ({appeal.get('outcome')})")
    current = appeal["stages"][-1]
    if current["decision"] != "upheld":
        raise ReviewError(409, f"the {STAGE_NAMES[current['stage']].lower()} is not decided yet")
    if STAGES.index(target) <= STAGES.index(current["stage"]):
        raise ReviewError(409, f"an appeal moves forward: after the {STAGE_NAMES[current['stage']].lower()} come {', '.join(STAGES[STAGES.index(current['stage']) + 1:]) or 'no further stages'}")
    now = clock.now()
    stage = _new_stage(target, appeal["urgency"], now, who)
    index = len(appeal["stages"])
    result = await collection(state.storage).update_one(
        {"_id": appeal_id, "status": "open", "stages": {"$size": index}},
        {"$push": {"stages": stage, "history": {"at": now, "event": "stage-opened", "by": who, "detail": STAGE_NAMES[target]}},
         "$set": {"stage": target, "due": stage["due"]}},
    )
    if result.matched_count != 1:
        raise ReviewError(409, "the appeal changed meanwhile; reload it")
    await case_store.collection(state.storage).update_one(
        {"_id": appeal["case_id"]},
        {"$push": {"history": {"at": now, "event": "appeal-stage", "by": who, "detail": f"appeal {appeal_id} escalated to {STAGE_NAMES[target].lower()}"}}})
    return await get(state, appeal_id)


async def close(state, appeal_id: str, body, who: str) -> dict:
    """Close an open appeal without a further stage: the denial stands (after an upheld stage) or
    the appellant withdrew (while a stage is undecided). {"note": "..."}"""
    if not isinstance(body, dict):
        raise ReviewError(400, "the request must be a JSON object")
    note = _str_field(body, "note", 2000)
    appeal = await get(state, appeal_id)
    if appeal["status"] != "open":
        raise ReviewError(409, f"appeal {appeal_id} is already closed ({appeal.get('outcome')})")
    current = appeal["stages"][-1]
    outcome = "upheld" if current["decision"] == "upheld" else "withdrawn"
    if outcome == "withdrawn" and not note:
        raise ReviewError(400, "say why the appeal is withdrawn (a note is required)")
    now = clock.now()
    result = await collection(state.storage).update_one(
        {"_id": appeal_id, "status": "open", "stages": {"$size": len(appeal["stages"])}},
        {"$set": {"status": "closed", "outcome": outcome, "closed": now, "due": None},
         "$push": {"history": {"at": now, "event": "closed", "by": who, "detail": f"{outcome}" + (f": {note[:300]}" if note else "")}}},
    )
    if result.matched_count != 1:
        raise ReviewError(409, "the appeal changed meanwhile; reload it")
    await case_store.collection(state.storage).update_one(
        {"_id": appeal["case_id"]},
        {"$push": {"history": {"at": now, "event": "appeal-closed", "by": who, "detail": f"appeal {appeal_id} closed: {outcome}"}}})
    return await get(state, appeal_id)


def next_stages(appeal: dict) -> list[str]:
    current = appeal["stages"][-1]
    if appeal["status"] != "open" or current["decision"] != "upheld":
        return []
    return list(STAGES[STAGES.index(current["stage"]) + 1:])


def public(appeal: dict, now: datetime | None = None) -> dict:
    """An appeal as JSON: times as ISO strings, the current stage's clock."""
    now = now or clock.now()
    out = {k: v for k, v in appeal.items() if k not in ("_id",)}
    out["id"] = appeal["_id"]
    current = appeal["stages"][-1] if appeal.get("stages") else None
    if appeal.get("status") == "open" and current and current.get("decided") is None:
        out["clock"] = clock.clock_state(current["due"], appeal.get("urgency"), now)
        out["remaining_seconds"] = int((clock.aware(current["due"]) - now).total_seconds())
    else:
        out["clock"] = "stopped"
    out["next_stages"] = next_stages(appeal)
    return out


async def open_clocks(state, now: datetime) -> dict:
    """Open appeal stages awaiting a decision, for the monitoring endpoint."""
    rows = []
    async for a in collection(state.storage).find({"status": "open"}).sort("due", 1).limit(5000):
        current = a["stages"][-1]
        if current.get("decided") is not None:
            continue
        rows.append({"id": a["_id"], "case_id": a["case_id"], "stage": current["stage"], "urgency": a.get("urgency"),
                     "due": clock.aware(current["due"]), "clock": clock.clock_state(current["due"], a.get("urgency"), now),
                     "remaining_seconds": int((clock.aware(current["due"]) - now).total_seconds())})
    return {"open": len(rows), "overdue": sum(1 for r in rows if r["clock"] == "overdue"), "stages": rows}
