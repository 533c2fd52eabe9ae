"""Which credential each route needs, declared beside the route.

Every route the app serves declares exactly one :class:`Requirement` where it is registered:

* endpoints carry it with :func:`requires` (``@requires(PUBLIC_REQ)`` under ``@router.get(...)``);
  the FHIR REST routes declare their interaction (:class:`FhirInteraction`: ``read`` needs ``r`` on
  the route's ``{rtype}``) and the operation routes defer to the operation a request names
  (:class:`FhirOperation`), whose scopes are declared with its registration
  (``@operation(..., scopes=...)`` in :mod:`server.fhir.operations`);
* routes added without a decorator (``add_route``, mounts) are declared by their installer with
  :func:`declare`, next to the ``add_route`` call.

Requests are matched to routes as the router does (the route templates, in order); nothing here
parses URLs by hand. A route that declares nothing is an error: ``tests/test_auth_routes.py`` walks
``app.routes`` and fails, and at run time an enforcing server refuses it (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass

from cachetools import LRUCache
from starlette.routing import Mount, compile_path

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


_DECLARED: dict[tuple[str, str], object] = {}


def declare(path: str, methods, requirement) -> None:
    """Declare the requirement of a route registered without :func:`requires` (call beside its
    ``add_route``). ``path`` is the route's template, e.g. ``/dtr/launch/{session_id}``."""
    for method in methods:
        _DECLARED[(method.upper(), path)] = requirement


def _walk(app):
    """(template, methods, endpoint, route) of every HTTP route the app serves, in routing order,
    however FastAPI nests them."""
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
            endpoint = getattr(original, "endpoint", None) or getattr(route, "endpoint", None)
            yield path, tuple(sorted(getattr(original, "methods", None) or ("GET",))), endpoint

    yield from walk(app.router.routes)


def iter_routes(app):
    """(path template, methods) of every HTTP route the app serves."""
    for path, methods, _ in _walk(app):
        yield path, methods


def declared(path: str, method: str, endpoint) -> object | None:
    """What a route declares: the endpoint's :func:`requires`, else its :func:`declare`."""
    return getattr(endpoint, "__precert_access__", None) or _DECLARED.get((method, path))


@dataclass
class _Entry:
    regex: object
    methods: tuple[str, ...]
    template: str
    endpoint: object


class RouteIndex:
    """The app's routes by first path segment, to find the route a request reaches (and so what it
    declares) without scanning every template."""

    def __init__(self, app):
        self.entries = [_Entry(compile_path(path)[0], methods, path, endpoint) for path, methods, endpoint in _walk(app)]
        # Client-chosen segments vary without end: the candidates of the most recent prefixes only.
        self._by_prefix: LRUCache[tuple[str, str], list[_Entry]] = LRUCache(maxsize=10_000)

    @staticmethod
    def _prefix(path: str) -> tuple[str, str]:
        """The first two path segments ("" when absent)."""
        parts = path.split("/", 3)
        return (parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else "")

    @staticmethod
    def _could_match(template: tuple[str, str], path: tuple[str, str]) -> bool:
        for mine, theirs in zip(template, path):
            if "{" in mine:
                return True  # a parameter (or anything after it) may match what follows
            if mine != theirs:
                return False
        return True

    def candidates(self, path: str) -> list[_Entry]:
        prefix = self._prefix(path)
        found = self._by_prefix.get(prefix)
        if found is None:
            found = self._by_prefix[prefix] = [e for e in self.entries if self._could_match(self._prefix(e.template), prefix)]
        return found

    def requirement(self, method: str, path: str) -> Requirement | None:
        """The requirement of a request; None when no route serves its path and method (the router
        answers 404 or 405, and nothing protected is reached)."""
        lookup = "GET" if method == "HEAD" else method
        for entry in self.candidates(path):
            if lookup not in entry.methods:
                continue
            match = entry.regex.match(path)
            if match is None:
                continue
            access = declared(entry.template, lookup, entry.endpoint)
            if access is None:
                return UNDECLARED
            return access.resolve(match.groupdict(), lookup)
        return None


def route_index(app) -> RouteIndex:
    """The app's :class:`RouteIndex`, built on first use (routes are fixed once the app is built)."""
    index = getattr(app.state, "route_index", None)
    if index is None:
        index = app.state.route_index = RouteIndex(app)
    return index


def requirement_for(app, method: str, path: str) -> Requirement | None:
    """The requirement of a request to ``app`` (see :meth:`RouteIndex.requirement`)."""
    return route_index(app).requirement(method.upper(), path)


def undeclared_routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every route that declares no requirement (the test suite keeps this empty)."""
    return [(method, path) for path, methods, endpoint in _walk(app) for method in methods
            if method != "HEAD" and declared(path, method, endpoint) is None]
