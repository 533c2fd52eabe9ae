"""``Claim/$submit`` and ``Claim/$inquire``: the PAS operations, declared beside their handlers."""

from __future__ import annotations

from starlette.responses import Response

from server.fhir.operations import OperationCall, operation
from server.fhir.responses import FHIR_JSON_UTF8, base_url, fhir_response
from server.pas.constants import INQUIRE_DEFINITION, SUBMIT_DEFINITION


def _service(call: OperationCall):
    return call.request.app.state.precert.services["pas"]


def _owner(call: OperationCall) -> str | None:
    return call.request.app.state.precert.owner_for(call.request)


@operation("submit", ["Claim"], SUBMIT_DEFINITION)
async def submit(call: OperationCall) -> Response:
    """Decide a prior-authorization request (or update or cancel one) and answer with the PAS
    response Bundle. The case is durable before the answer is sent; a retry returns the same
    answer."""
    body, status = await _service(call).submit(call.body, _owner(call), base_url(call.request))
    return Response(body, status_code=status, media_type=FHIR_JSON_UTF8)


@operation("inquire", ["Claim"], INQUIRE_DEFINITION)
async def inquire(call: OperationCall) -> Response:
    """The current answer for the caller's requests matching the inquiry (query by example)."""
    result, status = await _service(call).inquire(call.body, _owner(call), base_url(call.request))
    return fhir_response(result, status)
