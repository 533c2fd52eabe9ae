"""Resolving the ``context`` of a ``$questionnaire-package`` call: a CRD coverage-assertion-id or a
PAS tracking number, issued earlier by Precert.

CRD and PAS know their own identifiers, so they register a resolver rather than DTR reading their
records. A resolver is ``async fn(app_state, context_id) -> dict | None``; the dict may hold
``questionnaires`` (canonicals the earlier decision asked for), ``orders`` and ``coverage``.
Register with :func:`register_context_resolver` from the capability's ``install(app)`` start-up step.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from cds_hooks.assertions import find_assertion

log = logging.getLogger("precert.dtr")

Resolver = Callable[[object, str], Awaitable[dict | None]]
SERVICE = "dtr_context_resolvers"


def register_context_resolver(app_state, resolver: Resolver) -> None:
    resolvers = app_state.services.setdefault(SERVICE, [])
    if resolver not in resolvers:
        resolvers.append(resolver)


async def resolve_context(app_state, context_id: str) -> dict | None:
    for resolver in list(app_state.services.get(SERVICE, [])):
        try:
            found = await resolver(app_state, context_id)
        except Exception:  # a broken resolver must not break DTR
            log.exception("DTR context resolver %r failed", resolver)
            continue
        if found:
            return found
    return None


async def pas_case_resolver(app_state, context_id: str) -> dict | None:
    """PAS tracking numbers: a pended item's administrative reference is ``{case}-{sequence}`` and
    the case number is the case's id (``server.pas``). The forms are the ones the pended decisions
    asked for."""
    case_id, _, sequence = context_id.rpartition("-") if context_id.count("-") else (context_id, "", "")
    candidates = [context_id] + ([case_id] if case_id and sequence.isdigit() else [])
    doc = await app_state.storage.collection("pas_cases").find_one({"_id": {"$in": candidates}}, {"decisions": 1})
    if not doc:
        return None
    decisions = doc.get("decisions") or []
    if doc["_id"] != context_id and sequence.isdigit():
        decisions = [d for d in decisions if str(d.get("sequence")) == sequence]
    questionnaires = [d["questionnaire"] for d in decisions if isinstance(d, dict) and d.get("questionnaire")]
    return {"source": "pas", "case": doc["_id"], "questionnaires": list(dict.fromkeys(questionnaires))}


async def crd_assertion_resolver(app_state, context_id: str) -> dict | None:
    """CRD coverage-assertion-ids: the forms CRD's decision named (``cds_hooks.assertions.find_assertion``)."""
    found = await find_assertion(app_state.storage, context_id, app_state.services.get("crd"))
    if not found:
        return None
    return {"source": "crd", "questionnaires": list(found.get("questionnaires") or []), "order": found.get("order"),
            "doc_needed": found.get("doc_needed")}
