"""The PAS information-request Task: what the payer still needs before it can decide.

The Task follows the Task profile of the version answered; the two versions name the same things
differently (2.0.1 ``paLineNumber`` and ``questionnaires-needed``, an Identifier; 2.2.1
``serviceLineNumber`` and ``questionnaire-context``, a string). Every reference it makes
(``for``, ``owner``, ``requester``, ``reasonReference``) is to an entry of the response Bundle.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from server.pas.constants import PAS_TEMP, PROFILE_TASK, SD, V201
from server.pas.request import PasBundle
from server.pas.response import Echo
from server.storage import fhir_instant, utcnow

CASE_SYSTEM = "http://precert.example.org/sid/case"
PAYER_SYSTEM = "http://precert.example.org/sid/payer-id"
PAYER_ID = "PRECERT01"
LOINC = "http://loinc.org"


def _line(version: str, sequence: int) -> dict:
    # 2.0.1's paLineNumber is an integer; 2.2.1's serviceLineNumber a positiveInt.
    if version == V201:
        return {"url": SD + "extension-paLineNumber", "valueInteger": sequence}
    return {"url": SD + "extension-serviceLineNumber", "valuePositiveInt": sequence}


def _type(code: str) -> dict:
    return {"coding": [{"system": PAS_TEMP, "code": code}]}


def information_request_task(
    pas: PasBundle,
    echo: Echo,
    *,
    version: str,
    case_id: str,
    base: str,
    due: datetime | None,
    lines: list[int],
    attachments: list[str] = (),
    questionnaire: str | None = None,
    reason: str = "Additional documentation is needed to decide this request.",
) -> tuple[str, dict]:
    """(fullUrl, Task) asking the requesting provider for ``attachments`` (LOINC codes, or plain
    language) and/or the DTR ``questionnaire`` for the given item sequences."""
    claim = pas.claim
    task_id = str(uuid.uuid4())
    provider_entry = pas.resolve(claim.get("provider"), pas.claim_entry)
    provider = provider_entry.resource if provider_entry else {}
    provider_ident = next((i for i in provider.get("identifier") or [] if isinstance(i, dict) and i.get("value")), None)
    insurer = echo.ref(claim.get("insurer"))
    patient = echo.ref(claim.get("patient"))
    owner: dict = {}
    if provider_entry is not None:
        owner = {"reference": provider_entry.full_url}
        echo.add(provider_entry)
    owner["identifier"] = provider_ident or {"system": "urn:ietf:rfc:3986", "value": provider_entry.full_url if provider_entry else "unknown"}
    requester = {**(insurer or {}), "identifier": {"system": PAYER_SYSTEM, "value": PAYER_ID}}
    lines = lines or [1]
    inputs: list[dict] = [{"type": _type("payer-url"), "valueUrl": f"{base}/$submit-attachment"}]
    for sequence in lines:
        for needed in attachments:
            code = needed.strip()
            concept = {"coding": [{"system": LOINC, "code": code}]} if code.replace("-", "").isdigit() else {"text": code[:500]}
            inputs.append({"extension": [_line(version, sequence)], "type": _type("attachments-needed"), "valueCodeableConcept": concept})
        if questionnaire:
            if version == V201:
                inputs.append({"extension": [_line(version, sequence)], "type": _type("questionnaires-needed"),
                               "valueIdentifier": {"system": "urn:ietf:rfc:3986", "value": questionnaire.split("|")[0]}})
            else:
                inputs.append({"extension": [_line(version, sequence)], "type": _type("questionnaire-context"),
                               "valueString": f"{case_id}-{sequence}"})
    task: dict = {
        "resourceType": "Task",
        "id": task_id,
        "meta": {"profile": [PROFILE_TASK]},
        "identifier": [{"system": CASE_SYSTEM, "value": case_id}],
        "status": "requested",
        "statusReason": {"text": reason[:500]},
        "intent": "order",
        "code": _type("attachment-request-questionnaire" if questionnaire and not attachments else "attachment-request-code"),
        "for": patient or claim.get("patient"),
        "authoredOn": fhir_instant(utcnow()),
        "requester": requester,
        "owner": owner,
        "reasonCode": _type("priorAuthorization"),
        "reasonReference": {"reference": pas.claim_entry.full_url if pas.claim_entry else ""},
        "input": inputs,
    }
    if due is not None:
        task["restriction"] = {"period": {"end": fhir_instant(due)}}
    return f"urn:uuid:{task_id}", task


def stored_task(task: dict, case: dict) -> dict:
    """The Task as the server keeps it: its references point at the stored Claim and Patient of the
    case rather than at entries of the response Bundle; owner and requester by identifier."""
    stored = json.loads(json.dumps(task))
    stored["reasonReference"] = {"reference": f"Claim/{case['claim_id']}"}
    stored["owner"] = {"identifier": task["owner"]["identifier"]}
    stored["requester"] = {"identifier": task["requester"]["identifier"]}
    if case.get("patient_id"):
        stored["for"] = {"reference": f"Patient/{case['patient_id']}"}
    return stored
