"""Which credential each route needs: the route -> requirement table.

Every route the app serves resolves to exactly one :class:`Requirement`:

* ``/fhir/...`` paths are derived from the FHIR interaction they are (read ``r``, search ``s``,
  create ``c``, update ``u``, delete ``d`` on the path's resource type), and FHIR operations from
  :data:`OPERATION_SCOPES` or, for an operation nobody declared, from the HTTP method (``GET`` reads,
  ``POST`` needs ``c``) on the operation's type (``*`` at system level). So an operation another
  capability registers is protected the moment it exists.
* Other paths come from :data:`ROUTES` (exact templates) or :data:`PREFIXES`; capabilities may add
  their own with :func:`declare` from their ``install(app)``.

A route that resolves to nothing is an error: the table-driven test over ``app.routes`` fails, and
at run time an enforcing server refuses the request (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass

PUBLIC = "public"  # no credential, ever
SMART = "smart"  # SMART Backend Services bearer token with a scope (or payer staff, read-only)
STAFF = "staff"  # payer staff session; roles checked here when given
DELEGATED = "delegated"  # the route authenticates its caller itself (CDS Hooks EHR JWT)
DOCS = "docs"  # API documentation: open in sandbox, staff in an enforcing server

ROLES = ("reviewer", "medical-director", "administrator")


@dataclass(frozen=True)
class Requirement:
    kind: str
    # SMART: alternatives, each (resource type or "*", letter); any one suffices.
    permissions: tuple[tuple[str, str], ...] = ()
    # STAFF: any one of these roles ("" = any staff member).
    roles: tuple[str, ...] = ()
    # STAFF routes that stay strict even in an open sandbox (security configuration, audit).
    always: bool = False
    # Whether the route touches protected health information (audited).
    phi: bool = True
    interaction: str = ""  # FHIR restful interaction or "operation", for audit
    resource_type: str | None = None
    resource_id: str | None = None
    operation: str | None = None

    def describe(self) -> str:
        if self.kind == SMART:
            return " or ".join(f"system/{t}.{letter}" for t, letter in self.permissions)
        if self.kind == STAFF:
            return "payer staff" + (f" ({' or '.join(self.roles)})" if self.roles else "")
        return self.kind


def smart(rtype: str, letter: str, *alternatives: tuple[str, str], **kw) -> Requirement:
    return Requirement(SMART, ((rtype, letter), *alternatives), **kw)


def staff(*roles: str, always: bool = False, phi: bool = True) -> Requirement:
    return Requirement(STAFF, roles=tuple(roles), always=always, phi=phi)


PUBLIC_REQ = Requirement(PUBLIC, phi=False)
DELEGATED_REQ = Requirement(DELEGATED)
DOCS_REQ = Requirement(DOCS, phi=False)
AUDIT_REQ = staff("administrator", always=True)

# Resource types whose content is knowledge (forms, value sets, rules), not patient data: reads of
# them are not PHI accesses and are not audited.
KNOWLEDGE_TYPES = frozenset({"Questionnaire", "Library", "ValueSet", "CodeSystem"})

# FHIR operations -> the permission they imply: (type, operation) -> alternatives of (type, letter).
# SMART defines no operation scopes; each operation needs the permission on the data it touches.
OPERATION_SCOPES: dict[tuple[str | None, str], tuple[tuple[str, str], ...]] = {
    # PAS: submitting a prior-authorization request creates a Claim.
    ("Claim", "submit"): (("Claim", "c"),),
    # PAS: an inquiry reads the ClaimResponses of earlier requests. It is a read, so a client with
    # read access to Claims or ClaimResponses may inquire; a write-only client may not.
    ("Claim", "inquire"): (("ClaimResponse", "r"), ("Claim", "r")),
    # DTR: fetching and filling forms reads knowledge artifacts (DTR names system/Questionnaire.rs).
    ("Questionnaire", "questionnaire-package"): (("Questionnaire", "r"),),
    ("Questionnaire", "next-question"): (("Questionnaire", "r"),),
    ("QuestionnaireResponse", "next-question"): (("Questionnaire", "r"),),
    (None, "next-question"): (("Questionnaire", "r"),),
    (None, "questionnaire-package"): (("Questionnaire", "r"),),
    # Checking answers against a form: a DTR client (Questionnaire.rs), or one that may store them.
    ("QuestionnaireResponse", "validate"): (("Questionnaire", "r"), ("QuestionnaireResponse", "c")),
    ("Questionnaire", "log-questionnaire-errors"): (("Questionnaire", "r"),),
    ("Questionnaire", "populate"): (("Questionnaire", "r"),),
    ("ValueSet", "expand"): (("ValueSet", "r"),),
    ("ValueSet", "validate-code"): (("ValueSet", "r"),),
    ("CodeSystem", "lookup"): (("CodeSystem", "r"),),
    ("Library", "data-requirements"): (("Library", "r"),),
    # Subscriptions backport.
    ("Subscription", "status"): (("Subscription", "r"),),
    ("Subscription", "events"): (("Subscription", "r"),),
    ("Subscription", "get-ws-binding-token"): (("Subscription", "r"),),
}

# Exact non-FHIR route templates -> requirement (any method unless the key has one).
ROUTES: dict[tuple[str, str], Requirement] = {
    ("GET", "/health/live"): PUBLIC_REQ,
    ("GET", "/health/ready"): PUBLIC_REQ,
    ("GET", "/.well-known/smart-configuration"): PUBLIC_REQ,
    ("GET", "/fhir/.well-known/smart-configuration"): PUBLIC_REQ,
    ("GET", "/fhir/metadata"): PUBLIC_REQ,
    ("POST", "/auth/token"): PUBLIC_REQ,
    ("POST", "/staff/login"): PUBLIC_REQ,
    ("GET", "/cds-services"): PUBLIC_REQ,
    # CMS-0057-F: the list of services that need prior authorization is published openly.
    ("GET", "/rules/prior-auth-list"): PUBLIC_REQ,
    ("GET", "/docs"): DOCS_REQ,
    ("GET", "/docs/oauth2-redirect"): DOCS_REQ,
    ("GET", "/openapi.json"): DOCS_REQ,
}

# Path prefixes -> requirement, longest first.
PREFIXES: list[tuple[str, Requirement]] = [
    ("/staff/", staff(always=True, phi=False)),
    ("/admin/auth/", staff("administrator", always=True, phi=False)),
    ("/admin/audit", AUDIT_REQ),
    ("/admin/", staff("administrator")),
    ("/review/", staff()),
    ("/review", staff()),
    ("/cds-services/", DELEGATED_REQ),
]

_DECLARED: dict[tuple[str, str], Requirement] = {}
_DECLARED_TEMPLATES: list[tuple[str, object, Requirement]] = []  # (method, compiled path regex, requirement)


def declare(path: str, methods, requirement: Requirement) -> None:
    """Declare the requirement of a non-FHIR route (call from ``install(app)``). ``path`` is the
    route's template, e.g. ``/dtr/launch/{session_id}``."""
    from starlette.routing import compile_path

    for method in methods:
        _DECLARED[(method.upper(), path)] = requirement
        if "{" in path:
            _DECLARED_TEMPLATES.append((method.upper(), compile_path(path)[0], requirement))


