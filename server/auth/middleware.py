"""Security middleware (pure ASGI), each with one job:

* :class:`SecurityHeadersMiddleware` adds the security headers to every response;
* CORS, when configured, is Starlette's ``CORSMiddleware`` between the two (preflights never reach
  authentication, and refusals carry the CORS headers a browser needs to read them);
* :class:`AuthenticationMiddleware` authenticates the caller (SMART access token, payer-staff
  session, or nobody), whatever the route, and puts the :class:`~server.auth.principal.Principal`
  on ``request.state.principal``, or records why the presented credential failed; it never refuses;
* :class:`AccessAuditMiddleware`, inside it, audits each access to a protected route, allowed or
  refused, with the response's status.

Authorization is not a middleware: each route enforces the requirement declared beside it
(:mod:`server.auth.guard`), after the router chose it and before its body is read.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request

from server.auth import policy
from server.auth.audit import agent_of
from server.auth.principal import ANONYMOUS, Principal
from server.auth.scopes import Permissions
from server.auth.staff import COOKIE

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


def audit_agent(principal: Principal | None, ip: str | None, req=None) -> dict:
    """Who an audit record names: the principal, or the CDS Hooks client a delegated route checks itself."""
    if req is not None and req.kind == policy.DELEGATED:
        return {"kind": "ehr", "id": "cds-hooks-client", "display": "CDS Hooks client (JWT checked by the service)", "ip": ip}
    return agent_of(principal, ip)


class AuthenticationMiddleware:
    """Authenticate only: put the principal (or why the presented credential failed) on the request
    state, and never refuse. It does not look at the route: the route's guard decides what the
    principal, or the failure, means there (a public route ignores a bad credential; a CDS Hooks
    service checks the EHR's JWT itself)."""

    def __init__(self, app, fastapi_app=None):
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = getattr(self.fastapi_app.state, "precert", None)
        svc = state.services.get("auth") if state is not None else None
        if svc is None:
            await self.app(scope, receive, send)
            return
        principal, failure, credential = await self._authenticate(svc, Request(scope))
        request_state = scope.setdefault("state", {})
        request_state["principal"] = principal if principal is not None else ANONYMOUS
        request_state["authentication_failure"] = failure
        request_state["credential"] = credential
        if principal is not None and principal.staff is not None:
            request_state["staff"] = principal.staff  # request.state.staff, as the review API reads it
        await self.app(scope, receive, send)

    @staticmethod
    async def _authenticate(svc, request: Request):
        """(principal, failure, credential): failure is None or (status, code, message,
        WWW-Authenticate) when the presented credential fails; credential says what was presented
        ("jwt" for a bearer JWT, "session", "cookie", or None)."""
        headers = request.headers
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if auth and bearer is None:
            return None, (401, "login", "use Authorization: Bearer <token>", 'Bearer realm="precert", error="invalid_request"'), None
        if bearer is not None and bearer.count(".") == 2:
            claims = svc.tokens.verify(bearer)
            if claims is None:
                return None, (401, "login", "the access token is invalid or expired", 'Bearer realm="precert", error="invalid_token"'), "jwt"
            client = await svc.clients.get(claims.client_id)
            if client is None or not client.active or (client.sandbox and svc.production):
                return None, (401, "login", "the access token's client is not active", 'Bearer realm="precert", error="invalid_token"'), "jwt"
            return Principal("client", client=client, permissions=Permissions.from_scopes(claims.scope), token_id=claims.jti), None, "jwt"
        # A staff session: an opaque bearer, or the session cookie.
        if bearer is not None:
            token, credential = bearer, "session"
        else:
            token = request.cookies.get(COOKIE) if "cookie" in headers else None
            credential = "cookie" if token is not None else None
        if token is None:
            return ANONYMOUS, None, None
        who = await svc.staff.session(token)
        if who is None:
            if credential == "cookie":
                return ANONYMOUS, None, None  # an expired cookie: the person is simply not signed in
            return None, (401, "login", "the session or token is invalid or expired", 'Bearer realm="precert", error="invalid_token"'), credential
        if credential == "cookie" and request.method in _UNSAFE and not _same_origin(request):
            return None, (403, "forbidden", "cross-site request refused", None), credential
        return Principal("staff", staff=who), None, credential


class AccessAuditMiddleware:
    """Audits each access to a protected route with the response's status: the route's guard
    (:mod:`server.auth.guard`) leaves the requirement it enforced on the request state, and the
    refusal's reason when it refused."""

    def __init__(self, app, fastapi_app=None):
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status_box = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            request_state = scope.get("state") or {}
            req = request_state.get("access_requirement")
            if req is not None:
                self._record(scope, request_state, req, status_box[0])

    def _record(self, scope, request_state: dict, req, status: int) -> None:
        svc = self.fastapi_app.state.precert.services.get("auth")
        if svc is None:
            return
        principal = request_state.get("principal") or ANONYMOUS
        refusal = request_state.get("access_refusal")
        if req.kind == policy.PUBLIC:
            return  # public routes are not audited, admitted or not
        if refusal is None and (req.kind == policy.UNDECLARED.kind or (not req.phi and principal.kind == "anonymous")):
            return  # an admitted access to no PHI by nobody in particular
        ip = scope.get("client")[0] if scope.get("client") else None
        record = dict(kind="rest", method=scope["method"], path=scope["path"], query=scope.get("query_string", b"").decode("latin-1"),
                      interaction=req.interaction, resource_type=req.resource_type, resource_id=req.resource_id,
                      operation=req.operation)
        if refusal is not None:
            svc.audit.record(agent=audit_agent(principal, ip), status=status, description=refusal, **record)
        else:
            svc.audit.record(agent=audit_agent(principal, ip, req), status=status, **record)


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
