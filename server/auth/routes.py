"""Installs security: the token endpoint, SMART discovery, staff sign-in, the admin API, the audit
trail as AuditEvent, organization isolation hooks, and the middleware that guards every route."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlencode

import jwt
import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError
from pymongo.errors import DuplicateKeyError
from starlette.responses import JSONResponse, Response

from server.auth.guard import GuardedRoute
from capability.statement import set_security
from server.auth import logfilter, policy
from server.auth.audit import AuditLog, to_audit_event
from server.auth.clients import ClientRegistry, RegistrationError, build_client, sandbox_clients
from server.auth.config import AuthConfig
from server.auth.isolation import install_hooks
from server.auth.jwks import shared as shared_jwks
from server.auth.middleware import AccessAuditMiddleware, AuthenticationMiddleware, SecurityHeadersMiddleware, cors_middleware
from server.auth.scopes import register_types
from server.auth.signed_jwt import shared_replay
from server.auth.staff import COOKIE, StaffDirectory, StaffPrincipal, require_staff, staff_token
from server.auth.throttle import SignInThrottle, SignInThrottled
from server.auth.tokens import ASSERTION_TYPE, TokenError, TokenService, generate_signing_key
from server.errors import PrecertError, validation_detail
from server.fhir.errors import FHIRError, bad_request, not_found
from server.fhir.resources import PROVIDERS
from server.fhir.responses import base_url, fhir_response
from server.storage import fhir_instant, utcnow

log = logging.getLogger("precert.auth")

TOKEN_PATH = "/auth/token"
MAX_FORM_BYTES = 64 * 1024
SCOPES_SUPPORTED = [
    "system/*.rs", "system/*.read", "system/Claim.c", "system/Claim.cr", "system/Claim.write", "system/ClaimResponse.rs",
    "system/ClaimResponse.read", "system/Subscription.cruds", "system/Subscription.*", "system/QuestionnaireResponse.cruds",
    "system/Task.rs", "system/Questionnaire.rs", "system/ValueSet.rs", "system/Library.rs", "system/CodeSystem.rs",
    "system/Patient.rs", "system/Coverage.rs",
]
SANDBOX_STAFF = (
    ("reviewer", "reviewer-sandbox", ["reviewer"], "Sandbox Reviewer"),
    ("director", "director-sandbox", ["medical-director", "reviewer"], "Sandbox Medical Director"),
    ("admin", "admin-sandbox", ["administrator"], "Sandbox Administrator"),
)


@dataclass
class AuthService:
    config: AuthConfig
    enforcing: bool
    production: bool
    clients: ClientRegistry
    tokens: TokenService
    staff: StaffDirectory
    audit: AuditLog


def auth_service(request: Request) -> AuthService:
    return request.app.state.precert.services["auth"]


def enforcing(request: Request) -> bool:
    """Whether this server requires authentication (production, or PRECERT_REQUIRE_AUTH=true)."""
    return auth_service(request).enforcing


def origin(request: Request) -> str:
    configured = request.app.state.precert.settings.base_url
    return (configured or str(request.base_url)).rstrip("/")


# ---------------------------------------------------------------------- discovery
discovery = APIRouter(route_class=GuardedRoute)


def smart_configuration(base: str) -> dict:
    return {
        "token_endpoint": base + TOKEN_PATH,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["token"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
        "code_challenge_methods_supported": ["S256"],
    }


@discovery.get("/.well-known/smart-configuration")
@discovery.get("/fhir/.well-known/smart-configuration")
@policy.requires(policy.PUBLIC_REQ)
async def well_known(request: Request) -> JSONResponse:
    return JSONResponse(smart_configuration(origin(request)), headers={"Cache-Control": "public, max-age=3600"})


def security_extension(fhir_base: str) -> dict:
    """CapabilityStatement.rest.security: SMART on FHIR with the token endpoint (oauth-uris)."""
    root = fhir_base[: -len("/fhir")] if fhir_base.endswith("/fhir") else fhir_base
    return {
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": "token", "valueUri": root + TOKEN_PATH}],
        }],
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR"}], "text": "SMART Backend Services (client credentials, private_key_jwt)"}],
        "description": "SMART Backend Services: POST a private_key_jwt client assertion (RS384 or ES384) to the "
                       "token endpoint; send the access token as Authorization: Bearer. See /.well-known/smart-configuration.",
    }


# ---------------------------------------------------------------------- token endpoint
def _oauth_error(err: TokenError) -> JSONResponse:
    return JSONResponse({"error": err.error, "error_description": err.description}, status_code=err.status,
                        headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


async def _read_limited(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            return None
    return bytes(body)


@discovery.post(TOKEN_PATH)
@policy.requires(policy.PUBLIC_REQ)
async def token(request: Request) -> Response:
    svc = auth_service(request)
    ip = request.client.host if request.client else None
    claimed = "unknown"
    try:
        if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
            raise TokenError("invalid_request", "the token request must be application/x-www-form-urlencoded")
        body = await _read_limited(request, MAX_FORM_BYTES)
        if body is None:
            raise TokenError("invalid_request", "the token request is too large", 413)
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise TokenError("invalid_request", "the token request is not UTF-8") from None
        form: dict[str, str] = {}
        for key, value in pairs:
            if key in form:
                raise TokenError("invalid_request", f"parameter {key[:40]} is repeated")
            form[key] = value
        if form.get("grant_type") != "client_credentials":
            raise TokenError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise TokenError("invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}", 401)
        assertion = form.get("client_assertion")
        if not assertion:
            raise TokenError("invalid_client", "client_assertion is required", 401)
        try:  # who the assertion claims to be, for the audit trail only
            claimed = str(jwt.decode(assertion, options={"verify_signature": False}).get("iss", "unknown"))[:200]
        except Exception:
            claimed = "unknown"
        client = await svc.tokens.authenticate_client(assertion, origin(request) + TOKEN_PATH)
        if not form.get("scope", "").strip():
            raise TokenError("invalid_scope", "scope is required (space-separated system/ scopes)")
        answer = svc.tokens.issue(client, form["scope"])
    except TokenError as err:
        svc.audit.record(kind="token", agent={"kind": "client", "id": claimed, "display": f"{claimed} (claimed)", "ip": ip},
                         status=err.status, method="POST", path=TOKEN_PATH, description=f"{err.error}: {err.description}")
        return _oauth_error(err)
    svc.audit.record(kind="token", agent={"kind": "client", "id": client.client_id, "display": client.name,
                                          "organization": client.owner, "ip": ip},
                     status=200, method="POST", path=TOKEN_PATH, description=f"granted {answer['scope']}"[:500])
    return JSONResponse(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


# ---------------------------------------------------------------------- staff sign-in
staff_router = APIRouter(route_class=GuardedRoute, prefix="/staff", tags=["payer staff"])


class SignIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    username: StrictStr
    password: StrictStr


@staff_router.post("/login")
@policy.requires(policy.PUBLIC_REQ)
async def login(request: Request) -> Response:
    """Sign in with ``{"username", "password"}`` (JSON or a form). Sets the session cookie and also
    returns the session token for API use (``Authorization: Bearer <token>``)."""
    svc = auth_service(request)
    body = await _read_limited(request, 16 * 1024)
    if body is None:
        raise PrecertError(413, "the sign-in request is too large", "too-costly")
    ctype = request.headers.get("content-type", "")
    try:
        data = dict(parse_qsl(body.decode("utf-8"))) if "application/x-www-form-urlencoded" in ctype else (orjson.loads(body) if body else {})
        sign_in = SignIn.model_validate(data)
    except (ValueError, UnicodeDecodeError):  # not JSON, not UTF-8, or not {username, password} (pydantic's is a ValueError)
        raise PrecertError(400, 'send {"username": ..., "password": ...}') from None
    username = sign_in.username[:100]
    ip = request.client.host if request.client else None
    try:
        result = await svc.staff.login(username, sign_in.password[:1024], ip)
    except SignInThrottled as exc:
        raise PrecertError(429, f"too many failed sign-ins from this address; try again in {exc.retry_after} s", "throttled",
                           headers={"Retry-After": str(exc.retry_after)}) from None
    if result is None:
        svc.audit.record(kind="login", agent={"kind": "staff", "id": username, "display": f"{username} (claimed)", "ip": ip},
                         status=401, method="POST", path="/staff/login", description="sign-in failed")
        raise PrecertError(401, "unknown user, wrong password, or account disabled", "login")
    token, who = result
    svc.audit.record(kind="login", agent={"kind": "staff", "id": who.username, "display": who.display or who.username,
                                          "roles": who.roles, "ip": ip},
                     status=200, method="POST", path="/staff/login", description="signed in")
    resp = JSONResponse({"username": who.username, "display": who.display, "roles": who.roles, "token": token,
                         "expires_in": svc.config.staff_session_seconds}, headers={"Cache-Control": "no-store"})
    secure = origin(request).startswith("https:")
    resp.set_cookie(COOKIE, token, max_age=svc.config.staff_session_seconds, httponly=True, secure=secure,
                    samesite="strict", path="/")
    return resp


@staff_router.post("/logout")
@policy.requires(policy.staff(always=True, phi=False))
async def logout(request: Request, who: StaffPrincipal = Depends(require_staff())) -> Response:
    token = staff_token(request)
    if token:
        await auth_service(request).staff.logout(token)
    resp = Response(status_code=204)
    resp.delete_cookie(COOKIE, path="/")
    return resp


@staff_router.get("/me")
@policy.requires(policy.staff(always=True, phi=False))
async def me(who: StaffPrincipal = Depends(require_staff())) -> JSONResponse:
    return JSONResponse({"username": who.username, "display": who.display, "roles": who.roles})


# ---------------------------------------------------------------------- admin API
admin = APIRouter(route_class=GuardedRoute, prefix="/admin/auth", tags=["security administration"])
ADMIN = Depends(require_staff("administrator"))
# Security configuration stays strict even in an open sandbox.
ADMIN_CONFIG = policy.staff("administrator", always=True, phi=False)


async def _json(request: Request, limit: int = 256 * 1024):
    body = await _read_limited(request, limit)
    if body is None:
        raise PrecertError(413, "the request body is too large", "too-costly")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PrecertError(400, "the body is not JSON") from None


async def _body(request: Request, model: type[BaseModel], hint: str, limit: int = 16 * 1024) -> BaseModel:
    """A JSON object body parsed by ``model``; a 400 problem naming ``hint`` otherwise."""
    data = await _json(request, limit)
    if not isinstance(data, dict):
        raise PrecertError(400, f"send a JSON object: {hint}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PrecertError(400, f"{validation_detail(exc.errors())} (send {hint})") from None


class ClientActive(BaseModel):
    model_config = ConfigDict(extra="forbid")
    active: StrictBool


class StaffNew(BaseModel):
    model_config = ConfigDict(extra="ignore")
    username: str = ""
    password: str | None = None
    roles: list[str]
    display: str = ""
    licence: str = ""
    npi: str = ""  # the staff member's own NPI, named as the reviewer on PAS 2.2.1 decisions


class StaffChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    roles: list[str] | None = None
    active: StrictBool | None = None
    password: str | None = None
    licence: str | None = None
    npi: str | None = None  # "" clears it


def _registration(data, production: bool):
    try:
        return build_client(data, production)
    except RegistrationError as exc:
        raise PrecertError(400, str(exc)) from None


NO_CLIENT = "no such client"


@admin.get("/clients")
@policy.requires(ADMIN_CONFIG)
async def list_clients(request: Request, who=ADMIN) -> JSONResponse:
    return JSONResponse({"clients": [c.public() for c in await auth_service(request).clients.all()]})


@admin.post("/clients")
@policy.requires(ADMIN_CONFIG)
async def register_client(request: Request, who=ADMIN) -> JSONResponse:
    svc = auth_service(request)
    client = _registration(await _json(request), svc.production)
    try:
        await svc.clients.add(client)
    except RegistrationError as exc:
        raise PrecertError(400, str(exc)) from None
    log.info("client %s registered by %s", client.client_id, who.username)
    return JSONResponse(client.public(), 201)


@admin.get("/clients/{client_id:path}")
@policy.requires(ADMIN_CONFIG)
async def show_client(request: Request, client_id: str, who=ADMIN) -> JSONResponse:
    client = await auth_service(request).clients.get(client_id)
    if client is None:
        raise PrecertError(404, NO_CLIENT)
    return JSONResponse(client.public())


@admin.put("/clients/{client_id:path}")
@policy.requires(ADMIN_CONFIG)
async def replace_client(request: Request, client_id: str, who=ADMIN) -> JSONResponse:
    svc = auth_service(request)
    data = await _json(request)
    if isinstance(data, dict):
        data["client_id"] = client_id
    client = _registration(data, svc.production)
    await svc.clients.replace(client)
    return JSONResponse(client.public())


@admin.patch("/clients/{client_id:path}")
@policy.requires(ADMIN_CONFIG)
async def change_client(request: Request, client_id: str, who=ADMIN) -> JSONResponse:
    """``{"active": false}`` disables a client (its tokens stop working within 30 s)."""
    svc = auth_service(request)
    change = await _body(request, ClientActive, '{"active": true|false}', 256 * 1024)
    if not await svc.clients.set_active(client_id, change.active):
        raise PrecertError(404, NO_CLIENT)
    return JSONResponse((await svc.clients.get(client_id)).public())


@admin.delete("/clients/{client_id:path}")
@policy.requires(ADMIN_CONFIG)
async def remove_client(request: Request, client_id: str, who=ADMIN) -> Response:
    if not await auth_service(request).clients.remove(client_id):
        raise PrecertError(404, NO_CLIENT)
    return Response(status_code=204)


@admin.get("/staff")
@policy.requires(ADMIN_CONFIG)
async def list_staff(request: Request, who=ADMIN) -> JSONResponse:
    return JSONResponse({"staff": await auth_service(request).staff.list()})


@admin.post("/staff")
@policy.requires(ADMIN_CONFIG)
async def add_staff(request: Request, who=ADMIN) -> JSONResponse:
    """``{"username", "password", "roles": [...], "display", "licence", "npi"}``."""
    svc = auth_service(request)
    new = await _body(request, StaffNew, "{username, password, roles: [...], display, licence, npi}")
    try:
        user = await svc.staff.add(new.username, new.password, new.roles, new.display, licence=new.licence, npi=new.npi)
    except (ValueError, TypeError) as exc:
        raise PrecertError(400, str(exc)) from None
    return JSONResponse(user, 201)


@admin.patch("/staff/{username}")
@policy.requires(ADMIN_CONFIG)
async def change_staff(request: Request, username: str, who=ADMIN) -> JSONResponse:
    """Any of ``{"roles": [...], "active": bool, "password": str, "licence": str, "npi": str}``;
    disabling or a new password ends the user's sessions."""
    svc = auth_service(request)
    change = await _body(request, StaffChange, "any of roles, active, password, licence, npi")
    if not change.model_fields_set:
        raise PrecertError(400, "send any of roles, active, password, licence, npi")
    try:
        user = await svc.staff.update(username, change.roles, change.active, change.password, change.licence, change.npi)
    except (ValueError, TypeError) as exc:
        raise PrecertError(400, str(exc)) from None
    if user is None:
        raise PrecertError(404, "no such user")
    return JSONResponse(user)


