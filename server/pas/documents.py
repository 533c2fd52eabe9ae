"""Documents sent for a pended line (CDex ``$submit-attachment``, DocumentReference content).

CDex lets a provider answer a request for documentation with a DocumentReference instead of a DTR
QuestionnaireResponse. Two kinds count for a line waiting for documentation:

- a DocumentReference whose attachment is a FHIR QuestionnaireResponse (``application/fhir+json``,
  inline ``data``): the answers inside are the DTR answers, and the line is decided on them exactly as
  if the QuestionnaireResponse had been sent itself (which may certify it at once);
- any other document (a PDF, a C-CDA note, an image): no rule can read it, so the documentation is
  received and the line is pended for a clinician to review the document, no longer waiting for the
  provider (its information-request Task is answered).
"""

from __future__ import annotations

import base64
import binascii
import json

from server.pas.adjudicate import ItemDecision
from server.pas.response import needs_documentation

FHIR_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")


def embedded_answers(document: dict) -> list[dict]:
    """The QuestionnaireResponses a DocumentReference carries inline as FHIR JSON."""
    found = []
    for content in document.get("content") or []:
        att = content.get("attachment") if isinstance(content, dict) else None
        if not isinstance(att, dict) or not isinstance(att.get("data"), str):
            continue
        if str(att.get("contentType") or "").split(";")[0].strip().lower() not in FHIR_JSON_TYPES:
            continue
        try:
            res = json.loads(base64.b64decode(att["data"], validate=True))
        except (ValueError, binascii.Error):
            continue
        if isinstance(res, dict) and res.get("resourceType") == "QuestionnaireResponse":
            found.append(res)
    return found


def with_embedded_answers(attachments: list[dict]) -> list[dict]:
    """The attachments, each DocumentReference followed by the QuestionnaireResponses it carries
    (for the same lines), so that the answers are decided on like any QuestionnaireResponse."""
    out = []
    for att in attachments:
        out.append(att)
        if att["content"].get("resourceType") == "DocumentReference":
            out.extend({"lines": att["lines"], "content": qr, "from_document": True} for qr in embedded_answers(att["content"]))
    return out


def _title(document: dict) -> str:
    for content in document.get("content") or []:
        att = content.get("attachment") if isinstance(content, dict) else None
        if isinstance(att, dict) and att.get("title"):
            return str(att["title"])[:120]
    concept = document.get("type") or {}
    return str(concept.get("text") or next((c.get("display") or c.get("code") for c in concept.get("coding") or [] if isinstance(c, dict)), "")
               or document.get("description") or "a document")[:120]


def received(decision: ItemDecision, attachments: list[dict]) -> ItemDecision:
    """``decision`` (just re-decided) after documents arrived for its line: still waiting for
    documentation but sent a document no rule can read -> received, pended for clinical review."""
    if not needs_documentation(decision):
        return decision
    documents = [a["content"] for a in attachments
                 if a["content"].get("resourceType") == "DocumentReference" and not embedded_answers(a["content"])
                 and (not a["lines"] or decision.sequence in a["lines"])]
    if not documents:
        return decision
    titles = "; ".join(_title(d) for d in documents)
    decision.assessment = {"complete": True, "met": None, "documents": [_title(d) for d in documents]}
    decision.reason = f"Documentation received ({titles}); pended for a clinician to review it."
    decision.trace = decision.trace + ["documentation received as a document: pended for clinical review (A4)"]
    return decision