def iter_routes(app):
    """(path template, methods) of every HTTP route the app serves, however FastAPI nests them."""
    def walk(routes):
        for route in routes:
            if hasattr(route, "effective_candidates"):  # FastAPI's lazily included routers
                yield from walk(route.effective_candidates())
                continue
            original = getattr(route, "original_route", route)
            path = getattr(route, "path", None) or getattr(original, "path", None)
            if hasattr(original, "routes") and not hasattr(original, "methods") and getattr(original, "app", None) is None:
                yield from walk(original.routes)
                continue
            if path is None:
                continue
            yield path, tuple(sorted(getattr(original, "methods", None) or ("GET",)))

    yield from walk(app.router.routes)


def _fhir(method: str, path: str) -> Requirement:
    parts = [p for p in path[len("/fhir"):].split("/") if p]
    letter_for = {"GET": "r", "HEAD": "r", "POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}.get(method, "c")
    if not parts:
        return smart("*", "s" if method == "GET" else "c", interaction="system")
    head = parts[0]
    if parts == ["metadata"] or parts == [".well-known", "smart-configuration"]:
        return PUBLIC_REQ
    if head == "AuditEvent":
        return AUDIT_REQ
    if head.startswith("$"):
        return _operation(None, None, head[1:], method)
    if head == "_history":
        return smart("*", "s", interaction="history-system")
    rtype = head
    phi = rtype not in KNOWLEDGE_TYPES
    if len(parts) == 1:
        if method in ("GET", "HEAD"):
            return smart(rtype, "s", interaction="search-type", resource_type=rtype, phi=phi)
        return smart(rtype, "c", interaction="create", resource_type=rtype, phi=phi)
    second = parts[1]
    if second == "_search":
        return smart(rtype, "s", interaction="search-type", resource_type=rtype, phi=phi)
    if second == "_history":
        return smart(rtype, "s", interaction="history-type", resource_type=rtype, phi=phi)
    if second.startswith("$"):
        return _operation(rtype, None, second[1:], method)
    rid = second
    if len(parts) == 2:
        interaction = {"r": "read", "u": "update", "d": "delete"}.get(letter_for, "create")
        return smart(rtype, letter_for, interaction=interaction, resource_type=rtype, resource_id=rid, phi=phi)
    third = parts[2]
    if third.startswith("$"):
        return _operation(rtype, rid, third[1:], method)
    if third == "_history":
        kind = "vread" if len(parts) > 3 else "history-instance"
        return smart(rtype, "r", interaction=kind, resource_type=rtype, resource_id=rid, phi=phi)
    return smart(rtype, letter_for, resource_type=rtype, resource_id=rid, phi=phi)


def _operation(rtype: str | None, rid: str | None, name: str, method: str) -> Requirement:
    alternatives = OPERATION_SCOPES.get((rtype, name))
    if alternatives is None:
        alternatives = ((rtype or "*", "r" if method in ("GET", "HEAD") else "c"),)
    # DTR operations carry the patient's order, coverage and answers: only terminology is not PHI.
    phi = not all(t in ("ValueSet", "CodeSystem", "Library") for t, _ in alternatives)
    return Requirement(
        SMART, alternatives, phi=phi, interaction="operation", resource_type=rtype, resource_id=rid, operation=name
    )


def requirement_for(method: str, path: str) -> Requirement | None:
    """The requirement of a request (or of a route template). None means nobody declared one (the
    caller fails closed)."""
    method = method.upper()
    lookup = "GET" if method == "HEAD" else method
    found = _DECLARED.get((lookup, path)) or ROUTES.get((lookup, path))
    if found is not None:
        return found
    for m, regex, req in _DECLARED_TEMPLATES:
        if m == lookup and regex.match(path):
            return req
    if path == "/fhir" or path.startswith("/fhir/"):
        return _fhir(lookup, path)
    for prefix, req in PREFIXES:
        if path.startswith(prefix) or path == prefix.rstrip("/"):
            return req
    return None


def undeclared_routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every route with no requirement (the test suite keeps this empty).
    FHIR templates are resolved with a sample resource type, as every type follows the same rules."""
    missing = []
    for path, methods in iter_routes(app):
        sample = path.replace("{rtype}", "Claim").replace("{rid}", "x").replace("{name}", "op").replace("{vid}", "1")
        for method in methods:
            if method != "HEAD" and requirement_for(method, sample) is None:
                missing.append((method, path))
    return missing
