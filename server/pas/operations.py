"""``Claim/$submit`` and ``Claim/$inquire``: the PAS operations, declared beside their handlers.

Both answer in the PAS version the request speaks (see :mod:`server.pas.versions`). Clients whose
requests cannot be told apart can call a version-pinned base instead, ``/fhir/pas-2.0.1`` or
``/fhir/pas-2.2.1``, with the same operations and the same access rules.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from server.auth.guard import GuardedRoute
from server.auth import policy
from server.auth.principal import current_principal
from server.fhir.errors import FHIRError
from server.fhir.jsonio import read_fhir_json
from server.fhir.operations import OperationCall, operation
from server.fhir.repository import Repository
from server.fhir.responses import FHIR_JSON_UTF8, base_url, fhir_response
from server.pas.constants import INQUIRE_DEFINITION, SUBMIT_DEFINITION
from server.pas.versions import VERSIONS

PINNED_PREFIX = "/fhir/pas-"


def _service(request: Request):
    return request.app.state.precert.services["pas"]


def _owner(request: Request) -> str | None:
    return request.app.state.precert.owner_for(request)


def _client_default(request: Request) -> str | None:
    client = current_principal(request).client
    return getattr(client, "pas_version", None) if client is not None else None


async def _submit(request: Request, body, base: str, pinned: str | None) -> Response:
    result, status = await _service(request).submit(body, Repository.of(request), base, pinned=pinned,
                                                    client_default=_client_default(request))
    return Response(result, status_code=status, media_type=FHIR_JSON_UTF8)


async def _inquire(request: Request, body, base: str, pinned: str | None) -> Response:
    result, status = await _service(request).inquire(body, _owner(request), base, pinned=pinned,
                                                     client_default=_client_default(request))
    return fhir_response(result, status)


@operation("submit", ["Claim"], SUBMIT_DEFINITION, scopes=(("Claim", "c"),))
async def submit(call: OperationCall) -> Response:
    """Decide a prior-authorization request (or update or cancel one) and answer with the PAS
    response Bundle. The case is durable before the answer is sent; a retry returns the same
    answer."""
    return await _submit(call.request, call.body, base_url(call.request), None)


# An inquiry reads the ClaimResponses of earlier requests: a client with read access to Claims or
# ClaimResponses may inquire; a write-only client may not.
@operation("inquire", ["Claim"], INQUIRE_DEFINITION, scopes=(("ClaimResponse", "r"), ("Claim", "r")))
async def inquire(call: OperationCall) -> Response:
    """The current answer for the caller's requests matching the inquiry (query by example)."""
    return await _inquire(call.request, call.body, base_url(call.request), None)


pinned_router = APIRouter(route_class=GuardedRoute)


# The pinned bases follow the same access rules as /fhir/Claim/$submit and /fhir/Claim/$inquire.
@pinned_router.post(PINNED_PREFIX + "{version}/Claim/$submit", include_in_schema=False)
@policy.requires(policy.FhirOperation("Claim", "submit"))
async def pinned_submit(request: Request, version: str) -> Response:
    pinned = _pinned(version)
    body = await read_fhir_json(request, request.app.state.precert.settings.max_body_bytes)
    return await _submit(request, body, base_url(request), pinned)


@pinned_router.post(PINNED_PREFIX + "{version}/Claim/$inquire", include_in_schema=False)
@policy.requires(policy.FhirOperation("Claim", "inquire"))
async def pinned_inquire(request: Request, version: str) -> Response:
    pinned = _pinned(version)
    body = await read_fhir_json(request, request.app.state.precert.settings.max_body_bytes)
    return await _inquire(request, body, base_url(request), pinned)


def _pinned(version: str) -> str:
    if version not in VERSIONS:
        raise FHIRError.single(404, "not-found", f"PAS version '{version[:20]}' is not served here; use one of {', '.join(VERSIONS)}")
    return version


