"""The JSON API payer staff use to work pended requests (the review workbench is built on it).

    GET  /review/api/cases?status=pended&urgency=expedited&category=...&overdue=true&assignee=...
    GET  /review/api/cases/{id}
    POST /review/api/cases/{id}/decision   {"action": "approve"|"deny"|"modify"|"request-info", ...}
    POST /review/api/cases/{id}/assign     {"assignee": "..."}
    GET  /review/api/denial-reasons
"""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from server.fhir.errors import FHIRError
from server.fhir.jsonio import read_fhir_json
from server.fhir.responses import base_url
from server.pas import cases as case_store
from server.pas import decisions
from server.pas.reasons import DENIAL_REASONS
from server.storage import utcnow

router = APIRouter(prefix="/review/api", tags=["review"])


def staff_name(request: Request) -> str:
    """Who is acting: the authenticated staff member, or the sandbox reviewer when the sandbox runs
    without staff authentication."""
    staff = getattr(request.state, "staff", None)
    if staff is not None:
        return getattr(staff, "username", None) or str(staff)
    state = request.app.state.precert
    if state.settings.mode == "sandbox":
        return "sandbox-reviewer"
    raise FHIRError.single(401, "login", "payer staff must sign in")


def _iso(value) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return value


def summary(case: dict, now: datetime | None = None) -> dict:
    now = now or utcnow()
    due = case.get("due")
    if isinstance(due, datetime) and due.tzinfo is None:
        due = due.replace(tzinfo=timezone.utc)
    return {
        "id": case["_id"],
        "status": case["status"],
        "urgency": case.get("urgency"),
        "received": _iso(case.get("received")),
        "due": _iso(due),
        "overdue": bool(case["status"] == "pended" and due and due < now),
        "decided": _iso(case.get("decided")),
        "categories": case.get("categories") or [],
        "assignee": case.get("assignee"),
        "patient_id": case.get("patient_id"),
        "auth_number": case.get("auth_number"),
        "items": [{"sequence": d["sequence"], "action": d["action"], "summary": d["summary"], "reason": d.get("reason")} for d in case.get("decisions") or []],
    }


def detail(case: dict) -> dict:
    out = summary(case)
    out["decisions"] = case.get("decisions") or []
    out["errors"] = case.get("errors") or []
    out["history"] = [dict(h, at=_iso(h.get("at"))) for h in case.get("history") or []]
    out["version"] = case.get("version")
    out["claim_id"] = case.get("claim_id")
    out["claim_response_id"] = case.get("response_id")
    out["prior"] = case.get("prior")
    out["superseded_by"] = case.get("superseded_by")
    return out


def _json(data, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


@router.get("/denial-reasons")
async def denial_reasons() -> Response:
    return _json([{"code": k, "text": v} for k, v in DENIAL_REASONS.items()])


@router.get("/cases")
async def list_cases(request: Request, status: str = "pended", urgency: str | None = None, category: str | None = None,
                     overdue: bool = False, assignee: str | None = None, limit: int = 100) -> Response:
    staff_name(request)
    query: dict = {}
    if status != "all":
        query["status"] = status
    if urgency:
        query["urgency"] = urgency
    if category:
        query["categories"] = category
    if assignee:
        query["assignee"] = None if assignee == "unassigned" else assignee
    if overdue:
        query["due"] = {"$lt": utcnow()}
        query["status"] = "pended"
    cases = case_store.collection(request.app.state.precert.storage)
    limit = max(1, min(limit, 500))
    found = [summary(c) async for c in cases.find(query, {"request": 0, "response": 0}).sort("due", 1).limit(limit)]
    return _json({"total": await cases.count_documents(query), "cases": found})


@router.get("/cases/{case_id}")
async def get_case(request: Request, case_id: str) -> Response:
    staff_name(request)
    case = await case_store.collection(request.app.state.precert.storage).find_one({"_id": case_id}, {"response": 0})
    if case is None:
        raise FHIRError.single(404, "not-found", f"case {case_id[:40]} is not known")
    out = detail(case)
    out["request"] = orjson.loads(case["request"])
    return _json(out)


@router.post("/cases/{case_id}/decision")
async def post_decision(request: Request, case_id: str) -> Response:
    who = staff_name(request)
    state = request.app.state.precert
    body = await read_fhir_json(request, state.settings.max_body_bytes)
    case = await decisions.decide(state, case_id, body, who, base_url(request))
    return _json(detail(case))


@router.post("/cases/{case_id}/assign")
async def post_assign(request: Request, case_id: str) -> Response:
    who = staff_name(request)
    state = request.app.state.precert
    body = await read_fhir_json(request, state.settings.max_body_bytes)
    if not isinstance(body, dict) or not (body.get("assignee") is None or isinstance(body.get("assignee"), str)):
        raise FHIRError.single(400, "invalid", "body must be {\"assignee\": \"name\" or null}")
    assignee = (body.get("assignee") or "").strip()[:100] or None
    return _json(detail(await decisions.assign(state, case_id, assignee, who)))
