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
