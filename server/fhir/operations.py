"""The FHIR operation registry.

Each operation module declares its OperationDefinition beside its handler and registers both here.
The REST router dispatches ``$name`` requests through the registry, and the CapabilityStatement lists
what is registered, so an operation is declared exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[["OperationCall"], Awaitable[Response]]
# In an operation's scopes: the resource type the operation is called on.
SAME_TYPE = "{type}"


@dataclass
class OperationCall:
    request: Request
    resource_type: str | None
    resource_id: str | None
    body: object | None  # parsed JSON for POST, None for GET
    query: list[tuple[str, str]]


@dataclass
class Operation:
    name: str  # without the "$"
    resource_types: tuple[str, ...]  # () for system level
    definition: dict  # the OperationDefinition resource
    handler: Handler
    type_level: bool = True
    instance_level: bool = False
    methods: tuple[str, ...] = ("POST",)
    # The SMART permissions that let a client call it: alternatives of (resource type, letter), any
    # one suffices; SAME_TYPE stands for the type the operation is called on ("*" at system level).
    scopes: tuple[tuple[str, str], ...] = ()

    def scopes_for(self, resource_type: str | None) -> tuple[tuple[str, str], ...]:
        return tuple(((resource_type or "*") if t == SAME_TYPE else t, letter) for t, letter in self.scopes)

    @property
    def canonical(self) -> str:
        return self.definition.get("url", "")


@dataclass
class OperationRegistry:
    operations: list[Operation] = field(default_factory=list)

    def register(self, op: Operation) -> Operation:
        # Registering again (a second app in one process) replaces the earlier declaration.
        self.operations = [o for o in self.operations if not (o.name == op.name and o.resource_types == op.resource_types)]
        self.operations.append(op)
        return op

    def find(self, name: str, resource_type: str | None, instance: bool) -> Operation | None:
        for op in self.operations:
            if op.name != name:
                continue
            if resource_type is None and not op.resource_types:
                return op
            if resource_type in op.resource_types and (op.instance_level if instance else op.type_level):
                return op
        return None

    def for_type(self, resource_type: str) -> list[Operation]:
        return [op for op in self.operations if resource_type in op.resource_types]

    def system_level(self) -> list[Operation]:
        return [op for op in self.operations if not op.resource_types]


registry = OperationRegistry()


def operation(
    name: str,
    resource_types: tuple[str, ...] | list[str],
    definition: dict,
    *,
    type_level: bool = True,
    instance_level: bool = False,
    methods: tuple[str, ...] = ("POST",),
    scopes: tuple[tuple[str, str], ...] = (),
):
    """Decorator registering an operation handler with its definition and the scopes it needs (SMART
    defines no operation scopes: each operation needs the permission on the data it touches)."""

    def wrap(fn: Handler) -> Handler:
        registry.register(
            Operation(name, tuple(resource_types), definition, fn, type_level, instance_level, methods, tuple(scopes))
        )
        return fn

    return wrap
