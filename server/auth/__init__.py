"""Security: SMART Backend Services, organization isolation, payer staff, audit.

What other capabilities use::

    from server.auth import require_staff, current_principal, enforcing, requires
"""

from server.auth.policy import Requirement, requires, smart, staff  # noqa: F401
from server.auth.principal import Principal, current_principal  # noqa: F401
from server.auth.staff import StaffPrincipal, require_staff  # noqa: F401


def enforcing(request) -> bool:
    """True when this server requires authentication (production, or PRECERT_REQUIRE_AUTH=true)."""
    svc = request.app.state.precert.services.get("auth")
    return bool(svc and svc.enforcing)


def audit(request, **entry) -> None:
    """Record an audit entry from another capability (e.g. CDS Hooks after verifying the EHR's JWT):
    ``audit(request, agent={"kind": "ehr", "id": iss}, status=200, path=..., description=...)``."""
    svc = request.app.state.precert.services.get("auth")
    if svc is not None:
        svc.audit.record(kind=entry.pop("kind", "rest"), **entry)
