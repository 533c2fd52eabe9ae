"""The FHIR data one caller may see and change: the only way into :class:`~server.storage.Storage`.

A :class:`Repository` is built for one principal: the caller of a request (``Repository.of(request)``,
from what authentication put on it), a signed-in staff member acting outside ``/fhir``
(``Repository.acting``), or an internal actor with an explicit name (``Repository.system``: the
decision clock, the notification worker, the start-up loaders). Every read and every write of FHIR
data passes through one, so the same rules apply everywhere:

* **organization isolation**: the visibility and search-filter hooks that capabilities install on
  :class:`~server.state.AppState` (another organization's Claim answers exactly as a missing one);
  a write is owned by the principal's organization, and an update that would touch another
  organization's resource is refused (and, in a transaction, rolls back everything);
* **scope**: a resource is returned only when the principal's scopes let it read that resource type
  (so ``system/Patient.rs`` gets no ClaimResponse through ``_revinclude``); a write needs the scope
  the unit of work declares (PAS ``$submit`` creates Claim, ClaimResponse and Task under
  ``system/Claim.c``) or, for payer staff, one of the roles it declares;
* **audit**: each resource written is recorded (who, what, which interaction, why) once committed;
* **events**: after commit, a :class:`~server.events.ResourceWritten` for each resource and whatever
  domain events the work emitted (:class:`~server.events.CaseDecided`) go to their listeners;
  transactional listeners (the notification outbox) run inside the transaction instead.

Writes that span several records (a case and its Claim, ClaimResponse and Task) run in
:meth:`Repository.transaction`, which hands the work a :class:`Transaction` bound to one database
session; domain records of their own (``pas_cases``) are written with ``tx.session``.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Iterable, Sequence, TypeVar

from pymongo.errors import DuplicateKeyError
from starlette.requests import Request

from server.auth.audit import agent_of
from server.auth.principal import Principal, current_principal, system_principal
from server.events import ResourceWritten
from server.fhir.errors import FHIRError
from server.fhir.responses import base_url
from server.storage import StoredResource, VersionConflict

T = TypeVar("T")
Permission = tuple[str, str]


def _and(a: dict | None, b: dict | None) -> dict | None:
    if a and b:
        return {"$and": [a, b]}
    return a or b or None


def _forbidden(message: str) -> FHIRError:
    return FHIRError.single(403, "forbidden", message)


class Repository:
    def __init__(self, state, principal: Principal, *, request: Request | None = None, base: str | None = None):
        self.state = state
        self.storage = state.storage
        self.principal = principal
        self.request = request
        self._base = base

    @property
    def base(self) -> str | None:
        """The FHIR base URL of the request (or the one given), for the events of its writes."""
        if self._base is None and self.request is not None:
            self._base = base_url(self.request)
        return self._base

    @classmethod
    def of(cls, request: Request) -> "Repository":
        """The request's repository (one per request), for the principal authentication set."""
        repo = getattr(request.state, "fhir_repository", None)
        if repo is None:
            repo = cls(request.app.state.precert, current_principal(request), request=request)
            request.state.fhir_repository = repo
        return repo

    @classmethod
    def acting(cls, state, principal: Principal, *, base: str | None = None, request: Request | None = None) -> "Repository":
        """A repository for ``principal`` outside the FHIR surface (a reviewer deciding a case)."""
        return cls(state, principal, request=request, base=base)

    @classmethod
    def system(cls, state, actor: str, *, base: str | None = None) -> "Repository":
        """A repository for one of Precert's own actors, named for the audit trail. It is bound to no
        organization: what it creates is owned by the ``owner`` its transaction names."""
        return cls(state, system_principal(actor), base=base)

    @property
    def organization(self) -> str | None:
        return self.state.owner_of(self.principal)

    # ------------------------------------------------------------------ checks
    def may_read_type(self, rtype: str) -> bool:
        return self.principal.allows(((rtype, "r"), (rtype, "s")))

    async def visible(self, stored: StoredResource) -> bool:
        """Whether the principal's organization may see ``stored`` at all (isolation only)."""
        return await self.state.visible_to(self.principal, stored)

    async def shows(self, stored: StoredResource) -> bool:
        return self.may_read_type(stored.type) and await self.visible(stored)

    async def isolation_filter(self, rtype: str) -> dict | None:
        return await self.state.search_filter_for(self.principal, rtype)

    def authorize_write(self, requires: Sequence[Permission] = (), roles: Sequence[str] = ()) -> None:
        """Refuse (403) a write the principal may not make: a client needs one of ``requires``, a
        staff member one of ``roles`` (staff change data only where a unit of work names a role)."""
        who = self.principal
        if who.kind == "client" and requires and not who.allows(requires):
            raise _forbidden("the access token does not grant " + " or ".join(f"system/{t}.{letter}" for t, letter in requires))
        if who.kind == "staff" and not (roles and who.staff.has(*roles)):
            raise _forbidden("payer staff change prior-authorization data only through the review actions their role allows")

    # ------------------------------------------------------------------ reads
    async def read(self, rtype: str, rid: str, *, scoped: bool = True) -> StoredResource | None:
        """The current version (possibly a deletion marker), or None when absent or not the caller's.

        ``scoped=False``, as for :meth:`search`, is for a look-up on the caller's behalf (a value set
        an operation expands): isolation still applies, the read scope is not needed. Reads are not
        audited (only writes are), so a look-up adds no audit record and no query beyond its own.
        """
        stored = await self.storage.read(rtype, rid)
        if stored is None or not await (self.shows(stored) if scoped else self.visible(stored)):
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

        ``scoped=False`` is for a look-up whose matches the caller never sees (a conditional create,
        the member look-up of ``$submit``): isolation still applies, the read scope is not needed.
        """
        if scoped and not self.may_read_type(rtype):
            return [], 0 if kw.get("with_total") else None
        criteria = _and(criteria, await self.isolation_filter(rtype))
        return await self.storage.search(rtype, criteria or {}, **kw)

    async def read_many(self, keys: Iterable[str], *, scoped: bool = True) -> list[StoredResource]:
        """Resources by ``Type/id`` (for ``_include``), without any the caller may not see."""
        check = self.shows if scoped else self.visible
        return [r for r in await self.storage.read_many(keys) if not r.deleted and await check(r)]

    async def existing(self, rtype: str, rid: str) -> tuple[StoredResource | None, bool]:
        """The stored resource at ``rtype/rid`` for a write, and whether the caller may touch it.

        A write to another organization's id answers as if it did not exist (404), never overwrites.
        """
        stored = await self.storage.read(rtype, rid)
        if stored is None:
            return None, True
        return stored, await self.visible(stored)

    # ------------------------------------------------------------------ single writes (FHIR REST)
    async def create(self, rtype: str, resource: dict) -> StoredResource:
        await self.state.before_write(self.request, rtype, resource)
        return await self._single(lambda tx: tx.create(rtype, resource), rtype, "c", "create")

    async def update(self, rtype: str, rid: str, resource: dict, expected: int | None) -> tuple[StoredResource, bool]:
        """Raises VersionConflict from storage; the caller has checked that an existing resource is visible."""
        await self.state.before_write(self.request, rtype, resource)
        box: dict = {}

        async def work(tx: "Transaction"):
            box["created"] = await tx.upsert(rtype, rid, resource, expected)
            return tx.written[-1][0]

        stored = await self._single(work, rtype, "u", "update")
        return stored, box["created"]

    async def delete(self, rtype: str, rid: str) -> StoredResource | None:
        return await self._single(lambda tx: tx.delete(rtype, rid), rtype, "d", "delete")

    async def _single(self, work: Callable[["Transaction"], Awaitable[T]], rtype: str, letter: str, interaction: str) -> T:
        """One write of the FHIR REST surface (whose route declared its scope; a client's token is
        checked again here). It needs no transaction of its own unless a listener must join one."""
        if self.principal.kind == "client":
            self.authorize_write(((rtype, letter),))
        if self.state.events.listeners(ResourceWritten, "transaction"):
            return await self.transaction(work, reason=f"FHIR {interaction}")
        tx = Transaction(self, None, self.organization)
        result = await work(tx)
        await self._committed(tx, f"FHIR {interaction}")
        return result

    # ------------------------------------------------------------------ units of work
    async def transaction(self, work: Callable[["Transaction"], Awaitable[T]], *, requires: Sequence[Permission] = (),
                          roles: Sequence[str] = (), owner: str | None = None, reason: str = "") -> T:
        """Run ``await work(tx)`` in one database transaction (retried on transient conflicts).

        ``requires`` (client scopes, any one) and ``roles`` (staff roles, any one) authorize it.
        What it creates is owned by the principal's organization; a principal bound to none (staff,
        an internal actor) names the ``owner`` (the case's organization). Only the attempt that
        commits is audited and published.
        """
        self.authorize_write(requires, roles)
        org = self.organization
        if org is not None and owner is not None and owner != org:
            raise FHIRError.single(404, "not-found", "no such prior-authorization request of your organization")
        attempt: dict = {}

        async def run(session):
            tx = attempt["tx"] = Transaction(self, session, org if org is not None else owner)
            result = await work(tx)
            await self.state.events.in_transaction(tx.events_with_writes(), tx)
            return result

        result = await self.storage.transaction(run)
        await self._committed(attempt["tx"], reason)
        return result

    async def put(self, rtype: str, rid: str, resource: dict, if_match: int | None = None, *, owner: str | None = None,
                  reason: str = "") -> StoredResource:
        """Write one resource at its id as an internal actor (a loader, the notification worker):
        no client checks of its content, but isolation, audit and events as for any write."""
        try:
            return await self.transaction(lambda tx: tx.update(rtype, rid, resource, if_match), owner=owner, reason=reason)
        except DuplicateKeyError:  # created by someone else at the same moment
            raise VersionConflict(None) from None

    async def add(self, rtype: str, rid: str, resource: dict, *, owner: str | None = None, reason: str = "") -> StoredResource:
        """Create one resource at its id as an internal actor, only if nothing is there yet
        (VersionConflict otherwise), so loaders starting together in several workers write it once."""
        try:
            return await self.transaction(lambda tx: tx.create(rtype, resource, rid=rid), owner=owner, reason=reason)
        except DuplicateKeyError:
            raise VersionConflict(None) from None

    async def _committed(self, tx: "Transaction", reason: str) -> None:
        self._audit(tx.written, reason)
        await self.state.events.after_commit(tx.events_with_writes())

    def _audit(self, written: list[tuple[StoredResource, str]], reason: str) -> None:
        svc = self.state.services.get("auth")
        if svc is None or not written:
            return
        ip = self.request.client.host if self.request is not None and self.request.client else None
        agent = agent_of(self.principal, ip)
        method = self.request.method if self.request is not None else ""
        path = self.request.url.path if self.request is not None else ""
        for stored, action in written:
            svc.audit.record(kind="rest", agent=agent, status=201 if action == "create" else 200, method=method, path=path,
                             interaction=action, resource_type=stored.type, resource_id=stored.id, description=reason)


class Transaction:
    """The writes of one unit of work, bound to its database session (None for a single write)."""

    def __init__(self, repo: Repository, session, owner: str | None):
        self.repo = repo
        self.session = session
        self.owner = owner
        self.written: list[tuple[StoredResource, str]] = []
        self.events: list = []

    @property
    def state(self):
        return self.repo.state

    def emit(self, event) -> None:
        """Publish a domain event with this unit of work (after commit; transactional listeners now)."""
        self.events.append(event)

    def events_with_writes(self) -> list:
        actor = self.repo.principal.agent_id
        return [ResourceWritten(s, a, actor, self.repo.base) for s, a in self.written] + self.events

    async def create(self, rtype: str, resource: dict, rid: str | None = None) -> StoredResource:
        stored = await self.repo.storage.create(rtype, resource, rid=rid, owner=self.owner, session=self.session)
        self.written.append((stored, "create"))
        return stored

    async def create_many(self, items: list[tuple[str, dict, str]]) -> list[StoredResource]:
        """Several new resources, (type, resource, id) each, in one round trip."""
        stored = await self.repo.storage.create_many(items, owner=self.owner, session=self.session)
        self.written.extend((s, "create") for s in stored)
        return stored

    async def upsert(self, rtype: str, rid: str, resource: dict, if_match: int | None = None) -> bool:
        """Update (or create at this id); returns whether it created. A resource of another
        organization is refused (404), and in a transaction nothing of the work is kept."""
        stored, created = await self.repo.storage.update(rtype, rid, resource, if_match, owner=self.owner, session=self.session)
        if not await self.repo.visible(stored):
            raise FHIRError.single(404, "not-found", f"{rtype}/{rid} is not known")
        self.written.append((stored, "create" if created else "update"))
        return created

    async def update(self, rtype: str, rid: str, resource: dict, if_match: int | None = None) -> StoredResource:
        await self.upsert(rtype, rid, resource, if_match)
        return self.written[-1][0]

    async def delete(self, rtype: str, rid: str) -> StoredResource | None:
        """A logical delete (in its own storage transaction: deletes are single REST writes)."""
        deleted = await self.repo.storage.delete(rtype, rid)
        if deleted is not None:
            self.written.append((deleted, "delete"))
        return deleted

    async def search(self, rtype: str, criteria: dict | None, **kw) -> tuple[list[StoredResource], int | None]:
        """A look-up for the work (isolation applies; the work, not the caller, sees the matches)."""
        return await self.repo.search(rtype, criteria, scoped=False, **kw)
