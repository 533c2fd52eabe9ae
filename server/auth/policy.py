"""Which credential each route needs, declared beside the route.

Every route the app serves declares exactly one :class:`Requirement` where it is registered:

* endpoints carry it with :func:`requires` (``@requires(PUBLIC_REQ)`` under ``@router.get(...)``);
  the FHIR REST routes declare their interaction (:class:`FhirInteraction`: ``read`` needs ``r`` on
  the route's ``{rtype}``) and the operation routes defer to the operation a request names
  (:class:`FhirOperation`), whose scopes are declared with its registration
  (``@operation(..., scopes=...)`` in :mod:`server.fhir.operations`);
* a dependency may carry it instead (:func:`requires` on the dependency): the review API's staff
  dependencies declare the roles they check;
* plain Starlette routes and mounts are declared by wrapping their endpoint or app where they are
  added (:func:`server.auth.guard.guarded`, :class:`server.auth.guard.GuardedApp`).

Each route enforces its own declaration once the router has chosen it (:mod:`server.auth.guard`);
nothing matches URLs a second time. A route that declares nothing, or does not enforce, is an error:
``tests/test_auth_routes.py`` walks ``app.routes`` and fails, and at run time an enforcing server
refuses an undeclared route (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.routing import Mount

from server.fhir.operations import registry

PUBLIC = "public"  # no credential, ever
SMART = "smart"  # SMART Backend Services bearer token with a scope (or payer staff, read-only)
STAFF = "staff"  # payer staff session; roles checked here when given
DELEGATED = "delegated"  # the route authenticates its caller itself (CDS Hooks EHR JWT)
DOCS = "docs"  # API documentation: open in sandbox, staff in an enforcing server

ROLES = ("reviewer", "medical-director", "administrator")


@dataclass(eq=False)  # a value object, built per FHIR request: a plain dataclass builds fastest
class Requirement:
    kind: str
    # SMART: alternatives, each (resource type or "*", letter); any one suffices.
    permissions: tuple[tuple[str, str], ...] = ()
    # STAFF: any one of these roles ("" = any staff member).
    roles: tuple[str, ...] = ()
    # STAFF routes that stay strict even in an open sandbox (security configuration, audit).
    always: bool = False
    # STAFF pages that check ``roles`` themselves, to answer a signed-in member of another role
    # with a page saying why (the middleware then only insists on a staff sign-in).
    page_checks_roles: bool = False
    # Whether the route touches protected health information (audited).
    phi: bool = True
    interaction: str = ""  # FHIR restful interaction or "operation", for audit
    resource_type: str | None = None
    resource_id: str | None = None
    operation: str | None = None

    def resolve(self, params: dict, method: str) -> "Requirement":
        return self

    def describe(self) -> str:
        if self.kind == SMART:
            return " or ".join(f"system/{t}.{letter}" for t, letter in self.permissions)
        if self.kind == STAFF:
            return "payer staff" + (f" ({' or '.join(self.roles)})" if self.roles else "")
        return self.kind


def smart(rtype: str, letter: str, *alternatives: tuple[str, str], **kw) -> Requirement:
    return Requirement(SMART, ((rtype, letter), *alternatives), **kw)


def staff(*roles: str, always: bool = False, phi: bool = True, page_checks_roles: bool = False) -> Requirement:
    return Requirement(STAFF, roles=tuple(roles), always=always, phi=phi, page_checks_roles=page_checks_roles)


PUBLIC_REQ = Requirement(PUBLIC, phi=False)
DELEGATED_REQ = Requirement(DELEGATED)
DOCS_REQ = Requirement(DOCS, phi=False)
AUDIT_REQ = staff("administrator", always=True)

# Resource types whose content is knowledge (forms, value sets, rules), not patient data: reads of
# them are not PHI accesses and are not audited.
KNOWLEDGE_TYPES = frozenset({"Questionnaire", "Library", "ValueSet", "CodeSystem"})

UNDECLARED = Requirement("undeclared", phi=False)  # a route that declared nothing (refused when enforcing)


def requires(requirement):
    """Declare the requirement of the endpoint below (a :class:`Requirement`, or a resolver such as
    :class:`FhirInteraction` whose ``resolve(path_params, method)`` gives one)."""

    def mark(endpoint):
        endpoint.__precert_access__ = requirement
        return endpoint

    return mark


@dataclass(frozen=True)
class FhirInteraction:
    """A FHIR REST interaction on the route's ``{rtype}``: read ``r``, search ``s``, create ``c``,
    update ``u``, delete ``d``. Reads of knowledge (forms, value sets) are not PHI accesses; the audit
    trail (``AuditEvent``) is the administrators'."""

    interaction: str
    letter: str

    def resolve(self, params: dict, method: str) -> Requirement:
        rtype = params.get("rtype") or "*"
        if rtype == "AuditEvent":
            return AUDIT_REQ
        return smart(rtype, self.letter, interaction=self.interaction, resource_type=rtype,
                     resource_id=params.get("rid"), phi=rtype not in KNOWLEDGE_TYPES)