@admin.delete("/staff/{username}")
@policy.requires(ADMIN_CONFIG)
async def remove_staff(request: Request, username: str, who=ADMIN) -> Response:
    if username == who.username:
        raise PrecertError(400, "administrators cannot remove themselves")
    if not await auth_service(request).staff.remove(username):
        raise PrecertError(404, "no such user")
    return Response(status_code=204)


# ---------------------------------------------------------------------- audit as AuditEvent
audit_router = APIRouter(route_class=GuardedRoute)
AUDIT_PARAMS = {"agent", "entity", "outcome", "date", "type", "_count", "_getpagesoffset", "_format"}


def _parse_date(value: str) -> tuple[str, datetime]:
    prefix = value[:2] if value[:2] in ("ge", "gt", "le", "lt", "eq") else "eq"
    text = value[2:] if value[:2] == prefix else value
    try:
        if len(text) == 10:
            moment = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
    except ValueError:
        raise bad_request(f"date '{value[:40]}' is not a FHIR date or dateTime", "date") from None
    return prefix, moment


async def _audit_search(request: Request, items: list[tuple[str, str]], base: str, self_url: str) -> dict:
    svc = auth_service(request)
    unknown = sorted({k for k, _ in items} - AUDIT_PARAMS)
    if unknown:
        raise bad_request(f"AuditEvent search supports {', '.join(sorted(AUDIT_PARAMS - {'_format'}))}; not {', '.join(unknown)[:100]}")
    args: dict = {}
    since = until = None
    for key, value in items:
        if key == "agent":
            args["agent"] = value.split("|")[-1]
        elif key == "entity":
            args["entity"] = value.split("/_history/")[0].removeprefix(base + "/")
        elif key == "outcome":
            if value not in ("0", "4", "8", "12"):
                raise bad_request("outcome is one of 0, 4, 8, 12", "outcome")
            args["outcome"] = value
        elif key == "type":
            code = value.split("|")[-1]
            args["kind"] = "rest" if code == "rest" else ("login", "token") if code == "110114" else code
        elif key == "date":
            prefix, moment = _parse_date(value)
            day = len(value.removeprefix(prefix)) == 10
            end = moment + (timedelta(days=1) if day else timedelta(seconds=1))
            if prefix in ("ge", "gt"):
                since = moment if prefix == "ge" else end
            elif prefix in ("le", "lt"):
                until = end if prefix == "le" else moment
            else:
                since, until = moment, end
    try:
        count = min(200, max(0, int(dict(items).get("_count", "50"))))
        offset = max(0, int(dict(items).get("_getpagesoffset", "0")))
    except ValueError:
        raise bad_request("_count and _getpagesoffset are whole numbers") from None
    docs, total = await svc.audit.search(**args, since=since, until=until, offset=offset, count=count)
    bundle = {"resourceType": "Bundle", "type": "searchset", "meta": {"lastUpdated": fhir_instant(utcnow())},
              "total": total, "link": [{"relation": "self", "url": self_url}]}
    if offset + len(docs) < total and count:

        rest = [(k, v) for k, v in items if k not in ("_getpagesoffset", "_count")]
        bundle["link"].append({"relation": "next", "url": f"{base}/AuditEvent?" + urlencode(rest + [("_count", str(count)), ("_getpagesoffset", str(offset + count))])})
    if docs:
        bundle["entry"] = [{"fullUrl": f"{base}/AuditEvent/{d['id']}", "resource": to_audit_event(d), "search": {"mode": "match"}} for d in docs]
    return bundle


