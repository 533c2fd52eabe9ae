"""The application's shared state, and the hooks through which capabilities join the FHIR surface.

Routers read ``request.app.state.precert``. Capabilities that need to see or filter FHIR traffic
(organization isolation, the checks on Subscription writes) add themselves to the hook lists at
start-up, and those that react to writes (notifications, caches) listen to ``events``, rather than
being called from the router by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable

from starlette.requests import Request

from server.embedded_db import EmbeddedDatabase
from server.events import EventBus
from server.settings import Settings
from server.storage import Storage, StoredResource

# Isolation hooks are asked about a principal (the caller of a request, or an internal actor), so
# the repository applies them to requests and to internal writers alike.
VisibleHook = Callable[[object, StoredResource], Awaitable[bool]]
FilterHook = Callable[[object, str], Awaitable[dict | None]]
WriteHook = Callable[[Request, str, dict], Awaitable[None]]


@dataclass
class AppState:
    settings: Settings
    storage: Storage
    embedded: EmbeddedDatabase | None = None
    visibility_hooks: list[VisibleHook] = field(default_factory=list)
    filter_hooks: list[FilterHook] = field(default_factory=list)
    before_write_hooks: list[WriteHook] = field(default_factory=list)
    services: dict = field(default_factory=dict)
    # Domain events published by the repository after (or within) its writes.
    events: EventBus = field(default_factory=EventBus)
    # Returns the provider organization a principal acts for (set by authentication), or None.
    owner_resolver: Callable[[object], str | None] | None = None

    def owner_for(self, request: Request) -> str | None:
        return self.owner_of(_principal(request))

    def owner_of(self, principal) -> str | None:
        return self.owner_resolver(principal) if self.owner_resolver else None

    async def visible(self, request: Request, stored: StoredResource) -> bool:
        return await self.visible_to(_principal(request), stored)

    async def visible_to(self, principal, stored: StoredResource) -> bool:
        for hook in self.visibility_hooks:
            if not await hook(principal, stored):
                return False
        return True

    async def search_filter(self, request: Request, rtype: str) -> dict | None:
        return await self.search_filter_for(_principal(request), rtype)

    async def search_filter_for(self, principal, rtype: str) -> dict | None:
        clauses = [c for c in [await hook(principal, rtype) for hook in self.filter_hooks] if c]
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    async def before_write(self, request: Request, rtype: str, resource: dict) -> None:
        for hook in self.before_write_hooks:
            await hook(request, rtype, resource)


def _principal(request: Request):
    """The principal authentication put on the request (None when nobody did)."""
    return getattr(request.state, "principal", None)
