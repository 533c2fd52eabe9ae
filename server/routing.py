"""Routing by first path segment.

The app's router tries its routes in order, and FastAPI's included routers try each of theirs, so a
FHIR read walked every capability's routes (review, admin, auth, CDS Hooks, the demo EHR...) before
reaching the FHIR router: about 130 µs of a request that costs 700 µs in all. :func:`install` puts an
index in front of the router: for each first path segment (``fhir``, ``cds-services``, ``review``),
a view of the router holding only the routes that can match a path starting with it, in their
order. Routing within that view is the router's own, unchanged (matching, 405s, redirects, the 404).

A route whose first segment is a parameter (``/{anything}``) is in every view, where it keeps its
place. ``app.routes`` is untouched: the OpenAPI document, access declarations and tests see every
route as registered.
"""

from __future__ import annotations

import copy

from starlette.routing import BaseRoute, Mount
from starlette.types import Receive, Scope, Send

ANY = None  # a route that may match under any first segment


def _first_segment(template: str | None):
    if not template:
        return ANY
    head = template.lstrip("/").split("/", 1)[0]
    return ANY if "{" in head else head


def segments(route: BaseRoute) -> set:
    """The first path segments under which ``route`` can match (``{ANY}`` when it cannot be told)."""
    if hasattr(route, "effective_route_contexts"):  # FastAPI's included router
        if route.effective_low_priority_routes():
            return {ANY}
        found: set = set()
        for ctx in route.effective_route_contexts():
            template = getattr(ctx, "path_format", None) or getattr(getattr(ctx, "original_route", None), "path", None)
            found.add(_first_segment(template))
        return found or {ANY}
    if isinstance(route, Mount) or hasattr(route, "path"):
        return {_first_segment(getattr(route, "path", None))}
    return {ANY}


class SegmentDispatch:
    """The router's entry point, choosing the view of the request's first path segment."""

    def __init__(self, router):
        self.router = router
        self.entry = router.middleware_stack
        self.views: dict[str, object] | None = None
        self.fallback = None

    def _build(self) -> None:
        routes = list(self.router.routes)
        marked = [(route, segments(route)) for route in routes]
        names = {s for _, found in marked for s in found if s is not ANY}

        def view(name):
            sub = copy.copy(self.router)
            sub.routes = [route for route, found in marked if ANY in found or name in found]
            return sub

        self.views = {name: view(name) for name in names}
        self.fallback = view(ANY)  # a segment no route names: only the routes that match anywhere

    def view_for(self, scope: Scope):
        """The view of the router that routes ``scope``: that of its path's first segment."""
        if self.views is None:
            self._build()
        path = scope.get("path") or "/"
        root = scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root):]  # as the router reads it (served under a root path)
        name = path[1:].split("/", 1)[0]  # "//fhir/x" has an empty first segment, as the router reads it
        return self.views.get(name, self.fallback)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.entry(scope, receive, send)
            return
        sub = self.view_for(scope)
        scope.setdefault("router", self.router)  # url_for and friends see every route
        await sub.app(scope, receive, send)


def install(app) -> None:
    """Route by first segment, when the router's entry point is its own routing (no router middleware)."""
    router = app.router
    if getattr(router.middleware_stack, "__func__", None) is not type(router).app:
        return
    router.middleware_stack = SegmentDispatch(router)