@dataclass(frozen=True)
class FhirOperation:
    """The FHIR operation a request names (``{name}`` on ``{rtype}``, or fixed here for routes that
    serve one operation): the scopes declared with the operation's registration. An operation nobody
    registered needs read (``GET``) or create (``POST``) on its type, so probing one tells nothing."""

    rtype: str | None = None
    name: str | None = None
    instance: bool = False

    def resolve(self, params: dict, method: str) -> Requirement:
        rtype = self.rtype or params.get("rtype")
        rid = params.get("rid")
        name = self.name or params.get("name") or ""
        op = registry.find(name, rtype, instance=self.instance or rid is not None)
        alternatives = op.scopes_for(rtype) if op is not None and op.scopes else ()
        if not alternatives:
            alternatives = ((rtype or "*", "r" if method in ("GET", "HEAD") else "c"),)
        # DTR operations carry the patient's order, coverage and answers: only terminology is not PHI.
        phi = not all(t in ("ValueSet", "CodeSystem", "Library") for t, _ in alternatives)
        return Requirement(SMART, tuple(alternatives), phi=phi, interaction="operation", resource_type=rtype,
                           resource_id=rid, operation=name)


def _dependency_requirement(dependant):
    for dep in getattr(dependant, "dependencies", None) or ():
        found = getattr(dep.call, "__precert_access__", None) or _dependency_requirement(dep)
        if found is not None:
            return found
    return None


def declared_by(route) -> object | None:
    """What a route declares: its endpoint's :func:`requires`, else one of its dependencies' (a
    dependency marked with :func:`requires`), else, for a mount, its app's."""
    endpoint = getattr(route, "endpoint", None)
    found = getattr(endpoint, "__precert_access__", None)
    if found is None:
        found = _dependency_requirement(getattr(route, "dependant", None))
    if found is None and isinstance(route, Mount):
        found = getattr(route.app, "__precert_access__", None)
    return found


def enforces(route) -> bool:
    """Whether a route enforces what it declares: a guarded FastAPI route, or a Starlette route or
    mount whose endpoint or app is guarded (:mod:`server.auth.guard`)."""
    if hasattr(route, "dependant"):  # a FastAPI route
        return bool(getattr(type(route), "__precert_guarded__", False))
    target = route.app if isinstance(route, Mount) else getattr(route, "endpoint", None)
    return bool(getattr(target, "__precert_guarded__", False))


def _walk(app):
    """(template, methods, route) of every HTTP route the app serves, in routing order, however
    FastAPI nests them."""
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
            if isinstance(original, Mount):
                path = path.rstrip("/") + "/{path:path}"
            yield path, tuple(sorted(getattr(original, "methods", None) or ("GET",))), original

    yield from walk(app.router.routes)


def iter_routes(app):
    """(path template, methods) of every HTTP route the app serves."""
    for path, methods, _ in _walk(app):
        yield path, methods


def route_requirements(app):
    """(path template, methods, declared requirement or None) of every HTTP route, in routing order
    (for the test suite and the start-up check; requests are not routed through this)."""
    for path, methods, route in _walk(app):
        yield path, methods, declared_by(route)


def undeclared_routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every route that declares no requirement (the test suite keeps this empty)."""
    return [(method, path) for path, methods, route in _walk(app) for method in methods
            if method != "HEAD" and declared_by(route) is None]


def unguarded_routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every route that does not enforce its requirement itself (the test
    suite keeps this empty)."""
    return [(method, path) for path, methods, route in _walk(app) for method in methods
            if method != "HEAD" and not enforces(route)]
