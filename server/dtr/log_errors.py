"""``Questionnaire/$log-questionnaire-errors``: DTR clients report problems with Precert's forms
(CQL that fails, value sets that do not expand, broken enableWhen). Reports are stored and listed
for payer staff at ``GET /admin/dtr/questionnaire-errors``.

Accepts both spellings in circulation: ``questionnaire``/``Questionnaire`` and
``operationOutcome``/``OperationOutcome``/``outcome``. Reports SHALL NOT contain PHI (DTR); Precert
keeps only the OperationOutcome issues' severity, code, details, diagnostics and expression, trimmed.
"""

from __future__ import annotations

import uuid

from pymongo import DESCENDING

from questionnaires.catalog import get_catalog
from server.dtr.common import canonical_value, parse_parameters
from server.fhir.errors import FHIRError, bad_request, issue
from server.fhir.operations import OperationCall, operation
from server.fhir.responses import fhir_response
from server.storage import fhir_instant, utcnow

COLLECTION = "dtr_questionnaire_errors"
MAX_ISSUES = 100
MAX_TEXT = 2000

DEFINITION = {
    "resourceType": "OperationDefinition",
    "id": "log-questionnaire-errors",
    "url": "http://hl7.org/fhir/us/davinci-dtr/OperationDefinition/log-questionnaire-errors",
    "version": "2.0.1",
    "name": "LogQuestionnaireErrors",
    "title": "Report errors found in a payer's Questionnaire, Library or ValueSet",
    "status": "active",
    "kind": "operation",
    "code": "log-questionnaire-errors",
    "resource": ["Questionnaire"],
    "system": False,
    "type": True,
    "instance": False,
    "inputProfile": "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/dtr-log-errors-input-parameters",
    "parameter": [
        {"name": "questionnaire", "use": "in", "min": 1, "max": "*", "type": "canonical"},
        {"name": "operationOutcome", "use": "in", "min": 1, "max": "*", "type": "OperationOutcome"},
    ],
}


def _trim(value, limit: int = MAX_TEXT):
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, list):
        return [_trim(v, limit) for v in value[:20]]
    if isinstance(value, dict):
        return {str(k)[:64]: _trim(v, limit) for k, v in list(value.items())[:20]}
    return value


def _issues(outcome: dict, where: str) -> list[dict]:
    raw = outcome.get("issue")
    if not isinstance(raw, list) or not raw:
        raise bad_request("an OperationOutcome must hold at least one issue", where)
    out = []
    for item in raw[:MAX_ISSUES]:
        if not isinstance(item, dict) or not isinstance(item.get("severity"), str) or not isinstance(item.get("code"), str):
            raise bad_request("every issue needs a severity and a code", where)
        out.append({k: _trim(item[k]) for k in ("severity", "code", "details", "diagnostics", "expression", "location") if k in item})
    return out


async def _log(call: OperationCall):
    params = parse_parameters(call.body, "log-questionnaire-errors")
    canonicals, issues = [], []
    for p in params.params:
        where = f"Parameters.parameter[{p.index}]"
        if p.name.lower() == "questionnaire":
            canonicals.append(canonical_value(p))
        elif p.name.lower() in ("operationoutcome", "outcome"):
            if not p.resource or p.resource.get("resourceType") != "OperationOutcome":
                raise bad_request(f"parameter '{p.name}' must hold an OperationOutcome", where)
            issues += _issues(p.resource, where)
    if not canonicals:
        raise FHIRError.single(400, "required", "the 'questionnaire' parameter (the canonical of the form with errors) is required", "Parameters.parameter")
    if not issues:
        raise FHIRError.single(400, "required", "the 'operationOutcome' parameter (the errors found) is required", "Parameters.parameter")
    st = call.request.app.state.precert
    catalog = get_catalog()
    record = {
        "_id": str(uuid.uuid4()),
        "received": utcnow(),
        "questionnaires": canonicals,
        "known": [catalog.template_for(c) is not None for c in canonicals],
        "issues": issues,
        "reporter": st.owner_for(call.request),
        "user_agent": call.request.headers.get("user-agent", "")[:200],
    }
    await st.storage.collection(COLLECTION).insert_one(record)
    unknown = [c for c, k in zip(canonicals, record["known"]) if not k]
    out = [issue("informational", f"logged {len(issues)} issue(s) as report {record['_id']}; Precert's forms team reviews them", None, "information")]
    for c in unknown:
        out.append(issue("not-found", f"{c[:200]} is not a Precert Questionnaire; the report was kept anyway", None, "warning"))
    return fhir_response({"resourceType": "OperationOutcome", "issue": out})


async def recent_reports(app_state, questionnaire: str | None = None, limit: int = 50) -> list[dict]:
    query = {"questionnaires": questionnaire} if questionnaire else {}
    cursor = app_state.storage.collection(COLLECTION).find(query).sort("received", DESCENDING).limit(limit)
    out = []
    async for doc in cursor:
        doc["id"] = doc.pop("_id")
        doc["received"] = fhir_instant(doc["received"])
        out.append(doc)
    return out


operation("log-questionnaire-errors", ("Questionnaire",), DEFINITION, scopes=(("Questionnaire", "r"),))(_log)
