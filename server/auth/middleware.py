"""Security middleware (pure ASGI), each with one job:

* :class:`SecurityHeadersMiddleware` adds the security headers to every response;
* CORS, when configured, is Starlette's ``CORSMiddleware`` between the two (preflights never reach
  authentication, and refusals carry the CORS headers a browser needs to read them);
* :class:`AuthenticationMiddleware` authenticates the caller (SMART access token, payer-staff
  session, or nobody) and puts the :class:`~server.auth.principal.Principal` on
  ``request.state.principal``, or records why the presented credential failed; it never refuses;
* :class:`AuthorizationMiddleware`, inside it, enforces the route's declared requirement
  (:mod:`server.auth.policy`, declared beside each route and found by matching the route's template)
  before any body is read, refuses in the route's surface's error shape, and audits the access.
"""

from __future__ import annotations

import logging
from urllib.parse import quote, urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request

from server.auth import policy
from server.auth.audit import agent_of
from server.auth.principal import ANONYMOUS, Principal
from server.auth.scopes import Permissions
from server.auth.staff import COOKIE
from server.errors import PrecertError, send_refusal

log = logging.getLogger("precert.auth")

CSP_HTML = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
# The Swagger UI page (served from this server's own assets) starts with an inline script.
CSP_DOCS = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")

_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class SecurityHeadersMiddleware:
    """nosniff, no referrer, no framing, a CSP on HTML, HSTS over https, and no caching unless the
    route says otherwise."""

    def __init__(self, app, https: bool = False):
        self.app = app
        self.https = https

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": security_headers(list(message.get("headers", [])), path, self.https)}
            await send(message)

        await self.app(scope, receive, send_wrapper)


def security_headers(raw: list, path: str, https: bool) -> list:
    present = {k.lower() for k, _ in raw}
    add = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"x-frame-options", b"DENY")]
    ctype = next((v for k, v in raw if k.lower() == b"content-type"), b"")
    if ctype.startswith(b"text/html"):
        add.append((b"content-security-policy", (CSP_DOCS if path.startswith("/docs") else CSP_HTML).encode()))
    if https:
        add.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
    if b"cache-control" not in present:
        add.append((b"cache-control", b"no-store"))
    return raw + [(k, v) for k, v in add if k not in present]


def cors_middleware(app, origins) -> CORSMiddleware:
    return CORSMiddleware(
        app,
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Accept", "If-Match", "If-None-Exist", "If-None-Match", "Prefer"],
        expose_headers=["Location", "ETag", "Content-Location", "Last-Modified"],
        allow_credentials=False,
        max_age=600,
    )


async def refuse(scope, receive, send, status: int, code: str, message: str, www: str | None = None) -> None:
    """A refusal in the shape of the request's surface (:mod:`server.errors`), or a sign-in redirect
    for a person opening a workbench page."""
    # Read (a bounded part of) the unread request body first, so the connection stays usable for
    # the client's next request; a larger body ends the connection instead.
    drained, more = 0, True
    while more and drained <= 1024 * 1024:
        message_in = await receive()
        if message_in["type"] != "http.request":
            break
        drained += len(message_in.get("body", b""))
        more = message_in.get("more_body", False)
    path = scope["path"]
    accept = next((v for k, v in scope.get("headers", []) if k == b"accept"), b"")
    if (status == 401 and scope["method"] == "GET" and b"text/html" in accept
            and (path == "/review" or path.startswith("/review/")) and not path.startswith("/review/api")):
        # A person opening a workbench page is sent to sign in, then back.
        target = path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
        location = "/review/login?next=" + quote(target, safe="")
        headers = [(b"location", location.encode()), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 303, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    await send_refusal(send, path, PrecertError(status, message, code, headers={"WWW-Authenticate": www} if www else None))


def audit_agent(principal: Principal | None, ip: str | None, req=None) -> dict:
    """Who an audit record names: the principal, or the CDS Hooks client a delegated route checks itself."""
    if req is not None and req.kind == policy.DELEGATED:
        return {"kind": "ehr", "id": "cds-hooks-client", "display": "CDS Hooks client (JWT checked by the service)", "ip": ip}
    return agent_of(principal, ip)


class AuthenticationMiddleware:
    def __init__(self, app, fastapi_app=None):
        self.app = app
        self.fastapi_app = fastapi_app

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope, receive, send):
        """Authenticate only: put the principal (or why the credential failed) on the request state,
        and never refuse; :class:`AuthorizationMiddleware` enforces the route's requirement."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = getattr(self.fastapi_app.state, "precert", None)
        svc = state.services.get("auth") if state is not None else None
        if svc is None:
            await self.app(scope, receive, send)
            return
        req = policy.requirement_for(self.fastapi_app, scope["method"], scope["path"])
        if req is None:  # no route serves this path and method: the router answers 404 or 405
            await self.app(scope, receive, send)
            return
        principal, failure = await self._authenticate(svc, Request(scope), req)
        request_state = scope.setdefault("state", {})
        request_state["principal"] = principal if principal is not None else ANONYMOUS
        request_state["access_requirement"] = req
        request_state["authentication_failure"] = failure
        if principal is not None and principal.staff is not None:
            request_state["staff"] = principal.staff  # request.state.staff, as the review API reads it
        await self.app(scope, receive, send)

    async def _authenticate(self, svc, request: Request, req):
        """(principal, None) or (None, (status, code, message, WWW-Authenticate)) when the presented
        credential fails. The route's kind only spares work (public routes look nothing up)."""
        if req.kind in (policy.PUBLIC, policy.DELEGATED, policy.UNDECLARED.kind):
            return ANONYMOUS, None
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if auth and bearer is None and req.kind != policy.DELEGATED:
            return None, (401, "login", "use Authorization: Bearer <token>", 'Bearer realm="precert", error="invalid_request"')
        if req.kind == policy.SMART and bearer is not None and bearer.count(".") == 2:
            claims = svc.tokens.verify(bearer)
            if claims is None:
                return None, (401, "login", "the access token is invalid or expired", 'Bearer realm="precert", error="invalid_token"')
            client = await svc.clients.get(claims.client_id)
            if client is None or not client.active or (client.sandbox and svc.production):
                return None, (401, "login", "the access token's client is not active", 'Bearer realm="precert", error="invalid_token"')
            return Principal("client", client=client, permissions=Permissions.from_scopes(claims.scope), token_id=claims.jti), None
        # A staff session: an opaque bearer, or the session cookie.
        token = bearer if bearer is not None and bearer.count(".") != 2 else None
        from_cookie = False
        if token is None and bearer is None:
            token = request.cookies.get(COOKIE)
            from_cookie = token is not None
        if token is not None:
            who = await svc.staff.session(token)
            if who is not None:
                if from_cookie and request.method in _UNSAFE and not _same_origin(request):
                    return None, (403, "forbidden", "cross-site request refused", None)
                return Principal("staff", staff=who), None
            if not from_cookie:
                return None, (401, "login", "the session or token is invalid or expired", 'Bearer realm="precert", error="invalid_token"')
        if bearer is not None and req.kind != policy.SMART:
            return None, (401, "login", "this route needs a payer staff session", 'Bearer realm="precert-staff"')
        return ANONYMOUS, None


