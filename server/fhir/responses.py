"""Building FHIR HTTP responses."""

from __future__ import annotations

from email.utils import format_datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from server.fhir.errors import FHIRError
from server.storage import StoredResource

FHIR_JSON_UTF8 = "application/fhir+json; charset=utf-8"


def fhir_response(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    if isinstance(body, (bytes, bytearray)):
        content = bytes(body)
    elif body is None:
        content = b""
    else:
        content = orjson.dumps(body)
    return Response(content, status_code=status, headers=headers, media_type=FHIR_JSON_UTF8)


def resource_headers(stored: StoredResource, base: str | None = None, location: bool = False) -> dict:
    headers = {"ETag": stored.etag, "Last-Modified": format_datetime(stored.last_updated, usegmt=True)}
    if location and base:
        headers["Location"] = f"{base}/{stored.type}/{stored.id}/_history/{stored.version}"
    return headers


def stored_response(stored: StoredResource, status: int = 200, base: str | None = None, location: bool = False) -> Response:
    return fhir_response(stored.json, status, resource_headers(stored, base, location))


def check_format(request: Request) -> None:
    """Refuse XML and other formats Precert does not produce (406)."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        f = fmt.lower()
        if f not in ("json", "application/json", "application/fhir+json", "application/json+fhir"):
            raise FHIRError.single(406, "not-supported", f"_format '{fmt[:40]}' is not supported; Precert serves application/fhir+json")
        return
    accept = request.headers.get("accept", "")
    if accept and "xml" in accept and not any(t in accept for t in ("json", "*/*", "application/*")):
        raise FHIRError.single(406, "not-supported", "XML is not supported; accept application/fhir+json")


def base_url(request: Request) -> str:
    configured = request.app.state.precert.settings.base_url
    if configured:
        return configured.rstrip("/") + "/fhir"
    return str(request.base_url).rstrip("/") + "/fhir"
