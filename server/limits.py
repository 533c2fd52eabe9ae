"""Bounds on every request, enforced before a route spends anything on it.

One pure ASGI middleware, outermost in the stack, that:

- refuses a body over its route's size limit with 413, from ``Content-Length`` before reading, or
  as soon as the streamed body passes the limit;
- refuses a body that stalls (no bytes for ``body_read_timeout`` seconds) with 408 and closes;
- refuses JSON nested deeper than ``MAX_DEPTH``, arrays longer than ``MAX_ARRAY`` and strings
  longer than ``MAX_STRING`` with 413, checked off the event loop so a large body never delays
  another client;
- turns any exception that escapes a route into a response instead of a dropped connection: a
  database failure is 503 with ``Retry-After``, anything else 500, and the keep-alive connection
  stays usable for the client's next request.

Refusals are :class:`Refusal` (a :class:`server.errors.PrecertError`), rendered for the surface
they come from by :mod:`server.errors`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
import orjson
from pymongo.errors import DuplicateKeyError, PyMongoError
from starlette.routing import Match

from server.errors import PrecertError, send_refusal
from server.fhir.jsonio import PARSED_BODY

log = logging.getLogger("precert.limits")

KB = 1024
MB = 1024 * KB

# The deepest FHIR resources Da Vinci exchanges (a PAS Bundle holding a Claim holding contained
# resources with extensions on extensions) nest about 15 levels; 64 leaves room, 10,000 would not.
MAX_DEPTH = 64
# A Claim may carry a few thousand items; no FHIR array a client legitimately sends is longer.
MAX_ARRAY = 10_000
# Attachments are base64 in a string; the body limit bounds them further.
MAX_STRING = 8 * MB

# Body limits by path prefix, most specific first. Anything not listed gets the default.
ROUTE_LIMITS: tuple[tuple[str, int], ...] = (
    ("/auth/", 64 * KB),
    ("/review/api/", 1 * MB),
    ("/review/", 256 * KB),
    ("/cds-services", 5 * MB),
    ("/admin/", 5 * MB),
    ("/fhir", 10 * MB),
)
DEFAULT_LIMIT = 1 * MB

# How long a database failure is expected to last, as told to clients in Retry-After.
RETRY_AFTER_SECONDS = 5

_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
_JSON_TYPES = ("json",)


class Refusal(PrecertError):
    """A request refused before any route saw it; ``close`` ends the connection after the answer
    (the rest of the body is not read)."""

    def __init__(self, status: int, message: str, code: str | None = None, close: bool = False):
        super().__init__(status, message, code)
        self.close = close


def limit_for(path: str, fhir_limit: int | None = None) -> int:
    for prefix, limit in ROUTE_LIMITS:
        if path.startswith(prefix):
            if prefix == "/fhir" and fhir_limit:
                return fhir_limit
            return limit
    return DEFAULT_LIMIT


def check_structure(value: Any, max_depth: int = MAX_DEPTH, max_array: int = MAX_ARRAY, max_string: int = MAX_STRING) -> str | None:
    """Why ``value`` is too deep or too wide, or None. Iterative, so depth costs no stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > max_depth:
                return f"JSON nesting exceeds the limit of {max_depth} levels"
            if len(node) > max_array:
                return f"a JSON object exceeds the limit of {max_array} members"
            for v in node.values():
                if isinstance(v, (dict, list)):
                    stack.append((v, depth + 1))
                elif isinstance(v, str) and len(v) > max_string:
                    return f"a JSON string exceeds the limit of {max_string} characters"
        elif isinstance(node, list):
            if depth > max_depth:
                return f"JSON nesting exceeds the limit of {max_depth} levels"
            if len(node) > max_array:
                return f"a JSON array exceeds the limit of {max_array} elements"
            for v in node:
                if isinstance(v, (dict, list)):
                    stack.append((v, depth + 1))
                elif isinstance(v, str) and len(v) > max_string:
                    return f"a JSON string exceeds the limit of {max_string} characters"
    return None


_UNPARSED = object()


