"""Authentication and authorization are separate layers: the authentication middleware only says who
the caller is (or why the credential failed); the route's declared requirement is enforced after it."""

from __future__ import annotations

import asyncio

from server.auth.middleware import AuthenticationMiddleware
from server.auth.principal import ANONYMOUS

BAD_JWT = "abc.def.ghi"


def _pass_through(srv, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    """Run only the authentication middleware of the enforcing app over a request; return the request
    state the next layer receives (the next layer here answers 204)."""
    seen: dict = {}

    async def inner(scope, receive, send):
        seen.update(scope["state"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("testserver", 80), "scheme": "http",
             "root_path": "", "http_version": "1.1"}
    asyncio.run(AuthenticationMiddleware(inner, fastapi_app=srv.app)(scope, receive, send))
    assert sent[0]["status"] == 204  # the middleware passed the request on instead of refusing it
    return seen


def test_the_authentication_middleware_records_a_failed_credential_without_refusing(srv):
    state = _pass_through(srv, "GET", "/fhir/Patient/pat-001", [(b"authorization", f"Bearer {BAD_JWT}".encode())])
    status, code, _message, www = state["authentication_failure"]
    assert status == 401 and code == "login" and 'error="invalid_token"' in www
    assert state["principal"] is ANONYMOUS


def test_the_authentication_middleware_passes_an_anonymous_request_to_a_protected_route_on(srv):
    state = _pass_through(srv, "GET", "/fhir/Patient/pat-001", [])
    assert state["authentication_failure"] is None
    assert state["principal"] is ANONYMOUS


def test_an_invalid_bearer_is_refused_only_where_the_route_needs_a_credential(http):
    public = http.get("/.well-known/smart-configuration", headers={"Authorization": f"Bearer {BAD_JWT}"})
    assert public.status_code == 200
    protected = http.get("/fhir/Patient/pat-001", headers={"Authorization": f"Bearer {BAD_JWT}"})
    assert protected.status_code == 401
    assert 'error="invalid_token"' in protected.headers["www-authenticate"]
    assert protected.json()["resourceType"] == "OperationOutcome"


def test_an_unauthenticated_malformed_body_is_refused_before_it_is_parsed(http):
    resp = http.post("/fhir/Patient", content=b"{not json", headers={"Content-Type": "application/fhir+json"})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == 'Bearer realm="precert"'
    assert resp.json()["resourceType"] == "OperationOutcome"


def test_an_unknown_path_is_still_the_routers_404(http):
    assert http.get("/no-such-surface", headers={"Authorization": f"Bearer {BAD_JWT}"}).status_code == 404


def test_a_large_hostile_body_to_a_protected_route_is_refused_and_the_connection_keeps_serving(http):
    # 3 MB (over what a refusal drains, under the FHIR body limit), not JSON at all.
    junk = bytes(range(256)) * (3 * 1024 * 1024 // 256)
    refused = http.post("/fhir/Claim/$submit", content=junk, headers={"Content-Type": "application/fhir+json"})
    assert refused.status_code == 401
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert http.get("/fhir/metadata").status_code == 200  # the same client goes on
