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
from server.pas.cases import Case
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


def parse_needed(value) -> list[dict]:
    """What a reviewer asks for: each item plain language or a LOINC code (``"11506-3"``), or
    ``{"code": LOINC, "modifier": LOINC attachment modifier, "text": ...}``. Returns
    ``[{"text", "code", "modifier"}]``; raises ValueError naming what is wrong."""
    if not isinstance(value, list) or not value:
        raise ValueError("a list of what is missing (plain language, LOINC codes, or {code, modifier})")
    out = []
    for n in value:
        if isinstance(n, str) and n.strip():
            code = n.strip()
            out.append({"text": code[:500], "code": code if _is_loinc(code) else None, "modifier": None})
        elif isinstance(n, dict) and isinstance(n.get("code"), str) and _is_loinc(n["code"].strip()):
            modifier = n.get("modifier")
            if modifier is not None and not (isinstance(modifier, str) and _is_loinc(modifier.strip())):
                raise ValueError("modifier must be a LOINC attachment modifier code, such as 18804-5")
            text = str(n.get("text") or n["code"]).strip()[:500]
            out.append({"text": text, "code": n["code"].strip(), "modifier": modifier.strip() if modifier else None})
        else:
            raise ValueError("each item is plain language, a LOINC code, or {code: LOINC code, modifier: LOINC code}")
    return out


def _is_loinc(code: str) -> bool:
    head, _, check = code.partition("-")
    return head.isdigit() and check.isdigit() and len(check) == 1


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
    attachments: list = (),
    questionnaire: str | None = None,
    reason: str = "Additional documentation is needed to decide this request.",
) -> tuple[str, dict]:
    """(fullUrl, Task) asking the requesting provider for ``attachments`` (see :func:`parse_needed`)
    and/or the DTR ``questionnaire`` for the given item sequences. A LOINC attachment modifier
    (a time window or item selection: "the most recent", ...) is the ``contentModifier`` of the
    ``attachments-needed`` input in 2.2.1; 2.0.1 allows that extension only on a CommunicationRequest
    payload, so a 2.0.1 Task carries the document code alone and the modifier in words."""
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
        for needed in parse_needed(list(attachments)) if attachments else []:
            concept = {"coding": [{"system": LOINC, "code": needed["code"]}]} if needed["code"] else {"text": needed["text"]}
            if needed["code"] and needed["text"] != needed["code"]:
                concept["text"] = needed["text"]
            extensions = [_line(version, sequence)]
            if needed["modifier"] and version != V201:
                extensions.append({"url": SD + "extension-contentModifier",
                                   "valueCodeableConcept": {"coding": [{"system": LOINC, "code": needed["modifier"]}]}})
            elif needed["modifier"]:
                concept["text"] = f"{needed['text']} (LOINC attachment modifier {needed['modifier']})"
            inputs.append({"extension": extensions, "type": _type("attachments-needed"), "valueCodeableConcept": concept})
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


def stored_task(task: dict, case: Case) -> dict:
    """The Task as the server keeps it: its references point at the stored Claim and Patient of the
    case rather than at entries of the response Bundle; owner and requester by identifier."""
    stored = json.loads(json.dumps(task))
    stored["reasonReference"] = {"reference": f"Claim/{case['claim_id']}"}
    stored["owner"] = {"identifier": task["owner"]["identifier"]}
    stored["requester"] = {"identifier": task["requester"]["identifier"]}
    if case.get("patient_id"):
        stored["for"] = {"reference": f"Patient/{case['patient_id']}"}
    return stored
