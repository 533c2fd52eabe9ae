"""Who a request acts for. The authentication middleware puts one on ``request.state.principal``."""

from __future__ import annotations

from dataclasses import dataclass

from server.auth.clients import Client
from server.auth.scopes import Permissions
from server.auth.staff import StaffPrincipal


@dataclass
class Principal:
    kind: str  # "client" | "staff" | "anonymous" | "system"
    client: Client | None = None
    staff: StaffPrincipal | None = None
    permissions: Permissions | None = None
    token_id: str | None = None
    actor: str | None = None  # "system": the internal actor (decision clock, notification worker, loader)

    @property
    def organization(self) -> str | None:
        """The owner tag (``system|value``) of the provider organization this request acts for."""
        return self.client.owner if self.client is not None else None

    @property
    def agent_id(self) -> str:
        if self.client is not None:
            return self.client.client_id
        if self.staff is not None:
            return self.staff.username
        if self.actor is not None:
            return self.actor
        return "anonymous"

    def allows(self, alternatives) -> bool:
        if self.kind in ("anonymous", "system"):
            return True
        if self.kind == "staff":
            # Staff may read and search through the FHIR API; they change data through the review
            # and admin surfaces.
            return any(letter in ("r", "s") for _, letter in alternatives)
        return self.permissions is not None and any(self.permissions.allows(t, letter) for t, letter in alternatives)


ANONYMOUS = Principal("anonymous")


def system_principal(actor: str) -> Principal:
    """An internal actor of Precert itself, bound to no organization; it writes with an explicit owner."""
    return Principal("system", actor=actor)


def current_principal(request) -> Principal:
    """The principal of a request (anonymous when authentication is not enforced and none was given)."""
    return getattr(request.state, "principal", None) or ANONYMOUS