@audit_router.get("/fhir/AuditEvent")
@policy.requires(policy.AUDIT_REQ)
async def audit_search(request: Request) -> Response:
    items = list(request.query_params.multi_items())
    base = base_url(request)
    return fhir_response(await _audit_search(request, items, base, str(request.url)))


@audit_router.post("/fhir/AuditEvent/_search")
@policy.requires(policy.AUDIT_REQ)
async def audit_search_post(request: Request) -> Response:
    body = await _read_limited(request, 64 * 1024) or b""
    items = list(request.query_params.multi_items()) + parse_qsl(body.decode("utf-8", "replace"))
    base = base_url(request)
    return fhir_response(await _audit_search(request, items, base, f"{base}/AuditEvent"))


@audit_router.get("/fhir/AuditEvent/{entry_id}")
@policy.requires(policy.AUDIT_REQ)
async def audit_read(request: Request, entry_id: str) -> Response:
    doc = await auth_service(request).audit.read(entry_id)
    if doc is None:
        raise not_found(f"AuditEvent/{entry_id[:64]} is not known")
    return fhir_response(to_audit_event(doc))


def _audit_is_read_only():
    raise FHIRError.single(405, "not-supported", "AuditEvents are written by Precert itself and cannot be changed")


@audit_router.post("/fhir/AuditEvent")
@policy.requires(policy.AUDIT_REQ)
async def audit_create(request: Request) -> Response:
    _audit_is_read_only()


