"""One error model: one exception type, one renderer per surface.

Code anywhere raises :class:`PrecertError` (status, code, message, expression) or one of its
kinds (:class:`~server.fhir.errors.FHIRError` carries a whole list of OperationOutcome issues); the
app's exception handlers, the request guard and the authorization layer all render it with
:func:`render`, which picks the shape from the surface the request path belongs to:

* ``/fhir`` (REST and FHIR operations) and ``/cds-services``: an OperationOutcome
  (``application/fhir+json``), as both specs' clients expect;
* the OAuth token endpoint keeps RFC 6749's ``{"error", "error_description"}`` (its own module
  renders it, since its error codes are OAuth's, not these);
* everything else (the staff review API, admin, staff sign-in, rules, metrics, demo EHR): an
  RFC 9457 problem (``application/problem+json``) with ``type``, ``title``, ``status``, ``detail``
  and ``code``. It also carries ``error`` and ``message`` (the code and the detail again, as
  extension members), the pair these APIs answered with before they spoke RFC 9457, so that
  existing clients keep working.

``code`` is a FHIR issue-type code (``invalid``, ``not-found``, ``forbidden``, ``login``, ...):
one vocabulary for every surface.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Iterable

import orjson
from starlette.responses import Response

FHIR_JSON = b"application/fhir+json; charset=utf-8"
PROBLEM_JSON = b"application/problem+json"
PROBLEM_BASE = "https://precert.example.org/problems/"

# The code of a refusal that names only its status.
STATUS_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
                408: "timeout", 409: "conflict", 410: "deleted", 412: "conflict", 413: "too-costly",
                415: "not-supported", 422: "invalid", 429: "throttled", 500: "exception", 503: "transient"}

FHIR, CDS_HOOKS, PROBLEM = "fhir", "cds-hooks", "problem"


class PrecertError(Exception):
    """A refusal: the HTTP status, a FHIR issue-type ``code``, a message for people, and where in
    the request the problem is (``expression``, FHIRPath or a dotted field name)."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 expression: str | Iterable[str] | None = None, headers: dict | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.extra = extra or {}  # further members of a problem document (RFC 9457 extensions)
        self.status = status
        self.code = code or STATUS_CODES.get(status, "processing")
        self.message = message
        self.expression = [expression] if isinstance(expression, str) else list(expression or ())
        self.headers = headers or {}

    def as_issues(self) -> list[dict]:
        """The refusal as OperationOutcome issues."""
        item: dict = {"severity": "error", "code": self.code, "diagnostics": self.message}
        if self.expression:
            item["expression"] = list(self.expression)
        return [item]


def surface(path: str) -> str:
    """Which error shape a request path's clients read."""
    if path == "/fhir" or path.startswith("/fhir/"):
        return FHIR
    if path == "/cds-services" or path.startswith("/cds-services/"):
        return CDS_HOOKS
    return PROBLEM


def problem_body(status: int, code: str, message: str) -> dict:
    """An RFC 9457 problem document (with the ``error``/``message`` compatibility members)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return {"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": message, "code": code,
            "error": code, "message": message}


def render(path: str, exc: PrecertError) -> tuple[bytes, bytes]:
    """(content type, body) of ``exc`` in the shape of the surface ``path`` belongs to."""
    if surface(path) == PROBLEM:
        return PROBLEM_JSON, orjson.dumps({**exc.extra, **problem_body(exc.status, exc.code, exc.message)})
    return FHIR_JSON, orjson.dumps({"resourceType": "OperationOutcome", "issue": exc.as_issues()})


def response(path: str, exc: PrecertError) -> Response:
    """``exc`` as a Starlette response for ``path``, with the headers it carries."""
    ctype, body = render(path, exc)
    return Response(body, status_code=exc.status, media_type=ctype.decode(), headers=exc.headers or None)


def validation_detail(errors) -> str:
    """Pydantic's or FastAPI's validation errors in words: ``where: what`` for the first few."""
    parts = []
    for e in list(errors)[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return "; ".join(parts) or "the request is not valid"


async def send_refusal(send, path: str, exc: PrecertError, close: bool = False) -> None:
    """Send ``exc`` as a whole response on a raw ASGI ``send`` (for middleware, before any route)."""
    ctype, body = render(path, exc)
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in exc.headers.items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
