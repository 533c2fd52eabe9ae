"""Every route has a declared access requirement, and every requirement is enforced.

Table-driven over the routes the app actually serves: a new route without a requirement fails
``test_every_route_declares_its_requirement``; for each protected route and each resource type and
operation, no token gets 401, a token granting everything except what the route needs gets 403, and a
token granting exactly that gets through (whatever the handler then answers).
"""

from __future__ import annotations

import re

import httpx
import pytest

from starlette.routing import compile_path

from server.auth import policy
from server.auth.guard import GuardedRoute
from server.fhir.operations import registry
from server.fhir.resources import PROVIDERS

LETTERS = "cruds"


def requirement_for(app, method: str, path: str):
    """What a request to ``path`` needs: the declaration of the first route whose template matches,
    resolved as the route's guard resolves it (None when no route serves the path and method)."""
    for template, methods, declared in policy.route_requirements(app):
        if method not in methods:
            continue
        match = compile_path(template)[0].match(path)
        if match is not None:
            return (declared or policy.UNDECLARED).resolve(match.groupdict(), method)
    return None


@pytest.fixture(scope="module")
def client_id(harness):
    cid, _ = harness.register(scopes="system/*.cruds")
    return cid


def mint(srv, client_id: str, scope: str) -> dict:
    token = srv.app.state.precert.services["auth"].tokens.mint(client_id, scope)
    return {"Authorization": f"Bearer {token}"}


def samples(path: str, method: str) -> list[str]:
    """Concrete request paths for a route template: every resource type, every operation."""
    if "{name}" in path:
        out = []
        if "{rtype}" not in path:
            names = [op.name for op in registry.system_level()] + ["unknown-op"]
            return [path.replace("{name}", n) for n in names]
        instance = "{rid}" in path
        for rtype in sorted(PROVIDERS):
            names = [op.name for op in registry.for_type(rtype) if (op.instance_level if instance else op.type_level)]
            for name in names + ["unknown-op"]:
                out.append(path.replace("{rtype}", rtype).replace("{rid}", "x-1").replace("{name}", name))
        return out
    if "{rtype}" in path:
        return [path.replace("{rtype}", t).replace("{rid}", "x-1").replace("{vid}", "1") for t in sorted(PROVIDERS)]
    return [re.sub(r"\{[^}]+\}", "sample-1", path)]


def table(app) -> list[tuple[str, str, str]]:
    rows = []
    for path, methods in policy.iter_routes(app):
        for method in methods:
            if method != "HEAD":
                rows.extend((method, path, concrete) for concrete in samples(path, method))
    return rows


def send(http, method: str, path: str, headers: dict) -> httpx.Response:
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    ctype = "application/x-www-form-urlencoded" if path.endswith("/_search") else "application/fhir+json"
    hdrs = {"Accept": "application/fhir+json", **headers}
    if body is not None:
        hdrs["Content-Type"] = ctype
        if ctype.startswith("application/x-www"):
            body = b""
    try:
        return http.request(method, path, content=body, headers=hdrs)
    except (httpx.ReadError, httpx.RemoteProtocolError):
        # The server closes a keep-alive connection after a handler raised (a 500, which is not
        # what these tests are about); the request is sent again on a fresh connection.
        return http.request(method, path, content=body, headers=hdrs)


def all_except(alternatives) -> str:
    """Scopes granting every letter on every type, minus the route's required permissions."""
    types = set(PROVIDERS) | {t for t, _ in alternatives if t != "*"}
    scopes = []
    for rtype in sorted(types):
        denied = {letter for t, letter in alternatives if t in (rtype, "*")}
        letters = "".join(c for c in LETTERS if c not in denied)
        if letters:
            scopes.append(f"system/{rtype}.{letters}")
    return " ".join(scopes)


def test_every_route_declares_its_requirement(srv):
    assert policy.undeclared_routes(srv.app) == [], "declare these routes beside their registration: @policy.requires(...) or policy.declare()"


