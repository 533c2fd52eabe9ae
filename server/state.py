"""The application's shared state, and the hooks through which capabilities join the FHIR surface.

Routers read ``request.app.state.precert``. Capabilities that need to see or filter FHIR traffic
(organization isolation, audit, subscriptions) add themselves to the hook lists at start-up rather
than being called from the router by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable

from starlette.requests import Request

from server.embedded_db import EmbeddedDatabase
from server.settings import Settings
from server.storage import Storage, StoredResource

VisibleHook = Callable[[Request, StoredResource], Awaitable[bool]]
FilterHook = Callable[[Request, str], Awaitable[dict | None]]
WriteHook = Callable[[Request, str, dict], Awaitable[None]]
AfterWriteHook = Callable[[Request, StoredResource, str], Awaitable[None]]


@dataclass
class AppState:
    settings: Settings
    storage: Storage
    embedded: EmbeddedDatabase | None = None
    visibility_hooks: list[VisibleHook] = field(default_factory=list)
    filter_hooks: list[FilterHook] = field(default_factory=list)
    before_write_hooks: list[WriteHook] = field(default_factory=list)
    after_write_hooks: list[AfterWriteHook] = field(default_factory=list)
    services: dict = field(default_factory=dict)
    # Returns the provider organization a request acts for (set by authentication), or None.
    owner_resolver: Callable[[Request], str | None] | None = None

    def owner_for(self, request: Request) -> str | None:
        return self.owner_resolver(request) if self.owner_resolver else None

    async def visible(self, request: Request, stored: StoredResource) -> bool:
        for hook in self.visibility_hooks:
            if not await hook(request, stored):
                return False
        return True

    async def search_filter(self, request: Request, rtype: str) -> dict | None:
        clauses = [c for c in [await hook(request, rtype) for hook in self.filter_hooks] if c]
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    async def before_write(self, request: Request, rtype: str, resource: dict) -> None:
        for hook in self.before_write_hooks:
            await hook(request, rtype, resource)

    async def after_write(self, request: Request, stored: StoredResource, action: str) -> None:
        for hook in self.after_write_hooks:
            await hook(request, stored, action)
