"""The staff review API: one router for everything under ``/review/api``, the JSON the workbench pages
and operators' tools use.

    GET  /review/api/cases?status=pended&urgency=expedited&category=...&overdue=true&assignee=...
    GET  /review/api/cases/{id}
    POST /review/api/cases/{id}/decision   {"action": "approve"|"deny"|"modify"|"request-info", ...}
    POST /review/api/cases/{id}/assign     {"assignee": "..."}
    POST /review/api/cases/{id}/extend     {"days": 1-14, "reason": {"code": ..., "text": ...}}
    POST /review/api/cases/{id}/notes      {"text": ...}
    POST /review/api/cases/{id}/appeals    {"reason", "appellant", "stage", "urgency", "items"}
    GET  /review/api/denial-reasons
    GET  /review/api/clocks                every open clock: pended cases and appeal stages
    GET  /review/api/dashboard[.csv]       the operations dashboard (?from&to&category&plan)
    GET  /review/api/appeals?status=open|closed|all
    GET  /review/api/appeals/{id}
    POST /review/api/appeals/{id}/decision {"decision": "upheld"|"overturned", "note"}
    POST /review/api/appeals/{id}/escalate {"stage": ...}
    POST /review/api/appeals/{id}/close    {"note"}

Every refusal on every route is an RFC 9457 problem (``application/problem+json``: ``type``,
``title``, ``status``, ``detail``, and ``code``, a short machine-readable word), rendered by the
app's one error renderer (:mod:`server.errors`) for this surface. Bodies are JSON
objects parsed by the pydantic models below; what they must mean (a known denial reason, a pended
item) is checked by the domain functions they are handed to.

Who may call what is declared beside each route (``Depends(...)``): case data and decisions are for
clinical reviewers and physician reviewers; an administrator holds no case PHI and is refused here.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Annotated, ClassVar, Literal

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, ValidationError
from starlette.responses import Response

from server.auth.guard import GuardedRoute
from server.auth import policy
from server.auth.staff import SANDBOX_REVIEWER, require_staff, staff_token
from server.errors import validation_detail
from server.fhir.jsonio import BodyTooLarge, read_body
from server.fhir.repository import Repository
from server.fhir.responses import base_url
from server.pas import cases as case_store
from server.pas import decisions
from server.pas.reasons import DENIAL_REASONS, reason_public
from server.review import appeals, clock, dashboard, metrics, workbench
from server.review.workbench import ReviewError
from server.storage import utcnow

MAX_JSON_BYTES = 256 * 1024
# The roles that work cases: they see case PHI and decide. An administrator is not one of them.
WORKERS = ("reviewer", "medical-director")


router = APIRouter(route_class=GuardedRoute, prefix="/review/api", tags=["review"])


# ---------------------------------------------------------------------------------- bodies
class Body(BaseModel):
    """A request body. ``messages`` gives the words a refusal uses for a field (dotted path, or its
    first part) instead of pydantic's own."""
    model_config = ConfigDict(extra="ignore")
    messages: ClassVar[dict[str, str]] = {}


class ReasonIn(Body):
    code: str | None = None
    text: str | None = Field(None, max_length=4000)


class ItemChange(Body):
    sequence: StrictInt
    action: Literal["approve", "deny", "modify", "request-info"] | None = None
    reason: ReasonIn | None = None
    quantity: float | None = Field(None, gt=0, allow_inf_nan=False)
    days: StrictInt | None = Field(None, ge=1, le=366)
    note: str | None = Field(None, max_length=4000)


class DecisionIn(Body):
    action: Literal["approve", "deny", "modify", "request-info", "recommend-denial"]
    items: list[ItemChange] | None = Field(None, min_length=1)
    reason: ReasonIn | None = None
    note: str | None = Field(None, max_length=4000)
    needed: list[str | dict[str, str]] | None = None  # plain language, LOINC codes, or {code, modifier, text}
    due_days: StrictInt | None = Field(None, ge=1, le=30)
    # A physician's own account of the decision, and the credentials they decide under.
    rationale: str | None = Field(None, max_length=4000)
    credentials: str | None = Field(None, max_length=200)


class AssignIn(Body):
    assignee: str | None


# The closed vocabularies the bodies below take, from the domain modules that own them.
ExtensionReason = Literal[tuple(clock.EXTENSION_REASONS)]  # type: ignore[valid-type]
Appellant = Literal[tuple(appeals.APPELLANTS)]  # type: ignore[valid-type]
StartStage = Literal[appeals.START_STAGES]  # type: ignore[valid-type]
Stage = Literal[appeals.STAGES]  # type: ignore[valid-type]
Urgency = Literal["standard", "expedited"]
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)]


