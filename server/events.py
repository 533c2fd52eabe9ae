"""Domain events: what the repository tells the rest of Precert after it has written FHIR data.

The :class:`~server.fhir.repository.Repository` is the only publisher. It collects the events of a
unit of work while the work runs and hands them to listeners in two phases:

* **in the transaction** (``phase="transaction"``): the listener gets the transaction and writes with
  its session, so what it writes commits or rolls back with the data. The notification outbox is
  such a listener: a decision and the notifications it causes are durable together, and a retried
  transaction queues them once (the attempt that commits is the only one that counts).
* **after commit** (``phase="commit"``, the default): the data is durable; the listener reacts
  (cache invalidation, waking the notification worker, a Subscription's handshake). A failing
  listener is logged and never undoes or fails the write.

Listeners register at start-up (``state.events.on(ResourceWritten, handler)``); the publisher never
names them, so capabilities join without the repository importing them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from server.storage import StoredResource

log = logging.getLogger("precert.events")


@dataclass(frozen=True)
class ResourceWritten:
    """A FHIR resource was created, updated or deleted (``action``)."""

    stored: StoredResource
    action: str  # "create" | "update" | "delete"
    actor: str  # who wrote it: a client id, a staff username, or an internal actor
    base: str | None = None  # the FHIR base URL of the request that wrote it (None for internal actors)
    name = "resource_written"


@dataclass(frozen=True)
class CaseDecided:
    """A prior-authorization case has a new determination; ``response`` is the PAS response Bundle."""

    case: dict
    response: dict
    actor: str
    name = "case_decided"



@dataclass
class EventBus:
    """In-process listeners by event type and phase."""

    _listeners: dict[tuple[type, str], list[Callable]] = field(default_factory=dict)

    def on(self, event_type: type, handler: Callable, *, phase: str = "commit") -> None:
        """Call ``handler`` for every event of ``event_type``: ``await handler(event)`` after commit, or
        ``await handler(event, tx)`` inside the writing transaction (``phase="transaction"``)."""
        if phase not in ("commit", "transaction"):
            raise ValueError(f"unknown phase {phase!r}")
        handlers = self._listeners.setdefault((event_type, phase), [])
        if handler not in handlers:
            handlers.append(handler)

    def listeners(self, event_type: type, phase: str) -> list[Callable]:
        return list(self._listeners.get((event_type, phase), ()))

    async def in_transaction(self, events: list, tx) -> None:
        """Run the transactional listeners; an exception aborts the transaction (nothing commits)."""
        for event in events:
            for handler in self.listeners(type(event), "transaction"):
                await handler(event, tx)

    async def after_commit(self, events: list) -> None:
        for event in events:
            for handler in self.listeners(type(event), "commit"):
                try:
                    await handler(event)
                except Exception:  # the data is committed; a listener's failure must not fail the write
                    log.exception("listener of %s failed", event.name)
