"""Routing by first path segment reaches the same route the full router would, for every route.

The index (``server/routing.py``) hands each request to a view of the router holding only the routes
that can match its first segment. These tests take every route template the app serves, fill its
parameters, and check that the view the index picks chooses the same route, for every method; and
that requests still reach the app when it is served under a root path.
"""

from __future__ import annotations

import asyncio
import re

import httpx
from starlette.routing import Match

from server.auth import policy
from server.routing import SegmentDispatch


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", template)


def _chosen(routes, scope):
    partial = None
    for route in routes:
        match, _ = route.matches(dict(scope))
        if match == Match.FULL:
            return route, match
        if match == Match.PARTIAL and partial is None:
            partial = route
    return partial, (Match.PARTIAL if partial is not None else Match.NONE)


def _scope(app, method: str, path: str, root_path: str = "") -> dict:
    return {"type": "http", "method": method, "path": root_path + path, "root_path": root_path, "headers": [],
            "query_string": b"", "app": app}


def test_the_index_is_the_routers_entry_point(server):
    assert isinstance(server.app.router.middleware_stack, SegmentDispatch)


def test_every_route_is_reached_through_its_segments_view(server):
    app = server.app
    dispatch = app.router.middleware_stack
    checked = 0
    for template, methods in policy.iter_routes(app):
        path = _concrete(template)
        for method in (*methods, "DELETE", "PATCH"):  # also methods the route does not serve: a 405, or another route
            scope = _scope(app, method, path)
            assert _chosen(dispatch.view_for(scope).routes, scope) == _chosen(app.router.routes, scope), (method, path)
            checked += 1
    assert checked > 100


ODD_PATHS = ["/", "//fhir/metadata", "/fhir", "/fhir/", "/FHIR/metadata", "/fhir//Patient", "/%2e%2e/fhir/metadata",
             "/fhir/../review/login", "/" + "a" * 5000, "/cds-services/", "/.well-known", "/review/api/"]


def test_odd_and_hostile_paths_reach_the_route_the_full_router_would(server):
    app = server.app
    dispatch = app.router.middleware_stack
    for path in ODD_PATHS:
        for method in ("GET", "POST", "DELETE"):
            scope = _scope(app, method, path)
            assert _chosen(dispatch.view_for(scope).routes, scope) == _chosen(app.router.routes, scope), (method, path)
            # ... and served under a root path, the same route again.
            rooted = _scope(app, method, path, root_path="/payer")
            assert _chosen(dispatch.view_for(rooted).routes, scope) == _chosen(app.router.routes, scope), (method, path)


def test_an_unknown_first_segment_is_a_404(client):
    r = client.get("/no-such-area/anything")
    assert r.status_code == 404


def test_a_method_a_route_does_not_serve_is_still_a_405(client):
    r = client.delete("/fhir/metadata")
    assert r.status_code == 405


def test_served_under_a_root_path_requests_reach_their_routes(server):
    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=server.app, root_path="/payer")
        async with httpx.AsyncClient(transport=transport, base_url="http://precert.test") as c:
            return await c.get(path, headers={"Accept": "application/fhir+json"})

    r = asyncio.run_coroutine_threadsafe(get("/payer/fhir/metadata"), server.loop).result(30)
    assert r.status_code == 200
    assert r.json()["resourceType"] == "CapabilityStatement"