def test_a_route_nobody_declared_is_reported():
    from fastapi import FastAPI

    app = FastAPI()
    app.add_api_route("/mystery/{thing}", lambda thing: {}, methods=["GET"])
    assert ("GET", "/mystery/{thing}") in policy.undeclared_routes(app)


def test_public_routes_are_declared_public_like_any_other():
    from fastapi import FastAPI

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.router.route_class = GuardedRoute

    @app.get("/open")
    @policy.requires(policy.PUBLIC_REQ)
    async def open_route():
        return {}

    assert policy.undeclared_routes(app) == []
    assert policy.unguarded_routes(app) == []
    assert requirement_for(app, "GET", "/open") is policy.PUBLIC_REQ
    assert requirement_for(app, "POST", "/open") is None  # no such route: the router answers 405


def test_every_route_enforces_its_requirement_itself(srv):
    assert policy.unguarded_routes(srv.app) == [], "use GuardedRoute (route_class), guard.guarded() or guard.GuardedApp"


def test_a_route_that_does_not_enforce_is_reported():
    from fastapi import FastAPI
    from starlette.staticfiles import StaticFiles

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)  # a plain APIRoute, not GuardedRoute

    @app.get("/declared-only")
    @policy.requires(policy.PUBLIC_REQ)
    async def declared_only():
        return {}

    app.mount("/files", StaticFiles(directory="."), name="files")
    assert policy.unguarded_routes(app) == [("GET", "/declared-only"), ("GET", "/files/{path:path}")]


def test_a_staff_dependency_is_the_routes_declaration(srv):
    req = requirement_for(srv.app, "POST", "/review/api/appeals/ap-1/decision")
    assert req.kind == policy.STAFF and req.roles == ("medical-director", "administrator")
    assert requirement_for(srv.app, "GET", "/review/api/clocks").phi is False


def test_every_registered_operation_declares_its_scopes(srv):
    assert [(op.name, op.resource_types) for op in registry.operations if not op.scopes] == []


def test_the_table_covers_the_da_vinci_operations(srv):
    rows = {(m, p) for m, _, p in table(srv.app)}
    for path in ("/fhir/Claim/$submit", "/fhir/Claim/$inquire", "/fhir/Questionnaire/$questionnaire-package"):
        if any(p == path for _, p in rows):
            assert requirement_for(srv.app, "POST", path).kind == policy.SMART
    assert requirement_for(srv.app, "POST", "/fhir/Claim/$submit").permissions == (("Claim", "c"),)
    assert set(requirement_for(srv.app, "POST", "/fhir/Claim/$inquire").permissions) == {("ClaimResponse", "r"), ("Claim", "r")}
    assert requirement_for(srv.app, "POST", "/fhir/Questionnaire/$questionnaire-package").permissions == (("Questionnaire", "r"),)
    assert requirement_for(srv.app, "POST", "/fhir/Subscription/abc/$status").permissions == (("Subscription", "r"),)
    assert requirement_for(srv.app, "POST", "/fhir/Claim/$brand-new").permissions == (("Claim", "c"),)
    assert requirement_for(srv.app, "GET", "/fhir/Claim/$brand-new").permissions == (("Claim", "r"),)
    assert requirement_for(srv.app, "POST", "/fhir/$system-op").permissions == (("*", "c"),)


def test_every_protected_route_refuses_requests_without_credentials(srv, http):
    failures = []
    for method, template, path in table(srv.app):
        req = requirement_for(srv.app, method, path)
        if req.kind in (policy.PUBLIC, policy.DELEGATED):
            continue
        resp = send(http, method, path, {})
        if resp.status_code != 401 or "www-authenticate" not in resp.headers:
            failures.append((method, path, resp.status_code))
    assert failures == []


