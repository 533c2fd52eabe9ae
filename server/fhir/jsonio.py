"""JSON in and out: bounded body reading, strict parsing, fast serialization."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from server.fhir.errors import FHIRError

FHIR_JSON = "application/fhir+json"
# Where the request guard (server/limits.py) leaves the body it has parsed to check its structure:
# (the body bytes, the parsed value). Parsing a 25 KB Bundle twice was a few percent of a $submit.
PARSED_BODY = "precert.parsed_body"


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"request body exceeds the limit of {limit} bytes")
        self.limit = limit


class MalformedJSON(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """Read the request body, refusing anything over ``limit`` bytes without buffering it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge(limit)
        except ValueError:
            pass
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise MalformedJSON("the request body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"the request body is not valid JSON: {exc}") from None


def parse_request_json(request: Request, body: bytes) -> Any:
    """:func:`parse_json`, reusing the guard's parse when it was of these very bytes.

    Taken from the scope, so a second reader of the body parses its own copy."""
    parsed = request.scope.pop(PARSED_BODY, None)
    if parsed is not None and parsed[0] == body:
        return parsed[1]
    return parse_json(body)


async def read_fhir_json(request: Request, limit: int) -> Any:
    """Body as parsed JSON, with FHIR errors for every way it can be unreadable."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ("xml" in ctype or ctype not in (FHIR_JSON, "application/json", "text/json", "application/json-patch+json")):
        if "xml" in ctype:
            raise FHIRError.single(415, "not-supported", "XML is not supported; send application/fhir+json")
        raise FHIRError.single(415, "not-supported", f"unsupported Content-Type '{ctype[:80]}'; send application/fhir+json")
    try:
        body = await read_body(request, limit)
    except BodyTooLarge as exc:
        raise FHIRError.single(413, "too-costly", str(exc)) from None
    try:
        return parse_request_json(request, body)
    except MalformedJSON as exc:
        raise FHIRError.single(400, "structure", str(exc)) from None


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)