@audit_router.api_route("/fhir/AuditEvent/{entry_id}", methods=["PUT", "DELETE", "PATCH"])
@policy.requires(policy.AUDIT_REQ)
async def audit_change(request: Request, entry_id: str) -> Response:
    _audit_is_read_only()


@audit_router.get("/admin/audit")
@policy.requires(policy.AUDIT_REQ)
async def admin_audit(request: Request, who=Depends(require_staff("administrator"))) -> Response:
    items = [(k, v) for k, v in request.query_params.multi_items()]
    root = origin(request) + "/fhir"
    return fhir_response(await _audit_search(request, items, root, str(request.url)))


# ---------------------------------------------------------------------- install
def _production_problems(config: AuthConfig, settings) -> list[str]:
    problems = []
    if not config.signing_key_pem:
        problems.append("no access-token signing key: set PRECERT_AUTH_SIGNING_KEY_FILE to an EC P-256 private key (PEM)")
    if not settings.base_url:
        problems.append("no public base URL: set PRECERT_BASE_URL (client assertions are checked against its token endpoint)")
    elif not (settings.base_url.startswith("https://") or settings.base_url.startswith(("http://127.0.0.1", "http://localhost"))):
        problems.append("PRECERT_BASE_URL must be https in production")
    return problems


async def _sandbox_signing_key(settings_collection) -> bytes:
    """A sandbox without a configured key keeps one generated key in its database, so that several
    workers (and restarts) honour each other's tokens. Production never gets here."""


    doc = await settings_collection.find_one({"_id": "sandbox-signing-key"})
    if doc is None:
        try:
            await settings_collection.insert_one({"_id": "sandbox-signing-key", "pem": generate_signing_key().decode()})
        except DuplicateKeyError:
            pass  # another worker made it first
        doc = await settings_collection.find_one({"_id": "sandbox-signing-key"})
    return doc["pem"].encode()


