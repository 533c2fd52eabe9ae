"""``QuestionnaireResponse/$validate`` for DTR responses: is it complete and well-formed against its
Precert form, and do the answers meet the payer's criteria? The same checks PAS applies when the
response arrives with a prior-authorization request, offered before submission.

Body: a QuestionnaireResponse, or Parameters with it in ``resource``. Answer: 200 with an
OperationOutcome: the checker's errors and warnings, then information issues with the criteria
assessment. Errors in the QuestionnaireResponse are findings, not a failed call.
"""

from __future__ import annotations

from questionnaires.catalog import get_catalog
from questionnaires.checker import check_response
from questionnaires.criteria import _template_for, assess
from server.dtr.common import parse_parameters
from server.fhir.errors import FHIRError, bad_request, issue
from server.fhir.operations import OperationCall, operation
from server.fhir.responses import fhir_response

DEFINITION = {
    "resourceType": "OperationDefinition",
    "id": "QuestionnaireResponse-validate",
    "url": "http://precert.example.org/fhir/OperationDefinition/QuestionnaireResponse-validate",
    "name": "ValidateDocumentation",
    "title": "Check a DTR QuestionnaireResponse against its form and the payer's criteria",
    "status": "active",
    "kind": "operation",
    "code": "validate",
    "base": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    "resource": ["QuestionnaireResponse"],
    "system": False,
    "type": True,
    "instance": False,
    "parameter": [
        {"name": "resource", "use": "in", "min": 1, "max": "1", "type": "QuestionnaireResponse"},
        {"name": "return", "use": "out", "min": 1, "max": "1", "type": "OperationOutcome"},
    ],
}


def feedback(qr: dict) -> dict:
    catalog = get_catalog()
    canonical, template = _template_for(qr, catalog)
    if template is None:
        raise FHIRError.single(422, "not-found", f"{str(canonical)[:200] or 'the QuestionnaireResponse'} does not answer a Precert form", "QuestionnaireResponse.questionnaire")
    issues = check_response(qr, template.questionnaire)
    result = assess(qr)
    if result.complete and result.met:
        issues.append(issue("informational", f"complete; the answers meet Precert's criteria for {template.title}", None, "information"))
    elif result.complete:
        for text in result.unmet:
            issues.append(issue("business-rule", f"criterion not met: {text}", None, "information"))
    else:
        issues.append(issue("incomplete", f"incomplete: {len(result.missing)} required question(s) unanswered; criteria not assessed", None, "information"))
    if not issues:
        issues.append(issue("informational", "no issues", None, "information"))
    return {"resourceType": "OperationOutcome", "issue": issues}


async def _validate(call: OperationCall):
    body = call.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        params = parse_parameters(body, "validate")
        found = [p.resource for p in params.params if p.name == "resource" and p.resource]
        if len(found) != 1:
            raise bad_request("$validate takes one 'resource' parameter holding the QuestionnaireResponse", "Parameters.parameter")
        body = found[0]
    if not isinstance(body, dict) or body.get("resourceType") != "QuestionnaireResponse":
        rtype = body.get("resourceType") if isinstance(body, dict) else None
        raise bad_request(f"QuestionnaireResponse/$validate takes a QuestionnaireResponse, not {str(rtype)[:40] if rtype else 'this body'}")
    return fhir_response(feedback(body))


operation("validate", ("QuestionnaireResponse",), DEFINITION, scopes=(("Questionnaire", "r"), ("QuestionnaireResponse", "c")))(_validate)
