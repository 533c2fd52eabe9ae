"""The CDS Hooks HTTP surface for CRD: discovery, the six services, feedback, and the audit trail.

- ``GET /cds-services``: discovery (open: EHRs read it before they are registered).
- ``POST /cds-services/{id}``: a hook call (EHR JWT required outside the sandbox).
- ``POST /cds-services/{id}/feedback``: card outcomes, stored.
- ``GET /admin/crd/calls?hookInstance=...|patient=...|assertion=...``: the stored calls and answers.

Every call is stored, successful or not (collection ``crd_hook_calls``): who called (the verified
JWT issuer), when, the request and response as sent, and each decision (order, Coverage, rule,
coverage-assertion-id), so a disputed answer can be traced (CRD found-37) and PAS can find the CRD
assertion a claim refers to.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

import httpx
import orjson
from cachetools import TTLCache
from fastapi import APIRouter, FastAPI, Request
from pymongo import ASCENDING, DESCENDING
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, JSONResponse, Response

from server.auth.guard import GuardedRoute
from capability.statement import claim
from questionnaires.catalog import get_catalog
from server.auth import audit, enforcing, policy
from server.auth.jwks import shared as shared_jwks
from server.auth.principal import Principal
from server.auth.signed_jwt import shared_replay
from server.auth.scopes import Permissions
from server.events import ResourceWritten
from server.shared_cache import SharedCache
from cds_hooks import cards as cardlib
from cds_hooks.assertions import CALLS, find_assertion
from cds_hooks.config import CRDConfig
from cds_hooks.discovery import SERVICE_HOOK, discovery_document
from cds_hooks.feedback import parse_feedback
from cds_hooks.jwt_auth import AuthError, Verifier
from cds_hooks.prefetch import Fetcher, LocalFetcher, Queries
from cds_hooks.service import answer, gather, validate_request
from cds_hooks.ids import new_hex
from server.fhir.errors import FHIRError, issue
from server.fhir.repository import Repository
from server.fhir.jsonio import BodyTooLarge, MalformedJSON, parse_request_json, read_body
from server.rules import get_rules
from server.rules.engine import plan_of
from server.settings import crd_audit_compress

log = logging.getLogger("precert.crd")

router = APIRouter(route_class=GuardedRoute)

MEMBER_TTL = 60.0
MEMBER_CACHE_MAX = 10_000
FLUSH_INTERVAL = 0.2
FLUSH_BATCH = 100
MAX_PENDING = 50_000
MAX_AUDIT_BODY = 5 * 1024 * 1024


def _pack(body: bytes, compress: bool) -> bytes:
    return zlib.compress(body, 1) if compress else body
FEEDBACK = "crd_feedback"
JSON_TYPES = ("application/json", "application/fhir+json", "text/json")
# Who reads Precert's own records for a sandbox hook call that brought no data: any type, read only.
SANDBOX_READER = Principal("system", permissions=Permissions.from_scopes("system/*.rs"))


class CRDState:
    """The CRD service's singletons (``state.services['crd']``)."""

    def __init__(self, app_state, config: CRDConfig):
        self.app_state = app_state
        self.config = config
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(config.fhir_timeout, connect=min(2.0, config.fhir_timeout)),
                                      follow_redirects=False, limits=httpx.Limits(max_connections=50, max_keepalive_connections=10))
        # EHR token ids go to the application's one replay store (shared with client assertions, in
        # the database), so a replay to another worker is refused too.
        self.verifier = Verifier(config, shared_jwks(app_state, app_state.settings.mode == "production"),
                                 allow_reuse=app_state.settings.crd_allow_jwt_reuse, replay=shared_replay(app_state))
        # Whether Precert has a DTR form for a Questionnaire canonical, for 30 s.
        self._dtr: TTLCache[str, bool] = TTLCache(maxsize=1024, ttl=30)
        discovery = discovery_document()
        self.discovery_bytes = orjson.dumps(discovery)
        # Member records by identifier values, for MEMBER_TTL seconds; any Coverage write, through
        # any worker, clears them everywhere.
        self.members = SharedCache(app_state.storage.collection("cache_versions"), "crd-members", ttl=MEMBER_TTL, maxsize=MEMBER_CACHE_MAX)
        # Audit records waiting to be written (in batches, off the request path).
        self._pending: list[dict] = []
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._writer: asyncio.Task | None = None

    @property
    def storage(self):
        return self.app_state.storage

    @property
    def member_records(self) -> Repository:
        """The payer's own look-up of its member records (bound to no organization; not audited per read)."""
        return Repository.system(self.app_state, actor="crd-member-lookup")

    def preferred_sites(self) -> list[dict]:
        """In-network places the payer proposes when an order goes out of network."""
        return list(get_rules(self.app_state).payer.preferred_sites)

    def fetcher(self, req, request: Request | None = None) -> Queries | None:
        """Where missing data comes from: the client's FHIR server; in the sandbox, with no
        ``fhirServer``, Precert's own records (read only); otherwise nowhere (the call may get 412)."""
        if req.fhir_server:
            return Fetcher(self.http, req.fhir_server, req.token, self.config.fhir_timeout,
                           guarded=self.app_state.settings.mode == "production")
        if self.config.sandbox and request is not None:
            return LocalFetcher(Repository.acting(self.app_state, SANDBOX_READER, request=request))
        return None

    def dtr_available(self, questionnaire: str, cache: dict | None = None) -> bool:
        """Can Precert's DTR serve this Questionnaire? (If not, CRD asks for form completion.)"""
        if self.config.dtr != "auto":
            return self.config.dtr == "on"
        if cache is not None and questionnaire in cache:
            return cache[questionnaire]
        found = self._dtr.get(questionnaire)
        if found is None:
            found = False
            try:
                url, _, version = questionnaire.partition("|")
                try:
                    catalog = get_catalog()
                except TypeError:
                    catalog = get_catalog(self.app_state)
                found = catalog.questionnaire(url, version or None) is not None
            except Exception:
                found = False
            self._dtr[questionnaire] = found
        if cache is not None:
            cache[questionnaire] = found
        return found

    async def payer_record(self, coverage: dict, rules) -> dict | None:
        """The payer's own Coverage for the member the EHR's Coverage names (by member identifier or
        subscriberId), or None. Its status, period and plan are the truth for coverage decisions."""
        values = [i.get("value") for i in coverage.get("identifier") or [] if isinstance(i, dict) and isinstance(i.get("value"), str)]
        if isinstance(coverage.get("subscriberId"), str):
            values.append(coverage["subscriberId"])
        values = [v for v in dict.fromkeys(values) if v][:5]
        if not values:
            return None
        status, _ = rules.payer_status(coverage)
        if status == "no":
            return None

        async def load() -> dict | None:
            found, _ = await self.member_records.search("Coverage", {"k.identifier": {"$in": values}}, count=1, with_total=False)
            return found[0].resource if found else None

        try:
            return await self.members.get(tuple(values), load)
        except Exception:  # the payer's records being unreachable must not stop the answer
            log.exception("member lookup failed")
            return None

    def coverage_correction(self, coverage: dict, ours: dict | None) -> dict | None:
        """What in the EHR's Coverage differs from the payer's record of the same member, if anything."""
        if not ours:
            return None
        changes, notes = {}, []
        if ours.get("status") and ours.get("status") != coverage.get("status"):
            changes["status"] = ours["status"]
            notes.append(f"status is {ours['status']}")
        our_end = (ours.get("period") or {}).get("end")
        their_end = (coverage.get("period") or {}).get("end") if isinstance(coverage.get("period"), dict) else None
        if our_end != their_end and (our_end or their_end):
            changes["period"] = {**(coverage.get("period") or {}), **(ours.get("period") or {})}
            if not our_end:
                changes["period"].pop("end", None)
            notes.append(f"coverage ends {our_end}" if our_end else "coverage has no end date")
        if plan_of(ours) and plan_of(coverage) and plan_of(ours) != plan_of(coverage):
            changes["class"] = ours.get("class")
            notes.append(f"plan is {plan_of(ours)}")
        if not changes:
            return None
        return {"changes": changes, "summary": "; ".join(notes)}

    async def record(self, doc: dict) -> None:
        """Queue an audit record; the writer stores queued records in batches within FLUSH_INTERVAL."""
        self._pending.append(doc)
        if len(self._pending) >= FLUSH_BATCH:
            self._wake.set()
        if self._writer is None:  # no background writer (e.g. not started): write now
            await self.flush()

    async def flush(self) -> None:
        # One flush at a time, so a reader that flushes also waits for a batch already being written.
        async with self._flush_lock:
            await self._flush()

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:FLUSH_BATCH * 4], self._pending[FLUSH_BATCH * 4:]
            try:
                await self.storage.collection(CALLS).insert_many(batch, ordered=False)
            except Exception:  # kept for the next attempt; logged for operators
                log.exception("could not store %d CRD audit records; retrying", len(batch))
                self._pending = batch + self._pending
                if len(self._pending) > MAX_PENDING:
                    log.error("CRD audit queue full: %d records dropped", len(self._pending) - MAX_PENDING)
                    self._pending = self._pending[-MAX_PENDING:]
                return

    def pending(self) -> list[dict]:
        return list(self._pending)

    async def _write_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    def start_writer(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except (asyncio.CancelledError, Exception):
                pass
            self._writer = None
        await self.flush()
        await self.http.aclose()


def _crd(request: Request) -> CRDState:
    return request.app.state.precert.services["crd"]


def _public_base(request: Request) -> str:
    configured = request.app.state.precert.settings.base_url
    return (configured or str(request.base_url)).rstrip("/")


def _server_enforcing(request: Request) -> bool:
    """Authentication required server-wide (production, or PRECERT_REQUIRE_AUTH=true) covers the
    CDS Hooks services too."""
    return enforcing(request)


async def _authenticate(request: Request, crd: CRDState, path: str) -> dict:
    """{'iss', 'verified', 'error'}; raises AuthError when enforcement is on and the token fails.
    The token's ``aud`` must be the public URL of the endpoint: base URL + ``path``."""
    header = request.headers.get("authorization")
    required = crd.config.require_jwt or _server_enforcing(request)
    if not required and not header:
        return {"iss": None, "verified": False, "error": "no token (not required in the sandbox)"}
    try:
        v = await crd.verifier.verify(header, _public_base(request) + path)
        return {"iss": v.iss, "verified": True, "jti": v.jti}
    except AuthError as exc:
        if required:
            raise
        # The sandbox answers anyway, and says why the token failed (header and card), so an EHR
        # developer can fix it before production refuses it.
        return {"iss": None, "verified": False, "error": exc.message, "problem": exc.message}


def _security_audit(request: Request, caller: dict, status: int, service_id: str, patient: str | None = None) -> None:
    """Tell the security audit trail who called, when a JWT named the EHR. (The security middleware
    already records every access to these routes, as an unidentified CDS Hooks client.)"""
    if not caller.get("iss") and status < 400:
        return
    try:
        agent = {"kind": "ehr", "id": caller.get("iss") or "unverified"}
        audit(request, kind="rest", agent=agent, status=status, method="POST", path=request.url.path,
              operation="cds-hooks", resource_type="Patient" if patient else None, resource_id=patient,
              description=f"CRD {service_id}" + ("" if caller.get("verified") else f" (token not verified: {caller.get('error')})"))
    except Exception:  # the security audit is another capability's; CRD answers regardless
        log.debug("security audit not recorded", exc_info=True)


def _auth_response(exc: AuthError) -> Response:
    """An EHR JWT refused: RFC 6750's bearer-token error beside ``WWW-Authenticate`` (docs/crd.md)."""
    return JSONResponse({"error": "invalid_token" if exc.status == 401 else "forbidden", "message": exc.message},
                        status_code=exc.status, headers=exc.headers)


async def _read_json(request: Request, limit: int):
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in JSON_TYPES:
        raise FHIRError.single(415, "not-supported", f"Content-Type '{ctype[:60]}' is not supported; send application/json")
    try:
        body = await read_body(request, limit)
    except BodyTooLarge as exc:
        raise FHIRError.single(413, "too-costly", str(exc)) from None
    try:
        return parse_request_json(request, body), body
    except MalformedJSON as exc:
        raise FHIRError.single(400, "structure", str(exc)) from None


@router.get("/cds-services")
@policy.requires(policy.PUBLIC_REQ)  # discovery is open
async def discovery(request: Request) -> Response:
    return Response(_crd(request).discovery_bytes, media_type="application/json")


@router.post("/cds-services/{service_id}")
@policy.requires(policy.DELEGATED_REQ)  # the EHR's JWT is checked by the service
async def call_service(service_id: str, request: Request) -> Response:
    crd = _crd(request)
    hook = SERVICE_HOOK.get(service_id)
    if hook is None:
        raise FHIRError.single(404, "not-found", f"no CDS service '{service_id[:80]}'; see GET /cds-services")
    started = time.perf_counter()
    try:
        caller = await _authenticate(request, crd, f"/cds-services/{service_id}")
    except AuthError as exc:
        await crd.record(_audit(service_id, hook, None, None, exc.status, started, {"verified": False, "error": exc.message}))
        _security_audit(request, {"verified": False, "error": exc.message}, exc.status, service_id)
        return _auth_response(exc)
    raw = b""
    body = None
    try:
        body, raw = await _read_json(request, crd.config.max_body_bytes)
        req = validate_request(body, hook, service_id, crd.config)
        rules = get_rules(request.app.state.precert)
        gathered = None
        try:
            gathered = await gather(req, lambda r: crd.fetcher(r, request))
            result, decisions = await answer(req, gathered, rules, crd)
        except FHIRError:
            raise
        except Exception:
            # Content Precert failed to read: answered as a technical problem (CRD resp-43), never a 500.
            log.exception("CRD %s failed for hookInstance %s", service_id, req.hook_instance)
            result, decisions = _technical(req, rules), []
    except FHIRError as exc:
        await crd.record(_audit(service_id, hook, body, raw, exc.status, started, caller, response=exc.outcome()))
        _security_audit(request, caller, exc.status, service_id)
        if caller.get("problem"):
            exc.headers = {**exc.headers, **_problem_header(caller["problem"])}
        raise
    if caller.get("problem"):
        result = {**result, "cards": [_jwt_problem_card(req, caller["problem"]), *result.get("cards", [])]}
    payload = orjson.dumps(result)
    doc = _audit(service_id, hook, body, raw, 200, started, caller, response_bytes=payload)
    doc.update({
        "version": req.version.label,
        "fetched": gathered.fetched if gathered else None,
        "fetch_errors": (gathered.fetch_errors or None) if gathered else None,
        "ignored_options": req.ignored_options or None,
        "decisions": [{"order": d.target, "coverage": d.coverage, "assertion_id": d.assertion_id, "rule": d.determination.rule_id,
                       "covered": d.determination.covered, "pa_needed": d.determination.pa_needed,
                       "doc_needed": d.determination.doc_needed, "questionnaires": d.determination.questionnaires,
                       "payer_match": d.determination.payer_match, "trace": d.determination.trace} for d in decisions],
        "assertion_ids": sorted({d.assertion_id for d in decisions}),
    })
    await crd.record(doc)
    _security_audit(request, caller, 200, service_id, req.patient_id)
    return Response(payload, media_type="application/json", headers=_problem_header(caller.get("problem")))


JWT_PROBLEM_HEADER = "X-Precert-JWT-Problem"


def _problem_header(problem: str | None) -> dict:
    """Why the EHR's JWT failed, as a header value (printable ASCII, one line)."""
    if not problem:
        return {}
    return {JWT_PROBLEM_HEADER: "".join(c if " " <= c <= "~" else "?" for c in problem)[:300]}


def _jwt_problem_card(req, problem: str) -> dict:
    """An informational card telling the EHR developer what production would refuse, and why."""
    return cardlib.instructions(
        req, "guideline", "Sandbox: the EHR's JWT was not accepted and would be refused in production",
        f"The Authorization token failed a check: {problem}. The sandbox answered anyway; in production this "
        "call gets 401 or 403. See the EHR authentication section of docs/crd.md (the demo EHR key is "
        "cds_hooks/demo_ehr_private_key.pem).", "Precert sandbox", [])[1]


def _technical(req, rules) -> dict:
    card = cardlib.instructions(req, "guideline", f"{rules.payer.name} could not determine coverage requirements right now",
                                "A technical problem stopped Precert from evaluating this request. Try again, or contact the payer.",
                                rules.payer.name, [])[1]
    return {"cards": [card]}


def _audit(service_id, hook, body, raw, status, started, caller, response=None, response_bytes=None) -> dict:
    ctx = body.get("context") if isinstance(body, dict) and isinstance(body.get("context"), dict) else {}
    compress = crd_audit_compress()  # read per record, as every setting is: never at import
    return {
        "_id": new_hex(),
        "hook_instance": body.get("hookInstance") if isinstance(body, dict) and isinstance(body.get("hookInstance"), str) else None,
        "service": service_id,
        "hook": hook,
        "at": datetime.now(timezone.utc),
        "ms": round((time.perf_counter() - started) * 1000, 2),
        "status": status,
        "client": caller,
        "fhir_server": body.get("fhirServer") if isinstance(body, dict) and isinstance(body.get("fhirServer"), str) else None,
        "patient": ctx.get("patientId") if isinstance(ctx.get("patientId"), str) else None,
        "user": ctx.get("userId") if isinstance(ctx.get("userId"), str) else None,
        # Bodies are kept exactly as exchanged, zlib-compressed (they are most of the record's size).
        "request": _pack(bytes(raw[:MAX_AUDIT_BODY]), compress) if raw else None,
        "response": _pack(response_bytes if response_bytes is not None else orjson.dumps(response), compress)
        if (response_bytes is not None or response is not None) else None,
        "z": compress,
    }


# ----------------------------------------------------------------------------- feedback
@router.post("/cds-services/{service_id}/feedback")
@policy.requires(policy.DELEGATED_REQ)
async def feedback(service_id: str, request: Request) -> Response:
    crd = _crd(request)
    if service_id not in SERVICE_HOOK:
        raise FHIRError.single(404, "not-found", f"no CDS service '{service_id[:80]}'")
    try:
        caller = await _authenticate(request, crd, f"/cds-services/{service_id}/feedback")
    except AuthError as exc:
        return _auth_response(exc)
    body, _ = await _read_json(request, 1024 * 1024)
    items = [{
        "_id": new_hex(), "service": service_id, "card": f.card[:200], "outcome": f.outcome,
        "accepted_suggestions": [a.id[:200] for a in f.acceptedSuggestions or []],
        "override_reason": orjson.dumps(f.overrideReason).decode() if f.overrideReason else None,
        "outcome_timestamp": f.outcomeTimestamp[:40], "received_at": datetime.now(timezone.utc), "client": caller,
    } for f in parse_feedback(body).feedback]
    await crd.storage.collection(FEEDBACK).insert_many(items)
    return JSONResponse({}, headers=_problem_header(caller.get("problem")))


# ----------------------------------------------------------------------------- audit lookup
@router.get("/admin/crd/calls")
@policy.requires(policy.staff("administrator"))
async def calls(request: Request) -> Response:
    q = request.query_params
    query: dict = {}
    if q.get("hookInstance"):
        query["hook_instance"] = q["hookInstance"][:200]
    if q.get("patient"):
        query["patient"] = q["patient"][:200]
    if q.get("assertion"):
        query["assertion_ids"] = q["assertion"][:200]
    try:
        limit = max(1, min(int(q.get("_count", "20")), 100))
    except ValueError:
        raise FHIRError.single(400, "invalid", "_count must be a number") from None
    crd = _crd(request)
    await crd.flush()  # what was answered a moment ago is searchable now
    cursor = crd.storage.collection(CALLS).find(query).sort([("at", DESCENDING)]).limit(limit)
    out = []
    async for doc in cursor:
        doc["id"] = doc.pop("_id")
        doc["at"] = doc["at"].isoformat() if isinstance(doc.get("at"), datetime) else doc.get("at")
        for key in ("request", "response"):
            if doc.get(key) is not None:
                try:
                    raw = zlib.decompress(doc[key]) if doc.get("z") else doc[key]
                    doc[key] = orjson.loads(raw)
                except (orjson.JSONDecodeError, zlib.error):
                    doc[key] = bytes(doc[key]).decode("utf-8", "replace")
        out.append(doc)
    if _wants_html(request):
        page = PAGES.get_template("crd_calls.html").render(calls=out, query=q, pretty=_pretty, jwt_header=JWT_PROBLEM_HEADER)
        return HTMLResponse(page)
    return Response(orjson.dumps({"calls": out}), media_type="application/json")


# The page template ships inside the package (package-data), beside this module.
PAGES = Environment(loader=FileSystemLoader(Path(__file__).resolve().parent), autoescape=select_autoescape())


def _wants_html(request: Request) -> bool:
    """A browser (``text/html`` before any JSON type in Accept) gets the page; everyone else JSON."""
    accept = request.headers.get("accept", "").lower()
    html_at = accept.find("text/html")
    if html_at < 0:
        return False
    json_at = min((i for i in (accept.find("application/json"), accept.find("application/fhir+json")) if i >= 0), default=-1)
    return json_at < 0 or html_at < json_at


def _pretty(value) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() if not isinstance(value, str) else value


def install(app: FastAPI) -> None:
    # Precert is a CRD server (the IG's server CapabilityStatement describes what it asks of EHRs' FHIR servers).
    claim("http://hl7.org/fhir/us/davinci-crd/CapabilityStatement/crd-server")
    async def start(state) -> None:
        config = CRDConfig.from_env(state.settings.mode)
        state.services["crd"] = CRDState(state, config)
        calls_coll = state.storage.collection(CALLS)
        await calls_coll.create_index([("hook_instance", ASCENDING)])
        await calls_coll.create_index([("assertion_ids", ASCENDING)])
        await calls_coll.create_index([("patient", ASCENDING), ("at", DESCENDING)])
        await state.storage.collection(FEEDBACK).create_index([("card", ASCENDING)])
        state.services["crd"].start_writer()

        async def coverage_written(event: ResourceWritten) -> None:
            if event.stored.type == "Coverage":
                await state.services["crd"].members.invalidate()

        state.events.on(ResourceWritten, coverage_written)
        if state.settings.crd_allow_jwt_reuse:
            log.warning("CRD: an EHR JWT may be reused within its lifetime (PRECERT_CRD_ALLOW_JWT_REUSE=true); for test laboratories only")
        if state.settings.mode == "production" and not config.require_jwt:
            log.warning("CRD: EHR JWTs are not required (PRECERT_CRD_REQUIRE_JWT=off) in production mode")

    async def stop(state) -> None:
        crd = state.services.pop("crd", None)
        if crd is not None:
            await crd.close()

    app.state.startup_steps.append(start)
    app.state.shutdown_steps.append(stop)
    app.include_router(router)


__all__ = ["install", "find_assertion", "issue"]