class ExtensionReasonIn(Body):
    code: ExtensionReason
    text: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] | None = None


class ExtendIn(Body):
    """``{"days": 1-366, "reason": {"code": ..., "text": ...}}``; the payer's extension rule for the
    case's category and urgency (``payer.clocks``) then says how many days it may really have."""
    days: StrictInt = Field(ge=1, le=366)
    reason: ExtensionReasonIn
    messages: ClassVar[dict[str, str]] = {
        "days": f"days must be a whole number from 1 to {clock.EXTENSION_MAX_DAYS} (or as the payer's extension rule allows)",
        "reason": "reason must be an object: {\"code\": ..., \"text\": ...}",
        "reason.code": f"an extension needs a reason: reason.code one of {', '.join(clock.EXTENSION_REASONS)}",
        "reason.text": "reason.text: text fields must be strings of up to 1000 characters",
    }


class NoteIn(Body):
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=workbench.NOTE_MAX)]
    messages: ClassVar[dict[str, str]] = {"text": f"text: a note needs some text, a string of up to {workbench.NOTE_MAX} characters"}


class AppealIn(Body):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    appellant: Appellant | None = None
    stage: StartStage | None = None
    urgency: Urgency | None = None
    items: list[Annotated[int, Field(strict=True, ge=1, le=9999)]] | None = Field(None, min_length=1, max_length=999)
    messages: ClassVar[dict[str, str]] = {
        "reason": "'reason' is required: why the denial should be reversed (text fields must be strings of 1 to 2000 characters)",
        "appellant": f"appellant must be one of {', '.join(appeals.APPELLANTS)}",
        "stage": f"an appeal starts at {' or '.join(appeals.START_STAGES)} (stage)",
        "urgency": "urgency must be standard or expedited",
        "items": "items must be a non-empty list of item sequence numbers",
    }


class AppealDecisionIn(Body):
    decision: Literal[appeals.DECISIONS]  # type: ignore[valid-type]
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] | None = None
    messages: ClassVar[dict[str, str]] = {"decision": f"decision must be one of {', '.join(appeals.DECISIONS)}",
                                          "note": "note: text fields must be strings of up to 2000 characters"}


class EscalateIn(Body):
    stage: Stage
    messages: ClassVar[dict[str, str]] = {"stage": f"stage must be one of {', '.join(appeals.STAGES)}"}


class CloseIn(Body):
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] | None = None
    messages: ClassVar[dict[str, str]] = {"note": "note: text fields must be strings of up to 2000 characters"}