def test_every_scope_is_checked_on_every_fhir_route(srv, http, client_id):
    failures = []
    checked = 0
    for method, template, path in table(srv.app):
        req = requirement_for(srv.app, method, path)
        if req.kind != policy.SMART:
            continue
        checked += 1
        without = send(http, method, path, mint(srv, client_id, all_except(req.permissions)))
        if without.status_code != 403:
            failures.append(("without", method, path, without.status_code))
        elif "insufficient_scope" not in without.headers.get("www-authenticate", ""):
            failures.append(("no insufficient_scope", method, path))
        for rtype, letter in req.permissions:
            with_ = send(http, method, path, mint(srv, client_id, f"system/{rtype}.{letter}"))
            if with_.status_code in (401, 403):
                failures.append(("with", method, path, rtype, letter, with_.status_code))
    assert checked > 300
    assert failures == []


def test_v1_scopes_are_equivalent_to_v2_on_the_routes(srv, http, client_id):
    read = mint(srv, client_id, "system/Patient.read")
    write = mint(srv, client_id, "system/Claim.write")
    assert send(http, "GET", "/fhir/Patient/pat-001", read).status_code == 200
    assert send(http, "GET", "/fhir/Patient", read).status_code == 200
    assert send(http, "DELETE", "/fhir/Patient/pat-001", read).status_code == 403
    assert send(http, "POST", "/fhir/Claim/$submit", write).status_code not in (401, 403)
    assert send(http, "GET", "/fhir/Claim", write).status_code == 403
    star = mint(srv, client_id, "system/*.read")
    assert send(http, "GET", "/fhir/Coverage/cov-001", star).status_code == 200
    assert send(http, "POST", "/fhir/Coverage", star).status_code == 403


def test_staff_routes_need_the_right_role(srv, http, client_id):
    from server.auth.testing import staff_login

    reviewer = {"Authorization": f"Bearer {staff_login(http, srv.url, 'reviewer', 'reviewer-sandbox')}"}
    admin = {"Authorization": f"Bearer {staff_login(http, srv.url, 'admin', 'admin-sandbox')}"}
    smart_token = mint(srv, client_id, "system/*.cruds")
    failures = []
    for method, template, path in table(srv.app):
        req = requirement_for(srv.app, method, path)
        if req.kind not in (policy.STAFF, policy.DOCS):
            continue
        if send(http, method, path, smart_token).status_code not in (401, 403):
            failures.append(("smart token accepted", method, path))
        if req.roles and "reviewer" not in req.roles:
            if send(http, method, path, reviewer).status_code != 403:
                failures.append(("reviewer accepted", method, path))
        if req.page_checks_roles and "administrator" not in req.roles:
            # The page checks the role itself: an administrator gets its 403 page, not the content.
            if send(http, method, path, admin).status_code != 403:
                failures.append(("page let another role in", method, path))
        who = admin if "administrator" in req.roles or not req.roles else reviewer
        if path == "/staff/logout":
            continue  # would end the session the rest of the loop uses; test_auth_staff covers it
        if send(http, method, path, who).status_code in (401, 403):
            failures.append(("role refused", method, path))
    assert failures == []


def test_public_routes_answer_without_credentials(http):
    for path in ("/fhir/metadata", "/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration",
                 "/health/live", "/health/ready"):
        assert http.get(path).status_code == 200, path


def test_a_person_opening_a_workbench_page_unsigned_is_sent_to_sign_in(http):
    r = http.get("/review/cases/PA123?tab=history", headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/review/login?next=%2Freview%2Fcases%2FPA123%3Ftab%3Dhistory"
    api = http.get("/review/api/cases", headers={"Accept": "text/html"}, follow_redirects=False)
    assert api.status_code == 401  # programs get the 401, not a page


def test_cds_hooks_calls_need_an_ehr_jwt_when_the_server_enforces_authentication(http):
    from tests.support import CRD_FIXTURES
    import json

    body = json.loads((CRD_FIXTURES / "CRDServiceRequest.json").read_text())
    assert http.get("/cds-services").status_code == 200  # discovery stays open
    r = http.post("/cds-services/order-sign-crd", json=body)
    assert r.status_code == 401