def _structure_problem(body: bytes) -> tuple[str | None, Any]:
    """(why the body is refused or None, the parsed body or ``_UNPARSED``)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson refuses nesting past its own recursion limit; anything else malformed is left to
        # the route, whose message says what it expected.
        if "recursion" in str(exc).lower():
            return f"JSON nesting exceeds the limit of {MAX_DEPTH} levels", _UNPARSED
        return None, _UNPARSED
    return check_structure(parsed), parsed


def is_database_error(exc: BaseException) -> bool:
    return isinstance(exc, PyMongoError) and not isinstance(exc, DuplicateKeyError)


class RequestGuard:
    """The outermost middleware: bounds the request, contains the failure."""

    def __init__(self, app, fhir_limit: int | None = None, body_read_timeout: float = 10.0):
        self.app = app
        self.fhir_limit = fhir_limit
        self.body_read_timeout = body_read_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        started = False

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        inner_receive = receive
        try:
            if scope.get("method") in _BODY_METHODS:
                body = await self._read(scope, receive)
                if body is None:
                    return  # the client went away
                inner_receive = _replay(body, receive)
            await self.app(scope, inner_receive, tracked_send)
        except Refusal as refusal:
            if not started:
                await send_refusal(send, path, refusal, close=refusal.close)
        except Exception as exc:
            if started:
                log.exception("error after the response started on %s %s", scope.get("method"), _template(scope))
                return
            if is_database_error(exc):
                log.error("database unavailable on %s %s: %s", scope.get("method"), _template(scope), type(exc).__name__)
                await send_refusal(send, path, PrecertError(503, "the database is unavailable; retry shortly", "transient",
                                                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)}))
            else:
                log.exception("unhandled error on %s %s", scope.get("method"), _template(scope))
                await send_refusal(send, path, PrecertError(500, "internal error; the request was not completed", "exception"))

    async def _read(self, scope, receive) -> bytes | None:
        path = scope.get("path", "")
        limit = limit_for(path, self.fhir_limit)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise Refusal(400, "Content-Length is not a number", "structure", close=True) from None
            if size > limit:
                raise Refusal(413, f"request body exceeds the limit of {limit} bytes for this route", "too-costly", close=True)
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.body_read_timeout)
            except asyncio.TimeoutError:
                raise Refusal(408, f"the request body stalled for {self.body_read_timeout:g} s", "timeout", close=True) from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Refusal(413, f"request body exceeds the limit of {limit} bytes for this route", "too-costly", close=True)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        ctype = headers.get(b"content-type", b"").lower()
        if body and any(t.encode() in ctype for t in _JSON_TYPES):
            # Parsing and walking a body of megabytes takes tens of milliseconds: a worker thread
            # does it so the event loop keeps serving everyone else meanwhile.
            problem, parsed = await anyio.to_thread.run_sync(_structure_problem, body) if len(body) > 64 * KB \
                else _structure_problem(body)
            if problem:
                raise Refusal(413, problem, "too-costly")
            if parsed is not _UNPARSED:
                # The route's body reader (server/fhir/jsonio.py) takes it instead of parsing again.
                scope[PARSED_BODY] = (body, parsed)
        return body

def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _template(scope) -> str:
    """The route's path template when the router has matched one; never raw ids."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    parts = (scope.get("path") or "").split("/")
    return "/".join(parts[:3]) + ("/…" if len(parts) > 3 else "")


class RouteTemplateLogFilter(logging.Filter):
    """Rewrites uvicorn's access log lines to carry the route template (``/fhir/{rtype}/{rid}``)
    instead of the raw path and query string, so ids and search values (which may be PHI) never
    reach the log."""

    def __init__(self, app):
        super().__init__()
        self.app = app

    def template(self, method: str, path: str) -> str:

        path = path.split("?", 1)[0]
        found = self._match(getattr(self.app, "routes", ()), method, path, "", Match)
        return found or _template({"path": path})

    def _match(self, routes, method: str, path: str, prefix: str, Match) -> str | None:
        for route in routes:
            inner = getattr(route, "original_router", None)  # a router included by FastAPI
            if inner is not None:
                extra = getattr(getattr(route, "include_context", None), "prefix", "") or ""
                if path.startswith(extra):
                    found = self._match(inner.routes, method, path[len(extra):], prefix + extra, Match)
                    if found:
                        return found
                continue
            scope = {"type": "http", "method": method, "path": path, "root_path": "", "path_params": {}}
            try:
                match, _ = route.matches(scope)
            except Exception:  # noqa: BLE001 - a route that cannot judge this path does not match it
                continue
            if match != Match.NONE and getattr(route, "path", None):
                return prefix + route.path
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (args[0], args[1], self.template(str(args[1]), args[2]), *args[3:])
        return True


def install_log_filter(app) -> None:
    """Attach the filter to uvicorn's access logger, replacing one an earlier app installed."""
    access = logging.getLogger("uvicorn.access")
    for old in [f for f in access.filters if isinstance(f, RouteTemplateLogFilter)]:
        access.removeFilter(old)
    access.addFilter(RouteTemplateLogFilter(app))
