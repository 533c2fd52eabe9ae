"""Organization isolation: each provider organization sees only its own prior-authorization data.

Resources a SMART client creates are owned by the client's organization (``owner_resolver``). Reads,
vreads, history, updates and deletes of an isolated type owned by someone else answer 404 exactly as
for an id that does not exist (``visibility_hooks``), and searches only ever match the caller's own
resources (``filter_hooks``, a clause on the indexed owner field, so nothing else is even fetched).
Payer staff, and the open sandbox's anonymous callers, are not bound to an organization.
Operations that look data up themselves (``$inquire``) call ``AppState.search_filter`` / ``visible``.
"""

from __future__ import annotations

from server.auth.principal import ANONYMOUS, Principal
from server.storage import StoredResource

ISOLATED_TYPES = frozenset({"Claim", "ClaimResponse", "QuestionnaireResponse", "Task", "Subscription"})


def owner_for(principal: Principal | None) -> str | None:
    return (principal or ANONYMOUS).organization


async def visible(principal: Principal | None, stored: StoredResource) -> bool:
    if stored.type not in ISOLATED_TYPES:
        return True
    org = (principal or ANONYMOUS).organization
    return org is None or stored.owner == org


async def search_filter(principal: Principal | None, rtype: str) -> dict | None:
    if rtype not in ISOLATED_TYPES:
        return None
    org = (principal or ANONYMOUS).organization
    return {"o": org} if org is not None else None


def install_hooks(state) -> None:
    state.owner_resolver = owner_for
    if visible not in state.visibility_hooks:
        state.visibility_hooks.append(visible)
    if search_filter not in state.filter_hooks:
        state.filter_hooks.append(search_filter)
