"""The review workbench: the pages payer clinical staff work pended requests in, the decision
clocks, appeals, the CMS-0057-F metrics report and the sandbox request list.

Pages (server-rendered with jinja2, autoescaped, no JavaScript):

    GET  /review/login, POST /review/login, POST /review/logout
    GET  /review                             the work queue (filters: category, urgency, due, assignee)
    GET  /review/cases/{id}                  the case: request, documentation vs criteria, trace, history
    POST /review/cases/{id}/decide|assign|extend|notes|appeals
    GET  /review/cases/{id}/documents/{n}    an attached document (download)
    GET  /review/appeals, /review/appeals/{id}
    GET  /review/dashboard                   the operations dashboard (aggregates; links to the cases behind each figure)
    GET  /review/admin                       the administrator's landing page (accounts, clients, rules; no case data)
    POST /review/appeals/{id}/decide|escalate|close
    GET  /reports/prior-auth                 public CMS-0057-F report (no sign-in, no PHI)
    GET  /reports/prior-auth.json|.csv       the same figures to download (public)
    GET  /sandbox/requests                   what developers submitted to the open sandbox

The JSON API under ``/review/api`` is :mod:`server.review.api` (one router, problem+json errors).

Decisions on cases use PAS's own API and functions (:mod:`server.pas.decisions`).
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import HTTPException
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from server.auth.guard import GuardedRoute
from server.auth import policy
from server.auth.routes import origin
from server.auth.staff import COOKIE, LICENCES, require_staff
from server.auth.throttle import SignInThrottled
from server.errors import PrecertError
from server.fhir.errors import FHIRError
from server.fhir.jsonio import BodyTooLarge, read_body
from server.fhir.repository import Repository
from server.fhir.responses import base_url
from server.pas import cases as case_store
from server.pas import decisions
from server.pas.constants import ReviewAction
from server.pas.reasons import DENIAL_REASONS, REASONS
from server.pas.request import PasBundle
from server.review import api as review_api
from server.review import appeals, charts, clock, dashboard, labels, metrics, view, workbench
from server.review.api import json_response
from server.review.workbench import QueueFilter, ReviewError
from server.rules import get_rules

HERE = Path(__file__).parent
MAX_FORM_BYTES = 64 * 1024
WORKERS = ("reviewer", "medical-director")
ASSETS = {"review.css": ("text/css; charset=utf-8", HERE / "static" / "review.css")}
DONE = {
    "approve": "Approved. The provider is being notified.",
    "deny": "Denied. The provider is being notified.",
    "modify": "Modified. The provider is being notified.",
    "request-info": "More information requested: a Task was sent to the provider.",
    "recommend-denial": "Denial recommended: the case stays pended for a physician reviewer.",
    "assign": "Assignment saved.",
    "extend": "Decision timeframe extended.",
    "note": "Note added.",
    "appeal": "Appeal filed.",
    "appeal-decided": "Appeal stage decided.",
    "escalated": "Appeal escalated.",
    "closed": "Appeal closed.",
}

router = APIRouter(route_class=GuardedRoute, include_in_schema=False)

# Case and appeal pages check the role themselves, so that an administrator gets a page saying why
# (and a way back to their own), not a JSON refusal.
WORKER_PAGE = policy.staff(*WORKERS, page_checks_roles=True)
WORKER_ACTION = policy.staff(*WORKERS)


# ---------------------------------------------------------------------------------- rendering
def _dt(value) -> str:
    if isinstance(value, datetime):
        return clock.aware(value).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "" if value is None else str(value)


def _date(value) -> str:
    if isinstance(value, datetime):
        return clock.aware(value).strftime("%Y-%m-%d")
    return "" if value is None else str(value)


def _pct(value) -> str:
    return "–" if value is None else f"{value:.1f}%"


def _hours(value) -> str:
    if value is None:
        return "–"
    if value >= 48:
        return f"{value:.1f} h ({value / 24:.1f} d)"
    return f"{value:.1f} h"


env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True, default_for_string=True),
                  trim_blocks=True, lstrip_blocks=True)
env.filters.update(dt=_dt, date=_date, pct=_pct, hours=_hours, category=labels.category, left=clock.describe_left)
env.globals.update(CATEGORIES=labels.CATEGORIES, STATUSES=labels.STATUSES, EVENTS=labels.EVENTS, ACTIONS=view.ACTIONS,
                   STAGE_NAMES=appeals.STAGE_NAMES, APPELLANTS=appeals.APPELLANTS, DENIAL_REASONS=DENIAL_REASONS, REASONS=REASONS,
                   EXTENSION_REASONS=clock.EXTENSION_REASONS, EXTENSION_MAX_DAYS=clock.EXTENSION_MAX_DAYS)


# Pages say "same-origin" rather than the server-wide "no-referrer": with no-referrer, browsers send
# "Origin: null" on form posts, which the security middleware's cross-site check (rightly) refuses.
# Other origins still get no referrer, so case numbers in URLs do not leak.
PAGE_HEADERS = {"Referrer-Policy": "same-origin"}


def render(name: str, status: int = 200, **context) -> HTMLResponse:
    return HTMLResponse(env.get_template(name).render(**context), status_code=status, headers=PAGE_HEADERS)


def error_page(request: Request, status: int, message: str, who=None) -> HTMLResponse:
    return render("error.html", status=status, status_code=status, message=message, who=who, now=clock.now())


# ---------------------------------------------------------------------------------- who is asking
async def staff(request: Request, *roles: str):
    """The signed-in staff member with one of ``roles`` (HTTPException 401/403 otherwise)."""

    state = request.app.state.precert
    if state.services.get("auth") is None:  # security is not installed (a stripped-down app)
        raise HTTPException(401, "payer staff sign-in required")
    return await require_staff(*roles)(request)


async def page_staff(request: Request, *roles: str):
    """(principal, None) or (None, a response: the sign-in page or a 403 page)."""
    try:
        return await staff(request, *roles), None
    except HTTPException as exc:
        if exc.status_code == 401:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return None, RedirectResponse(f"/review/login?next={quote(target, safe='')}", status_code=303)
        try:  # signed in, but not in one of the roles: the page links back to their own landing page
            who = await staff(request)
        except HTTPException:
            who = None
        return None, error_page(request, exc.status_code, str(exc.detail), who)


def safe_next(target: str | None) -> str:
    if not isinstance(target, str) or not target.startswith("/review") or target.startswith("//") or "\\" in target or len(target) > 500:
        return "/review"
    if any(ord(ch) < 32 for ch in target):
        return "/review"
    return target


# ---------------------------------------------------------------------------------- input
async def read_form(request: Request) -> dict[str, str]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise ReviewError(415, "send the form as application/x-www-form-urlencoded")
    try:
        body = await read_body(request, MAX_FORM_BYTES)
    except BodyTooLarge:
        raise ReviewError(413, "the form is too large") from None
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise ReviewError(400, "the form could not be read") from None
    out: dict[str, str] = {}
    for k, v in pairs:
        out.setdefault(k, v)
    return out


def fhir_message(exc: FHIRError) -> str:
    return "; ".join(i.get("diagnostics", "") for i in exc.issues) or str(exc)


def number(value: str, name: str, whole: bool = False):
    value = (value or "").strip()
    if not value:
        return None
    try:
        n = int(value) if whole else float(value)
    except ValueError:
        raise ReviewError(400, f"{name} must be a {'whole ' if whole else ''}number") from None
    if n != n or n in (float("inf"), float("-inf")):
        raise ReviewError(400, f"{name} must be a number")
    return int(n) if not whole and float(n).is_integer() else n


def decision_body(form: dict[str, str], case: case_store.Case) -> dict:
    """The PAS decision API body for a decide form."""
    action = form.get("action", "")
    note = form.get("note", "")
    if action == "approve":
        return {"action": "approve", "note": note}
    signed = {k: form[k].strip()[:4000] for k in ("rationale", "credentials") if form.get(k, "").strip()}
    if action == "deny":
        return {"action": "deny", "reason": {"code": form.get("reason_code", ""), "text": form.get("reason_text", "")}, "note": note, **signed}
    if action == "recommend-denial":
        return {"action": "recommend-denial", "reason": {"code": form.get("reason_code", ""), "text": form.get("reason_text", "")},
                "note": note, **signed}
    if action == "modify":
        items = []
        for d in case.get("decisions") or []:
            if d.get("action") != ReviewAction.PENDED:
                continue
            seq = d["sequence"]
            qty = number(form.get(f"quantity_{seq}", ""), f"the quantity of item {seq}")
            days = number(form.get(f"days_{seq}", ""), f"the days of item {seq}", whole=True)
            if qty is None and days is None:
                continue
            if qty is None:
                qty = d.get("requested_quantity") or 1
            items.append({"sequence": seq, "quantity": qty, **({"days": days} if days is not None else {})})
        if not items:
            raise ReviewError(400, "to modify, give the quantity (or days) to authorize for at least one item")
        return {"action": "modify", "items": items, "note": note, **signed}
    if action == "request-info":
        needed = [line.strip()[:500] for line in form.get("needed", "").splitlines() if line.strip()]
        return {"action": "request-info", "needed": needed, "note": note}
    raise ReviewError(400, "choose approve, deny, modify or request more information")


# ---------------------------------------------------------------------------------- sign-in
@router.get("/review/login")
@policy.requires(policy.PUBLIC_REQ)
async def login_page(request: Request, next: str = "/review") -> Response:
    return render("login.html", next=safe_next(next), error=None, who=None, now=clock.now(),
                  sandbox=request.app.state.precert.settings.mode == "sandbox")


@router.post("/review/login")
@policy.requires(policy.PUBLIC_REQ)
async def login_submit(request: Request) -> Response:

    try:
        form = await read_form(request)
    except ReviewError as exc:
        return render("login.html", status=exc.status, next="/review", error=exc.message, who=None, now=clock.now())
    target = safe_next(form.get("next"))
    svc = request.app.state.precert.services.get("auth")
    username, password = form.get("username", "")[:100], form.get("password", "")[:1024]
    if svc is None or not username or not password:
        return render("login.html", status=400 if svc else 503, next=target, error="Enter your username and password.", who=None, now=clock.now())
    ip = request.client.host if request.client else None
    try:
        result = await svc.staff.login(username, password, ip)
    except SignInThrottled as exc:
        resp = render("login.html", status=429, next=target, who=None, now=clock.now(),
                      error=f"Too many failed sign-ins from this address. Try again in {exc.retry_after} seconds.")
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    if result is None:
        svc.audit.record(kind="login", agent={"kind": "staff", "id": username, "display": f"{username} (claimed)", "ip": ip},
                         status=401, method="POST", path="/review/login", description="sign-in failed")
        return render("login.html", status=401, next=target, error="Unknown user, wrong password, or the account is disabled.", who=None, now=clock.now())
    token, who = result
    svc.audit.record(kind="login", agent={"kind": "staff", "id": who.username, "display": who.display or who.username, "roles": who.roles, "ip": ip},
                     status=200, method="POST", path="/review/login", description="signed in")
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(COOKIE, token, max_age=svc.config.staff_session_seconds, httponly=True,
                    secure=origin(request).startswith("https:"), samesite="strict", path="/")
    return resp


@router.post("/review/logout")
@policy.requires(policy.staff())
async def logout(request: Request) -> Response:

    svc = request.app.state.precert.services.get("auth")
    token = request.cookies.get(COOKIE)
    # Only the browser's own session ends here; an API caller's bearer token is left alone.
    if token and svc is not None:
        await svc.staff.logout(token)
    resp = RedirectResponse("/review/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


# ---------------------------------------------------------------------------------- assets
@router.get("/assets/{name}")
@policy.requires(policy.PUBLIC_REQ)
async def asset(name: str) -> Response:
    found = ASSETS.get(name)
    if found is None:
        raise HTTPException(404, "no such asset")
    ctype, path = found
    return Response(path.read_bytes(), media_type=ctype.split(";")[0], headers={"Content-Type": ctype, "Cache-Control": "public, max-age=300"})


# ---------------------------------------------------------------------------------- queue
def admin_only(who) -> bool:
    """An administrator who works no cases (and so sees no case PHI)."""
    return who is not None and "administrator" in who.roles and not who.has(*WORKERS)


@router.get("/review")
@router.get("/review/")
@policy.requires(policy.staff())  # any staff member: the page sends an administrator to their own landing page
async def queue_page(request: Request) -> Response:
    who, refusal = await page_staff(request, *WORKERS)
    if refusal:
        try:
            signed_in = await staff(request)
        except HTTPException:
            return refusal
        if admin_only(signed_in):  # an administrator's home is the administration page
            return RedirectResponse("/review/admin", status_code=303)
        return refusal
    state = request.app.state.precert
    q = request.query_params
    flt = QueueFilter(
        category=q.get("category", "")[:60],
        urgency=q.get("urgency", "") if q.get("urgency") in ("expedited", "standard") else "",
        due=q.get("due", "") if q.get("due") in ("overdue", "due-soon") else "",
        assignee=(who.username if q.get("assignee") == "me" else q.get("assignee", "")[:100]),
        status=q.get("status") if q.get("status") in workbench.STATUSES else "pended",
        outcome=q.get("outcome") if q.get("outcome") in workbench.OUTCOMES else "",
        text="".join(ch for ch in q.get("q", "") if ord(ch) >= 32).strip()[:100],
        received_from=_day(q.get("from")), received_to=_day(q.get("to")),
        decided_from=_day(q.get("dfrom")), decided_to=_day(q.get("dto")),
        plan=q.get("plan", "")[:60], reviewed=q.get("reviewed") if q.get("reviewed") in ("automatic", "human") else "",
        info=q.get("info") if q.get("info") in ("none", "requested") else "", reason=q.get("reason", "")[:60],
        decided_by=q.get("decided_by", "")[:100],
    )
    if flt.status == "pended" and (flt.decided_from or flt.decided_to or flt.reviewed or flt.reason or flt.decided_by):
        flt.status = "decided"
    per = _whole(q.get("per"), workbench.QUEUE_LIMIT, 1, workbench.QUEUE_LIMIT)
    page = _whole(q.get("page"), 1, 1, 100_000)
    rows, total = await workbench.queue(state, Repository.of(request), flt, per, (page - 1) * per)
    keep = [(k, v) for k, v in q.multi_items() if k not in ("page",)]

    def page_link(n: int) -> str:
        return "/review?" + urlencode(keep + [("page", str(n))])

    paging = {
        "first": (page - 1) * per + 1 if rows else 0,
        "last": (page - 1) * per + len(rows),
        "previous": page_link(page - 1) if page > 1 else None,
        "next": page_link(page + 1) if page * per < total else None,
    }
    return render("queue.html", who=who, now=clock.now(), rows=rows, total=total, counts=await workbench.counts(state, who.username),
                  flt=flt, assignee_param=q.get("assignee", "")[:100], categories=await workbench.categories(state),
                  staff=await assignable(state), limit=per, paging=paging, OUTCOMES=workbench.OUTCOMES)


def _day(text: str | None):
    """A date from a query parameter (YYYY-MM-DD), or None when absent or not a date."""
    try:
        return date.fromisoformat(text) if text and len(text) == 10 else None
    except ValueError:
        return None


def _whole(text: str | None, default: int, low: int, high: int) -> int:
    """A whole number from a query parameter, kept within [low, high]; the default when absent or not a number."""
    try:
        return min(high, max(low, int(text))) if text is not None else default
    except ValueError:
        return default


async def assignable(state) -> list[dict]:
    svc = state.services.get("auth")
    if svc is None:
        return []
    return [s for s in await svc.staff.list() if s.get("active") and set(s.get("roles") or []) & set(WORKERS)]


# ---------------------------------------------------------------------------------- dashboard
@router.get("/review/dashboard")
@policy.requires(policy.staff(phi=False))
async def dashboard_page(request: Request) -> Response:
    """The operations dashboard for payer staff (aggregates only; reviewers, directors, administrators)."""
    who, refusal = await page_staff(request)
    if refusal:
        return refusal
    state = request.app.state.precert
    q = request.query_params
    category, plan = q.get("category", "")[:60], q.get("plan", "")[:60]
    error, status = None, 200
    try:
        period = dashboard.parse_period(q.get("from"), q.get("to"))
    except metrics.PeriodError as exc:
        period, error, status = dashboard.default_period(), str(exc), 400
    data = await dashboard.dashboard(state, Repository.of(request), period, category, plan)
    query = urlencode({k: v for k, v in {"from": period.start.isoformat(), "to": period.end.isoformat(), "category": category, "plan": plan}.items() if v})
    return render("dashboard.html", status=status, who=who, now=clock.now(), nav="dashboard", d=data, error=error, query=query,
                  plans=list(get_rules(state).payer.plans), categories=await workbench.categories(state), links=who.has(*WORKERS))


# ---------------------------------------------------------------------------------- administration
@router.get("/review/admin")
@policy.requires(policy.staff("administrator", phi=False))
async def admin_page(request: Request) -> Response:
    """The administrator's landing page: staff accounts, registered clients, the rules and links to
    the admin APIs; aggregate counts only, no case data."""

    who, refusal = await page_staff(request, "administrator")
    if refusal:
        return refusal
    state = request.app.state.precert
    svc = state.services["auth"]
    clients = [c.public() for c in await svc.clients.all()]
    return render("admin.html", who=who, now=clock.now(), nav="admin", staff=await svc.staff.list(), clients=clients,
                  rules=get_rules(state).summary(), counts=await workbench.counts(state), LICENCES=LICENCES)


# ---------------------------------------------------------------------------------- case page
async def case_page(request: Request, who, case_id: str, *, status: int = 200, error: str | None = None, form: dict | None = None) -> Response:
    state = request.app.state.precert
    try:
        case = await workbench.load(state, case_id)
    except ReviewError as exc:
        return error_page(request, exc.status, exc.message, who)
    now = clock.now()
    done = request.query_params.get("done")
    case_appeals = [appeals.public(a, now) for a in await appeals.for_case(state, case["_id"])]
    rule = workbench.extension_rule(state, case)
    req = await workbench.fill_request_view(Repository.of(request), case, view.request_view(case))
    return render("case.html", status=status, who=who, now=now, case=case, req=req,
                  row=workbench.row(case, now, with_member=False), error=error, form=form or {},
                  done=DONE.get(done or ""), staff=await assignable(state), appeals=case_appeals,
                  can_extend=clock.check_extension(case, 1, now, rule) is None, extension_rule=rule,
                  pended_items=[d for d in case.get("decisions") or [] if d.get("action") == ReviewAction.PENDED],
                  denied_items=[d for d in case.get("decisions") or [] if d.get("action") == ReviewAction.DENIED],
                  open_appeal=any(a["status"] == "open" for a in case_appeals))


@router.get("/review/cases/{case_id}")
@policy.requires(WORKER_PAGE)
async def show_case(request: Request, case_id: str) -> Response:
    who, refusal = await page_staff(request, *WORKERS)
    if refusal:
        return refusal
    return await case_page(request, who, case_id)


@router.get("/review/cases/{case_id}/documents/{index}")
@policy.requires(WORKER_PAGE)
async def case_document(request: Request, case_id: str, index: str) -> Response:
    who, refusal = await page_staff(request, *WORKERS)
    if refusal:
        return refusal
    try:
        case = await workbench.load(request.app.state.precert, case_id)
    except ReviewError as exc:
        return error_page(request, exc.status, exc.message, who)
    found = None
    if index.isdigit() and len(index) < 5:
        try:
            bundle = orjson.loads(case.get("request") or b"{}")
        except orjson.JSONDecodeError:
            bundle = {}

        found = view.document_content(PasBundle(bundle if isinstance(bundle, dict) else {}), int(index))
    if found is None:
        return error_page(request, 404, "no such document, or it has no content to open", who)
    data, ctype, name = found
    return Response(data, media_type=ctype, headers={"Content-Disposition": f'attachment; filename="{name}"',
                                                     "Content-Security-Policy": "default-src 'none'; sandbox"})


async def _case_action(request: Request, case_id: str, roles, action) -> Response:
    who, refusal = await page_staff(request, *roles)
    if refusal:
        return refusal
    form: dict = {}
    try:
        form = await read_form(request)
        done = await action(who, form)
    except ReviewError as exc:
        return await case_page(request, who, case_id, status=exc.status, error=exc.message, form=form)
    except FHIRError as exc:
        return await case_page(request, who, case_id, status=exc.status, error=fhir_message(exc), form=form)
    return RedirectResponse(f"/review/cases/{quote(case_id, safe='')}?done={done}", status_code=303)


@router.post("/review/cases/{case_id}/decide")
@policy.requires(WORKER_ACTION)
async def decide_form(request: Request, case_id: str) -> Response:
    state = request.app.state.precert

    async def act(who, form):
        case = await workbench.load(state, case_id, with_request=False)
        body = decision_body(form, case)
        await decisions.decide(state, case_id, body, who, base_url(request))
        return body["action"]

    return await _case_action(request, case_id, WORKERS, act)


@router.post("/review/cases/{case_id}/assign")
@policy.requires(WORKER_ACTION)
async def assign_form(request: Request, case_id: str) -> Response:
    state = request.app.state.precert

    async def act(who, form):
        name = form.get("assignee", "").strip()
        if name == "me":
            name = who.username
        if name and name not in {s["username"] for s in await assignable(state)}:
            raise ReviewError(400, "assign to a reviewer or medical director who can work cases")
        await workbench.load(state, case_id, with_request=False)
        await decisions.assign(state, case_id, name or None, who.username)
        return "assign"

    return await _case_action(request, case_id, WORKERS, act)


@router.post("/review/cases/{case_id}/extend")
@policy.requires(WORKER_ACTION)
async def extend_form(request: Request, case_id: str) -> Response:
    state = request.app.state.precert

    async def act(who, form):
        days = number(form.get("days", ""), "days", whole=True)
        await workbench.extend(state, case_id, days, form.get("reason_code", ""), form.get("reason_text", ""), who.username)
        return "extend"

    return await _case_action(request, case_id, WORKERS, act)


@router.post("/review/cases/{case_id}/notes")
@policy.requires(WORKER_ACTION)
async def note_form(request: Request, case_id: str) -> Response:
    state = request.app.state.precert

    async def act(who, form):
        await workbench.add_note(state, case_id, form.get("text", ""), who.username)
        return "note"

    return await _case_action(request, case_id, WORKERS, act)


@router.post("/review/cases/{case_id}/appeals")
@policy.requires(WORKER_ACTION)
async def appeal_form(request: Request, case_id: str) -> Response:
    state = request.app.state.precert
    who, refusal = await page_staff(request, *WORKERS)
    if refusal:
        return refusal
    form: dict = {}
    try:
        form = await read_form(request)
        appeal = await appeals.file(state, case_id, {"reason": form.get("reason", ""), "appellant": form.get("appellant") or None,
                                                     "stage": form.get("stage") or None, "urgency": form.get("urgency") or None}, who.username)
    except ReviewError as exc:
        return await case_page(request, who, case_id, status=exc.status, error=exc.message, form=form)
    return RedirectResponse(f"/review/appeals/{appeal['_id']}?done=appeal", status_code=303)


# ---------------------------------------------------------------------------------- appeals pages
@router.get("/review/appeals")
@policy.requires(WORKER_PAGE)
async def appeals_page(request: Request) -> Response:
    who, refusal = await page_staff(request, *WORKERS)
    if refusal:
        return refusal
    status = request.query_params.get("status", "open")
    if status not in ("open", "closed", "all"):
        status = "open"
    now = clock.now()
    found = [appeals.public(a, now) for a in await appeals.listing(request.app.state.precert, status)]
    return render("appeals.html", who=who, now=now, appeals=found, tab=status)


async def appeal_page(request: Request, who, appeal_id: str, *, status: int = 200, error: str | None = None) -> Response:
    state = request.app.state.precert
    try:
        appeal = await appeals.get(state, appeal_id)
        case = await workbench.load(state, appeal["case_id"], with_request=True)
    except ReviewError as exc:
        return error_page(request, exc.status, exc.message, who)
    now = clock.now()
    req = await workbench.fill_request_view(Repository.of(request), case, view.request_view(case))
    return render("appeal.html", status=status, who=who, now=now, appeal=appeals.public(appeal, now), case=case,
                  req=req, error=error, done=DONE.get(request.query_params.get("done") or ""),
                  can_decide=who.has(*appeals.DECIDERS[appeal["stages"][-1]["stage"]]))


@router.get("/review/appeals/{appeal_id}")
@policy.requires(WORKER_PAGE)
async def show_appeal(request: Request, appeal_id: str) -> Response:
    who, refusal = await page_staff(request, *WORKERS)
    if refusal:
        return refusal
    return await appeal_page(request, who, appeal_id)


async def _appeal_action(request: Request, appeal_id: str, roles, action) -> Response:
    who, refusal = await page_staff(request, *roles)
    if refusal:
        return refusal
    try:
        form = await read_form(request)
        done = await action(who, form)
    except ReviewError as exc:
        return await appeal_page(request, who, appeal_id, status=exc.status, error=exc.message)
    except FHIRError as exc:
        return await appeal_page(request, who, appeal_id, status=exc.status, error=fhir_message(exc))
    return RedirectResponse(f"/review/appeals/{quote(appeal_id, safe='')}?done={done}", status_code=303)


@router.post("/review/appeals/{appeal_id}/decide")
@policy.requires(policy.staff("medical-director", "administrator"))
async def appeal_decide_form(request: Request, appeal_id: str) -> Response:
    state = request.app.state.precert

    async def act(who, form):
        await appeals.decide(state, appeal_id, {"decision": form.get("decision") or None, "note": form.get("note", "")}, who, base_url(request))
        return "appeal-decided"

    return await _appeal_action(request, appeal_id, ("medical-director", "administrator"), act)


@router.post("/review/appeals/{appeal_id}/escalate")
@policy.requires(WORKER_ACTION)
async def appeal_escalate_form(request: Request, appeal_id: str) -> Response:
    state = request.app.state.precert

    async def act(who, form):
        await appeals.escalate(state, appeal_id, {"stage": form.get("stage") or None}, who.username)
        return "escalated"

    return await _appeal_action(request, appeal_id, WORKERS, act)


@router.post("/review/appeals/{appeal_id}/close")
@policy.requires(WORKER_ACTION)
async def appeal_close_form(request: Request, appeal_id: str) -> Response:
    state = request.app.state.precert

    async def act(who, form):
        await appeals.close(state, appeal_id, {"note": form.get("note", "")}, who.username)
        return "closed"

    return await _appeal_action(request, appeal_id, WORKERS, act)


# ---------------------------------------------------------------------------------- metrics (public)
def _period(request: Request) -> metrics.Period:
    q = request.query_params
    return metrics.parse_period(q.get("from"), q.get("to"))


def _unit(request: Request) -> str | None:
    unit = request.query_params.get("by")
    if unit in (None, ""):
        return None
    if unit not in ("day", "week", "month"):
        raise metrics.PeriodError("'by' must be day, week or month")
    return unit


@router.get("/reports/prior-auth")
@policy.requires(policy.PUBLIC_REQ)
async def report_page(request: Request) -> Response:
    state = request.app.state.precert
    try:
        period, unit = _period(request), _unit(request)
    except metrics.PeriodError as exc:
        default = metrics.parse_period(None, None)
        result = await metrics.report(state, default)
        return render("report.html", status=400, error=str(exc), result=result, charts=_charts(result), query="",
                      form={"from": request.query_params.get("from", "")[:20], "to": request.query_params.get("to", "")[:20]}, who=None, now=clock.now())
    result = await metrics.report(state, period, unit)
    query = urlencode({"from": period.start.isoformat(), "to": period.end.isoformat()})
    return render("report.html", result=result, charts=_charts(result), query=query, error=None,
                  form={"from": period.start.isoformat(), "to": period.end.isoformat()}, who=None, now=clock.now())


def _charts(result: dict) -> dict:
    return {u: {"decisions": charts.decisions_chart(result["series"], u, result["unit"]),
                "time": charts.time_chart(result["series"], u, result["unit"])} for u in metrics.URGENCIES}


@router.get("/reports/prior-auth.json")
@policy.requires(policy.PUBLIC_REQ)
async def report_json(request: Request) -> Response:
    try:
        period, unit = _period(request), _unit(request)
    except metrics.PeriodError as exc:
        raise PrecertError(400, str(exc)) from None
    result = await metrics.report(request.app.state.precert, period, unit)
    headers = {"Content-Disposition": f'attachment; filename="prior-auth-metrics-{period.start}-{period.end}.json"'} if request.query_params.get("download") else None
    return json_response(result, headers=headers)


@router.get("/reports/prior-auth.csv")
@policy.requires(policy.PUBLIC_REQ)
async def report_csv(request: Request) -> Response:
    try:
        period, unit = _period(request), _unit(request)
    except metrics.PeriodError as exc:
        raise PrecertError(400, str(exc)) from None
    result = await metrics.report(request.app.state.precert, period, unit)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(metrics.CSV_COLUMNS)
    writer.writerows(metrics.csv_rows(result, by_bucket=unit is not None))
    return Response(out.getvalue(), media_type="text/csv", headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="prior-auth-metrics-{period.start}-{period.end}.csv"'})


# ---------------------------------------------------------------------------------- sandbox
@router.get("/sandbox/requests")
@policy.requires(policy.PUBLIC_REQ)
async def sandbox_requests(request: Request) -> Response:
    """The requests developers submitted to the open sandbox, newest first. Only an open sandbox
    (sandbox mode, authentication not enforced) serves it: its data is synthetic and already open."""
    state = request.app.state.precert
    svc = state.services.get("auth")
    if state.settings.mode != "sandbox" or (svc is not None and svc.enforcing):
        return error_page(request, 404, "the request list is part of the open sandbox only")
    q = request.query_params
    printable = lambda v: "".join(ch for ch in v if ord(ch) >= 32).strip()  # noqa: E731  (no NULs in queries)
    npi = printable(q.get("npi", ""))[:40]
    organization = printable(q.get("organization", ""))[:200]
    identifier = printable(q.get("identifier", ""))[:200]
    query: dict = {}
    if npi:
        query["provider_ids"] = npi
    if organization:
        query["owner"] = None if organization == "anonymous" else organization
    if identifier:
        query["key"] = {"$regex": "\\|" + "".join("\\" + ch if not ch.isalnum() else ch for ch in identifier) + "$"}

    now = clock.now()
    rows = []
    async for c in case_store.collection(state.storage).find(query, {"response": 0}).sort("received", -1).limit(100):
        r = workbench.row(c, now)
        r["bundle_identifier"] = (c.get("key") or "").split("|", 2)[-1]
        r["owner"] = c.get("owner")
        r["response_id"] = c.get("response_id")
        r["decided"] = clock.aware(c.get("decided"))
        r["errors"] = [e[1] for e in c.get("errors") or [] if isinstance(e, (list, tuple)) and len(e) > 1]
        r["items"] = [dict(i, reason=d.get("reason")) for i, d in zip(r["items"], c.get("decisions") or [])]
        rows.append(r)
    try:
        owners = sorted(o for o in await case_store.collection(state.storage).distinct("owner") if isinstance(o, str))
    except Exception:
        owners = []
    return render("sandbox.html", who=None, now=now, rows=rows, owners=owners, npi=npi, organization=organization, identifier=identifier)


# ---------------------------------------------------------------------------------- install
def install(app: FastAPI) -> None:

    app.include_router(review_api.router)
    app.include_router(router)

    async def start(state) -> None:

        await appeals.ensure_indexes(state.storage)
        # The metrics select cases by the time of their first determination.
        await case_store.collection(state.storage).create_index([("decided", 1)])

    app.state.startup_steps.append(start)
