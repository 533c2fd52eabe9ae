"""The FHIR data one request may see and change.

A :class:`Repository` is built per request from its caller (the principal that authentication put on
the request) over :class:`~server.storage.Storage`. It is the only way the FHIR REST surface reaches
stored resources, so every path that returns data (read, vread, history, search and the resources
that ``_include`` and ``_revinclude`` pull in) passes the same two checks:

* **organization isolation**: the visibility and search-filter hooks that capabilities install on
  :class:`~server.state.AppState` (another organization's Claim answers exactly as a missing one);
* **scope**: a resource is returned only when the caller's scopes let it read that resource type,
  so a token granted ``system/Patient.rs`` gets no ClaimResponse through ``_revinclude``.

Writes run the before- and after-write hooks (ownership, audit, subscriptions) around the storage
call, so no route can forget them.
"""

from __future__ import annotations

from typing import Iterable

from starlette.requests import Request

from server.auth.principal import current_principal
from server.storage import StoredResource


def _and(a: dict | None, b: dict | None) -> dict | None:
    if a and b:
        return {"$and": [a, b]}
    return a or b or None


class Repository:
    def __init__(self, request: Request):
        self.request = request
        self.state = request.app.state.precert
        self.storage = self.state.storage
        self.principal = current_principal(request)

    @classmethod
    def of(cls, request: Request) -> "Repository":
        """The request's repository (one per request)."""
        repo = getattr(request.state, "fhir_repository", None)
        if repo is None:
            repo = cls(request)
            request.state.fhir_repository = repo
        return repo

    # ------------------------------------------------------------------ checks
    def may_read_type(self, rtype: str) -> bool:
        return self.principal.allows(((rtype, "r"), (rtype, "s")))

    async def shows(self, stored: StoredResource) -> bool:
        return self.may_read_type(stored.type) and await self.state.visible(self.request, stored)

    async def isolation_filter(self, rtype: str) -> dict | None:
        return await self.state.search_filter(self.request, rtype)

    # ------------------------------------------------------------------ reads
    async def read(self, rtype: str, rid: str) -> StoredResource | None:
        """The current version (possibly a deletion marker), or None when absent or not the caller's."""
        stored = await self.storage.read(rtype, rid)
        if stored is None or not await self.shows(stored):
            return None
        return stored

    async def vread(self, rtype: str, rid: str, version: int) -> StoredResource | None:
        if await self.read(rtype, rid) is None:
            return None
        return await self.storage.vread(rtype, rid, version)

    async def history(self, rtype: str, rid: str) -> list[StoredResource] | None:
        if await self.read(rtype, rid) is None:
            return None
        return await self.storage.history(rtype, rid)

    async def search(self, rtype: str, criteria: dict | None, *, scoped: bool = True, **kw) -> tuple[list[StoredResource], int | None]:
        """A search of one type, narrowed to what the caller may see; nothing when its scopes deny the type.

        ``scoped=False`` is for a conditional create, whose match the caller never sees: isolation
        still applies, the read scope is not needed.
        """
        if scoped and not self.may_read_type(rtype):
            return [], 0 if kw.get("with_total") else None
        criteria = _and(criteria, await self.isolation_filter(rtype))
        return await self.storage.search(rtype, criteria or {}, **kw)

    async def read_many(self, keys: Iterable[str]) -> list[StoredResource]:
        """Resources by ``Type/id`` (for ``_include``), without any the caller may not see."""
        return [r for r in await self.storage.read_many(keys) if not r.deleted and await self.shows(r)]

    # ------------------------------------------------------------------ writes
    async def create(self, rtype: str, resource: dict) -> StoredResource:
        await self.state.before_write(self.request, rtype, resource)
        stored = await self.storage.create(rtype, resource, owner=self.state.owner_for(self.request))
        await self.state.after_write(self.request, stored, "create")
        return stored

    async def update(self, rtype: str, rid: str, resource: dict, expected: int | None) -> tuple[StoredResource, bool]:
        """Raises VersionConflict from storage; the caller has checked that an existing resource is visible."""
        await self.state.before_write(self.request, rtype, resource)
        stored, created = await self.storage.update(rtype, rid, resource, expected, owner=self.state.owner_for(self.request))
        await self.state.after_write(self.request, stored, "create" if created else "update")
        return stored, created

    async def delete(self, rtype: str, rid: str) -> StoredResource | None:
        deleted = await self.storage.delete(rtype, rid)
        if deleted is not None:
            await self.state.after_write(self.request, deleted, "delete")
        return deleted

    async def existing(self, rtype: str, rid: str) -> tuple[StoredResource | None, bool]:
        """The stored resource at ``rtype/rid`` for a write, and whether the caller may touch it.

        A write to another organization's id answers as if it did not exist (404), never overwrites.
        """
        stored = await self.storage.read(rtype, rid)
        if stored is None:
            return None, True
        return stored, await self.state.visible(self.request, stored)
