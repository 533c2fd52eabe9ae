"""Authorization, enforced by each route before its handler runs.

A route's requirement (:mod:`server.auth.policy`) is declared beside its handler, and the route
itself enforces it:

* FastAPI routes are :class:`GuardedRoute` (every router's ``route_class``, and the app's): the
  route's request handler checks the requirement first, so a refused request's body is never read
  or parsed;
* plain Starlette routes wrap their endpoint with :func:`guarded`, and mounts their ASGI app with
  :class:`GuardedApp`.

The requirement is taken from the endpoint (``@policy.requires(...)``) or from one of the route's
dependencies (a dependency marked with :func:`policy.requires`, such as the review API's staff
dependencies, which then also hand the handler the staff member). Nothing matches URLs here: the
router has already chosen the route. The caller is whoever
:class:`~server.auth.middleware.AuthenticationMiddleware` found (it authenticates and never
refuses); the access, allowed or refused, is audited by
:class:`~server.auth.middleware.AccessAuditMiddleware` from what this module puts on the request.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from server import errors
from server.auth import policy
from server.auth.principal import ANONYMOUS, Principal
from server.errors import PrecertError

MAX_DRAIN_BYTES = 1024 * 1024


def authorize(svc, req: policy.Requirement, principal: Principal, failure, credential: str | None):
    """None when ``principal`` may proceed on a route needing ``req``, else
    (status, code, message, WWW-Authenticate)."""
    if req.kind == policy.UNDECLARED.kind:  # fail closed: the route declared no requirement
        return (403, "forbidden", "no access policy is declared for this route", None) if svc.enforcing else None
    if req.kind in (policy.PUBLIC, policy.DELEGATED):
        return None  # a failed credential does not matter where none is needed (or the route checks its own)
    if req.kind != policy.SMART and credential == "jwt":
        return (401, "login", "this route needs a payer staff session", 'Bearer realm="precert-staff"')
    if failure is not None:
        return failure
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


async def enforce(request: Request, declared) -> Response | None:
    """Check the route's declared requirement on the request's caller: None to go on, else the
    refusal to send (in the shape of the request's surface, or a sign-in redirect for a person
    opening a workbench page)."""
    state = getattr(request.app.state, "precert", None)
    svc = state.services.get("auth") if state is not None else None
    if svc is None:  # security is not installed (a stripped-down app, or before start-up)
        return None
    method = "GET" if request.method == "HEAD" else request.method
    req = declared.resolve(request.path_params, method)
    scope_state = request.scope.setdefault("state", {})
    scope_state["access_requirement"] = req
    failure = authorize(svc, req, scope_state.get("principal") or ANONYMOUS, scope_state.get("authentication_failure"),
                        scope_state.get("credential"))
    if failure is None:
        return None
    status, code, message, www = failure
    scope_state["access_refusal"] = message
    await _drain(request)
    path = request.url.path
    if (status == 401 and request.method == "GET" and "text/html" in request.headers.get("accept", "")
            and (path == "/review" or path.startswith("/review/")) and not path.startswith("/review/api")):
        # A person opening a workbench page is sent to sign in, then back.
        query = request.scope.get("query_string") or b""
        target = path + ("?" + query.decode("latin-1") if query else "")
        return Response(status_code=303, headers={"location": "/review/login?next=" + quote(target, safe="")})
    return errors.response(path, PrecertError(status, message, code, headers={"WWW-Authenticate": www} if www else None))


async def _drain(request: Request) -> None:
    """Read (a bounded part of) the unread body of a refused request, so the connection stays usable
    for the client's next request; a larger body ends the connection instead."""
    drained = 0
    try:
        async for chunk in request.stream():
            drained += len(chunk)
            if drained > MAX_DRAIN_BYTES:
                break
    except Exception:  # a client that went away, or a body over the server's limit: nothing to keep
        pass


class GuardedRoute(APIRoute):
    """A FastAPI route that enforces its declared requirement before its request handler (which
    reads and parses the body) runs."""

    __precert_guarded__ = True

    def get_route_handler(self):
        handler = super().get_route_handler()
        declared = policy.declared_by(self) or policy.UNDECLARED

        async def guarded_handler(request: Request) -> Response:
            refusal = await enforce(request, declared)
            if refusal is not None:
                return refusal
            return await handler(request)

        return guarded_handler


def guarded(requirement):
    """Wrap a plain Starlette endpoint (``request -> response``) so it enforces ``requirement``;
    use where the route is added: ``app.add_route(path, guarded(req)(endpoint))``."""

    def wrap(endpoint):
        async def guarded_endpoint(request: Request) -> Response:
            refusal = await enforce(request, requirement)
            if refusal is not None:
                return refusal
            return await endpoint(request)

        guarded_endpoint.__name__ = getattr(endpoint, "__name__", "endpoint")
        guarded_endpoint.__doc__ = getattr(endpoint, "__doc__", None)
        policy.requires(requirement)(guarded_endpoint)
        guarded_endpoint.__precert_guarded__ = True
        return guarded_endpoint

    return wrap


class GuardedApp:
    """An ASGI app (a mount: static files) that enforces ``requirement`` before serving."""

    __precert_guarded__ = True

    def __init__(self, app, requirement):
        self.app = app
        self.__precert_access__ = requirement

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = await enforce(Request(scope, receive), self.__precert_access__)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)