class AuthorizationMiddleware:
    """Enforces the matched route's declared requirement (:mod:`server.auth.policy`) on the principal
    :class:`AuthenticationMiddleware` set, before any body is read; refuses (and audits the refusal)
    in the shape of the route's surface, and audits the access with the response's status."""

    def __init__(self, app, fastapi_app=None):
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope, receive, send):
        request_state = scope.get("state") or {}
        if scope["type"] != "http" or "access_requirement" not in request_state:
            await self.app(scope, receive, send)
            return
        svc = self.fastapi_app.state.precert.services["auth"]
        req = request_state["access_requirement"]
        principal = request_state["principal"]
        ip = scope.get("client")[0] if scope.get("client") else None
        record = dict(kind="rest", method=scope["method"], path=scope["path"], query=scope.get("query_string", b"").decode("latin-1"),
                      interaction=req.interaction, resource_type=req.resource_type, resource_id=req.resource_id,
                      operation=req.operation)
        failure = request_state.get("authentication_failure") or self._authorize(svc, req, principal)
        if failure is not None:
            status, code, message, www = failure
            if req.kind != policy.PUBLIC:
                svc.audit.record(agent=audit_agent(principal, ip), status=status, description=message, **record)
            await refuse(scope, receive, send, status, code, message, www)
            return
        status_box = [500]
        audited = req.kind not in (policy.PUBLIC, policy.UNDECLARED.kind) and (req.phi or principal.kind != "anonymous")

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if audited:
                svc.audit.record(agent=audit_agent(principal, ip, req), status=status_box[0], **record)

    @staticmethod
    def _authorize(svc, req, principal: Principal):
        """None when ``principal`` may proceed, else (status, code, message, WWW-Authenticate)."""
        if req.kind == policy.UNDECLARED.kind:  # fail closed: the route declared no requirement
            return (403, "forbidden", "no access policy is declared for this route", None) if svc.enforcing else None
        if req.kind in (policy.PUBLIC, policy.DELEGATED):
            return None
        if principal.kind == "anonymous":
            if not (svc.enforcing or (req.kind == policy.STAFF and req.always)):
                return None  # the open sandbox
            if req.kind == policy.SMART:
                return (401, "login", "authentication required: a SMART Backend Services access token", 'Bearer realm="precert"')
            return (401, "login", "payer staff sign-in required (POST /staff/login)", 'Bearer realm="precert-staff"')
        if req.kind == policy.SMART:
            if principal.kind == "staff" and not svc.enforcing:
                return None  # the open sandbox lets anyone write; a signed-in reviewer is not less than anyone
            if principal.allows(req.permissions):
                return None
            need = " ".join(f"system/{t}.{letter}" for t, letter in req.permissions)
            return (403, "forbidden", f"the access token does not grant {req.describe()}",
                    f'Bearer realm="precert", error="insufficient_scope", scope="{need}"')
        # STAFF and DOCS
        if principal.kind != "staff":
            return (403, "forbidden", "this route is for payer staff", None)
        if req.roles and not req.page_checks_roles and not principal.staff.has(*req.roles):
            return (403, "forbidden", f"this needs the {' or '.join(req.roles)} role", None)
        return None


def _same_origin(request: Request) -> bool:
    """A cookie-authenticated write must come from this site: no Origin (not a browser's cross-site
    request), or an Origin naming this host or the configured public base URL."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    netloc = urlsplit(origin).netloc
    if netloc and netloc == request.headers.get("host", ""):
        return True
    configured = request.app.state.precert.settings.base_url if hasattr(request.app.state, "precert") else None
    return bool(configured and netloc and netloc == urlsplit(configured).netloc)