async def read_json(request: Request) -> dict:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/json", "application/fhir+json", ""):
        raise ReviewError(415, "send application/json")
    try:
        body = await read_body(request, MAX_JSON_BYTES)
    except BodyTooLarge:
        raise ReviewError(413, "the request body is too large") from None
    if not body.strip():
        raise ReviewError(400, "the request body is empty; send a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ReviewError(400, "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ReviewError(400, "the request body must be a JSON object")
    return data


async def parse(request: Request, model: type[Body]) -> Body:
    data = await read_json(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ReviewError(400, _model_detail(model, exc.errors())) from None


def _model_detail(model: type[Body], errors) -> str:
    """The model's own words for the first field refused, else pydantic's account of every error."""
    for e in errors:
        path = [str(p) for p in e.get("loc", ()) if not isinstance(p, int)]
        for n in range(len(path), 0, -1):
            if ".".join(path[:n]) in model.messages:
                return model.messages[".".join(path[:n])]
    return validation_detail(errors)


# ---------------------------------------------------------------------------------- who is asking
def _open_sandbox(request: Request) -> bool:
    state = request.app.state.precert
    svc = state.services.get("auth")
    return state.settings.mode == "sandbox" and (svc is None or not svc.enforcing)


async def _signed_in(request: Request):

    if request.app.state.precert.services.get("auth") is None:
        raise HTTPException(401, "payer staff sign-in required")
    return await require_staff()(request)


def staff(*roles: str, sandbox_fallback: bool = False, phi: bool = True):
    """A dependency: the signed-in staff member holding one of ``roles`` (401/403 otherwise). It is
    also the route's access declaration (``policy.staff(*roles)``, enforced by the route before the
    body is read); ``phi=False`` for routes that show no patient data (not audited as PHI access).

    With ``sandbox_fallback``, an anonymous caller of an open sandbox (synthetic data, no
    authentication enforced) acts as the sandbox's built-in physician reviewer, as PAS developers
    testing their client expect; a signed-in caller is always themselves."""

    async def dependency(request: Request):

        if sandbox_fallback and _open_sandbox(request) and not staff_token(request) and \
                getattr(getattr(request.state, "principal", None), "staff", None) is None:
            return SANDBOX_REVIEWER
        # The roles are enforced by the route's guard, before the body is read: this dependency is
        # the route's declaration of them.
        return await _signed_in(request)

    return policy.requires(policy.staff(*roles, phi=phi))(dependency)


case_worker = staff(*WORKERS, sandbox_fallback=True)
worker = staff(*WORKERS)


# ---------------------------------------------------------------------------------- rendering
def _iso(value) -> str | None:
    return clock.instant_text(value) if isinstance(value, datetime) else value


def summary(case: case_store.Case, now: datetime | None = None) -> dict:
    now = now or utcnow()
    due = clock.aware(case.get("due"))
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
        "reviewed_by_human": bool(case.get("reviewed_by_human")),
        "items": [{"sequence": d["sequence"], "action": d["action"], "summary": d["summary"], "reason": d.get("reason"),
                   "reason_code": d.get("reason_code"), "reason_class": d.get("reason_class"),
                   "automatic_clinical_denial": bool(d.get("automatic_clinical_denial"))}
                  for d in case.get("decisions") or []],
    }


def detail(case: case_store.Case) -> dict:
    out = summary(case)
    out["decisions"] = case.get("decisions") or []
    out["errors"] = case.get("errors") or []
    out["history"] = [dict(h, at=_iso(h.get("at"))) for h in case.get("history") or []]
    out["version"] = case.get("version")
    out["claim_id"] = case.get("claim_id")
    out["claim_response_id"] = case.get("response_id")
    out["prior"] = case.get("prior")
    out["superseded_by"] = case.get("superseded_by")
    out["decided_by"] = case.get("decided_by")
    out["decided_as"] = case.get("decided_as")
    out["peer_to_peer"] = case.get("peer_to_peer")
    out["info_request"] = case.get("info_request")
    return out


def _json_default(value):
    if isinstance(value, datetime):
        return clock.instant_text(value)
    if isinstance(value, bytes):
        return None
    raise TypeError


def json_response(data, status: int = 200, headers: dict | None = None) -> Response:
    """The staff APIs' JSON: datetimes pass to `_json_default`, so every instant has one form."""
    return Response(orjson.dumps(data, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME),
                    status_code=status, media_type="application/json", headers=headers)


# ---------------------------------------------------------------------------------- cases
@router.get("/denial-reasons")
async def denial_reasons(who=Depends(staff(sandbox_fallback=True, phi=False))) -> Response:
    return json_response([reason_public(code) for code in DENIAL_REASONS])


@router.get("/cases")
async def list_cases(request: Request, status: str = "pended", urgency: str | None = None, category: str | None = None,
                     overdue: bool = False, assignee: str | None = None, limit: int = 100, who=Depends(case_worker)) -> Response:
    query: dict = {}
    if status != "all":
        query["status"] = status[:40]
    if urgency:
        query["urgency"] = urgency[:40]
    if category:
        query["categories"] = category[:60]
    if assignee:
        query["assignee"] = None if assignee == "unassigned" else assignee[:100]
    if overdue:
        query["due"] = {"$lt": utcnow()}
        query["status"] = "pended"
    cases = case_store.collection(request.app.state.precert.storage)
    limit = max(1, min(limit, 500))
    # Most urgent first: the least time left on the clock.
    docs = [c async for c in cases.find(query, {"response": 0}).sort("due", 1).limit(limit)]
    # The queue's columns: member, age, plan and provider, from the request or the payer's own records.
    now = clock.now()
    rows = [workbench.row(c, now) for c in docs]
    await workbench.payer_records(Repository.of(request), rows)
    found = [{**summary(c), "member": r["member"], "age": r["age"], "plan": r["plan"], "provider": r["provider"]}
             for c, r in zip(docs, rows)]
    return json_response({"total": await cases.count_documents(query), "cases": found})


@router.get("/cases/{case_id}")
async def get_case(request: Request, case_id: str, who=Depends(case_worker)) -> Response:
    case = await case_store.collection(request.app.state.precert.storage).find_one({"_id": case_id}, {"response": 0})
    if case is None:
        raise ReviewError(404, f"case {case_id[:40]} is not known")
    out = detail(case)
    out["extension_rule"] = workbench.extension_rule(request.app.state.precert, case).public()
    out["request"] = orjson.loads(case["request"])
    return json_response(out)


@router.post("/cases/{case_id}/decision")
async def post_decision(request: Request, case_id: str, who=Depends(case_worker)) -> Response:
    body = await parse(request, DecisionIn)
    state = request.app.state.precert
    case = await decisions.decide(state, case_id, body.model_dump(exclude_none=True), who, base_url(request))
    return json_response(detail(case))


@router.post("/cases/{case_id}/assign")
async def post_assign(request: Request, case_id: str, who=Depends(case_worker)) -> Response:
    body = await parse(request, AssignIn)
    assignee = (body.assignee or "").strip()[:100] or None
    return json_response(detail(await decisions.assign(request.app.state.precert, case_id, assignee, who.username)))


@router.post("/cases/{case_id}/extend")
async def post_extend(request: Request, case_id: str, who=Depends(worker)) -> Response:
    body = await parse(request, ExtendIn)
    case = await workbench.extend(request.app.state.precert, case_id, body.days, body.reason.code, body.reason.text, who.username)
    return json_response({"id": case["_id"], "due": case["due"], "extension": case["extension"]})


@router.post("/cases/{case_id}/notes")
async def post_note(request: Request, case_id: str, who=Depends(worker)) -> Response:
    body = await parse(request, NoteIn)
    case = await workbench.add_note(request.app.state.precert, case_id, body.text, who.username)
    return json_response({"id": case["_id"], "notes": case.get("notes") or []}, 201)


@router.post("/cases/{case_id}/appeals")
async def post_appeal(request: Request, case_id: str, who=Depends(worker)) -> Response:
    body = await parse(request, AppealIn)
    appeal = await appeals.file(request.app.state.precert, case_id, body.model_dump(exclude_none=True), who.username)
    return json_response(appeals.public(appeal), 201, headers={"Location": f"/review/api/appeals/{appeal['_id']}"})


@router.get("/clocks")
async def clocks(request: Request, who=Depends(staff(phi=False))) -> Response:
    return json_response(await workbench.clock_snapshot(request.app.state.precert))


# ---------------------------------------------------------------------------------- dashboard
async def _dashboard(request: Request) -> dict:
    q = request.query_params
    try:
        period = dashboard.parse_period(q.get("from"), q.get("to"))
    except metrics.PeriodError as exc:
        raise ReviewError(400, str(exc)) from None
    return await dashboard.dashboard(request.app.state.precert, Repository.of(request), period, q.get("category", "")[:60], q.get("plan", "")[:60])


@router.get("/dashboard")
async def get_dashboard(request: Request, who=Depends(staff(phi=False))) -> Response:
    """The operations dashboard's figures (aggregates, no member data): ?from&to&category&plan."""
    return json_response(await _dashboard(request))


@router.get("/dashboard.csv")
async def get_dashboard_csv(request: Request, who=Depends(staff(phi=False))) -> Response:
    data = await _dashboard(request)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(dashboard.CSV_COLUMNS)
    writer.writerows(dashboard.csv_rows(data))
    p = data["period"]
    return Response(out.getvalue(), media_type="text/csv", headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="prior-auth-operations-{p["start"]}-{p["end"]}.csv"'})


# ---------------------------------------------------------------------------------- appeals
@router.get("/appeals")
async def list_appeals(request: Request, status: str = "open", who=Depends(worker)) -> Response:
    if status not in ("open", "closed", "all"):
        raise ReviewError(400, "status must be open, closed or all")
    now = clock.now()
    return json_response({"appeals": [appeals.public(a, now) for a in await appeals.listing(request.app.state.precert, status)]})


@router.get("/appeals/{appeal_id}")
async def get_appeal(request: Request, appeal_id: str, who=Depends(worker)) -> Response:
    return json_response(appeals.public(await appeals.get(request.app.state.precert, appeal_id)))


@router.post("/appeals/{appeal_id}/decision")
async def post_appeal_decision(request: Request, appeal_id: str, who=Depends(staff("medical-director", "administrator"))) -> Response:
    body = await parse(request, AppealDecisionIn)
    appeal = await appeals.decide(request.app.state.precert, appeal_id, body.model_dump(exclude_none=True), who, base_url(request))
    return json_response(appeals.public(appeal))


@router.post("/appeals/{appeal_id}/escalate")
async def post_escalate(request: Request, appeal_id: str, who=Depends(worker)) -> Response:
    body = await parse(request, EscalateIn)
    appeal = await appeals.escalate(request.app.state.precert, appeal_id, body.model_dump(exclude_none=True), who.username)
    return json_response(appeals.public(appeal))


@router.post("/appeals/{appeal_id}/close")
async def post_close(request: Request, appeal_id: str, who=Depends(worker)) -> Response:
    body = await parse(request, CloseIn)
    appeal = await appeals.close(request.app.state.precert, appeal_id, body.model_dump(exclude_none=True), who.username)
    return json_response(appeals.public(appeal))
