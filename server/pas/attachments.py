"""``$submit-attachment`` (CDex 2.1.0): documentation sent for a pended prior authorization.

The provider answers the information-request Task by sending its ``trackingId`` (the case number
in the Task's identifier), the member identifier and the attachments (DocumentReferences or DTR
QuestionnaireResponses, each optionally for ``lineItem`` sequences). Precert matches them to the
caller's pended case and its lines, records them, decides the documented lines again (which may
certify them at once; a DocumentReference counts as in :mod:`server.pas.documents`), updates the
ClaimResponse and queues the PAS notification (also when the request stays pended: it changed), in
one transaction. Anything that does not match changes nothing and gets an OperationOutcome.
"""

from __future__ import annotations

from starlette.responses import Response

from server.fhir.errors import FHIRError, issue, operation_outcome
from server.fhir.repository import Repository
from server.fhir.operations import OperationCall, operation
from server.fhir.responses import base_url, fhir_response
from server.pas.documents import with_embedded_answers

SUBMIT_ATTACHMENT_DEFINITION = {
    "resourceType": "OperationDefinition",
    "url": "http://hl7.org/fhir/us/davinci-cdex/OperationDefinition/submit-attachment",
    "name": "SubmitAttachment",
    "status": "active",
    "kind": "operation",
    "code": "submit-attachment",
    "system": True,
    "type": False,
    "instance": False,
    "parameter": [
        {"name": "trackingId", "use": "in", "min": 1, "max": "1", "type": "Identifier"},
        {"name": "attachTo", "use": "in", "min": 1, "max": "1", "type": "code"},
        {"name": "payerId", "use": "in", "min": 0, "max": "1", "type": "Identifier"},
        {"name": "organizationId", "use": "in", "min": 0, "max": "1", "type": "Identifier"},
        {"name": "providerId", "use": "in", "min": 0, "max": "1", "type": "Identifier"},
        {"name": "memberId", "use": "in", "min": 1, "max": "1", "type": "Identifier"},
        {"name": "attachment", "use": "in", "min": 1, "max": "*", "part": [
            {"name": "lineItem", "use": "in", "min": 0, "max": "*", "type": "string"},
            {"name": "content", "use": "in", "min": 1, "max": "1", "type": "Resource"},
        ]},
    ],
}

ACCEPTED_TYPES = ("DocumentReference", "QuestionnaireResponse")


def _bad(status: int, code: str, message: str, expression: str | None = None) -> FHIRError:
    return FHIRError.single(status, code, message, expression)


def parse(body) -> dict:
    """The operation's parameters, or a 400 naming what is wrong."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise _bad(400, "structure", "the body must be a Parameters resource")
    params = [p for p in body.get("parameter") or [] if isinstance(p, dict)]
    out: dict = {"attachments": []}
    for p in params:
        name = p.get("name")
        if name in ("trackingId", "memberId", "payerId", "organizationId", "providerId"):
            ident = p.get("valueIdentifier")
            if not isinstance(ident, dict) or not isinstance(ident.get("value"), str) or not ident["value"]:
                raise _bad(400, "required", f"{name} must be an Identifier with a value", f"Parameters.parameter.where(name='{name}')")
            out[name] = ident
        elif name == "attachTo":
            out["attachTo"] = p.get("valueCode")
        elif name == "attachment":
            lines: list[int] = []
            content = None
            for part in p.get("part") or []:
                if not isinstance(part, dict):
                    continue
                if part.get("name") == "lineItem":
                    try:
                        lines.append(int(str(part.get("valueString"))))
                    except ValueError:
                        raise _bad(400, "value", "lineItem must be the sequence number of a Claim item", "Parameters.parameter.part.where(name='lineItem')") from None
                elif part.get("name") == "content" and isinstance(part.get("resource"), dict):
                    content = part["resource"]
            if content is None or content.get("resourceType") not in ACCEPTED_TYPES:
                raise _bad(400, "not-supported", f"each attachment needs content: one of {', '.join(ACCEPTED_TYPES)}", "Parameters.parameter.where(name='attachment')")
            out["attachments"].append({"lines": lines, "content": content})
    for required in ("trackingId", "memberId"):
        if required not in out:
            raise _bad(400, "required", f"{required} is required", "Parameters.parameter")
    if out.get("attachTo") != "preauthorization":
        raise _bad(400, "not-supported", "attachTo must be 'preauthorization': Precert takes attachments for prior authorizations", "Parameters.parameter.where(name='attachTo')")
    if not out["attachments"]:
        raise _bad(400, "required", "at least one attachment is required", "Parameters.parameter")
    # DTR answers sent inside a DocumentReference count as the answers themselves (server.pas.documents).
    out["attachments"] = with_embedded_answers(out["attachments"])
    return out


# Sending attachments for a prior authorization needs what submitting one needs (Claim create) or
# QuestionnaireResponse create, as a DTR client holds.
@operation("submit-attachment", [], SUBMIT_ATTACHMENT_DEFINITION, scopes=(("Claim", "c"), ("QuestionnaireResponse", "c")))
async def submit_attachment(call: OperationCall) -> Response:
    request = call.request
    state = request.app.state.precert
    params = parse(call.body)
    message = await state.services["pas"].submit_attachment(params, Repository.of(request), base_url(request))
    return fhir_response(operation_outcome([issue("informational", message, severity="information")]), 200)