def install(app: FastAPI) -> None:

    logfilter.install()
    register_types(PROVIDERS)
    app.include_router(discovery)
    app.include_router(staff_router)
    app.include_router(admin)
    app.include_router(audit_router)
    # Innermost first: the access audit, authentication around it, then CORS, then the security
    # headers. Authorization is each route's own (server.auth.guard).
    settings = app.state.settings
    app.add_middleware(AccessAuditMiddleware, fastapi_app=app)  # inner: audits what the route's guard decided
    app.add_middleware(AuthenticationMiddleware, fastapi_app=app)  # outer: sets the principal, never refuses
    if settings.cors_origins:
        app.add_middleware(cors_middleware, origins=settings.cors_origins)
    app.add_middleware(SecurityHeadersMiddleware, https=bool(settings.base_url and settings.base_url.startswith("https:")))
    try:

        set_security(security_extension)
    except Exception:  # pragma: no cover - an older statement module that takes only a dict
        pass

    async def start(state) -> None:
        config = getattr(app.state, "auth_config", None) or AuthConfig.from_env()
        settings = state.settings
        production = settings.mode == "production"
        if production:
            problems = _production_problems(config, settings)
            if problems:
                raise RuntimeError("Precert refuses to start in production mode: " + "; ".join(problems))
        storage = state.storage
        replay = shared_replay(state)
        await replay.ensure_index()
        sessions = storage.collection("auth_staff_sessions")
        try:
            await sessions.create_index("expires", expireAfterSeconds=0)
        except Exception:  # the embedded database may not expire documents; they are swept instead
            pass
        await sessions.create_index("username")
        throttle = SignInThrottle(storage.collection("auth_login_throttle"))
        await throttle.start()
        clients = ClientRegistry(storage.collection("auth_clients"))
        if not config.signing_key_pem:
            config = replace(config, signing_key_pem=await _sandbox_signing_key(storage.collection("auth_settings")))
        svc = AuthService(
            config=config,
            enforcing=config.enforcing(settings),
            production=production,
            clients=clients,
            tokens=TokenService(config, clients, replay, production, jwks=shared_jwks(state, production)),
            staff=StaffDirectory(storage.collection("auth_staff"), sessions, config, production, throttle),
            audit=AuditLog(storage.collection("audit_events")),
        )
        state.services["auth"] = svc
        install_hooks(state)
        await svc.audit.start()
        if settings.mode == "sandbox":
            for client in sandbox_clients():
                if await clients.get(client.client_id) is None:
                    try:
                        await clients.add(client)
                    except RegistrationError:
                        pass
            for username, password, roles, display in SANDBOX_STAFF:
                if await svc.staff.users.find_one({"_id": username}) is None:
                    try:
                        await svc.staff.add(username, password, roles, display, sandbox=True)
                    except ValueError:
                        pass
        if config.admin_username and config.admin_password:
            if await svc.staff.users.find_one({"_id": config.admin_username}) is None:
                await svc.staff.add(config.admin_username, config.admin_password, ["administrator"], "Administrator")
        missing = policy.undeclared_routes(app)
        if missing:
            log.warning("routes without a declared access requirement (refused when enforcing): %s",
                        ", ".join(f"{m} {p}" for m, p in missing))
        unguarded = policy.unguarded_routes(app)
        if unguarded:
            raise RuntimeError("routes that do not enforce their access requirement: "
                               + ", ".join(f"{m} {p}" for m, p in unguarded))
        log.info("security: authentication %s", "enforced" if svc.enforcing else "optional (open sandbox)")

    async def stop(state) -> None:
        svc = state.services.get("auth")
        if svc is not None:
            await svc.audit.stop()
            await svc.tokens.close()

    app.state.startup_steps.append(start)
    app.state.shutdown_steps.append(stop)
