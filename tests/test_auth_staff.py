"""Payer staff sign-in, roles, sessions, and the security admin API."""

from __future__ import annotations

import json

import httpx
import pytest

from server.auth.testing import ADMIN_PASSWORD, ADMIN_USER, ClientKey, staff_login


@pytest.fixture(autouse=True)
def no_stored_cookies(http):
    """Sign-ins set the session cookie on the shared client; each test starts signed out."""
    yield
    http.cookies.clear()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def new_user(http, harness, username: str, roles=("reviewer",), password="correct horse battery") -> str:
    resp = http.post("/admin/auth/staff", json={"username": username, "password": password, "roles": list(roles)},
                     headers=harness.admin_headers)
    assert resp.status_code == 201, resp.text
    return password


# ---------------------------------------------------------------------- sign-in
def test_sign_in_sets_a_strict_http_only_cookie_and_returns_a_token(http):
    resp = http.post("/staff/login", json={"username": "reviewer", "password": "reviewer-sandbox"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["roles"] == ["reviewer"] and body["token"]
    cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert resp.headers["cache-control"] == "no-store"
    with httpx.Client(base_url=str(http.base_url)) as browser:
        browser.cookies.set("precert_staff", body["token"])
        assert browser.get("/staff/me").json()["username"] == "reviewer"
    assert http.get("/staff/me", headers=bearer(body["token"])).json()["roles"] == ["reviewer"]


def test_sign_in_also_takes_a_form(http):
    resp = http.post("/staff/login", data={"username": "director", "password": "director-sandbox"})
    assert resp.status_code == 200 and "medical-director" in resp.json()["roles"]


def test_wrong_password_and_unknown_user_get_the_same_answer(http):
    wrong = http.post("/staff/login", json={"username": "director", "password": "nope"})
    unknown = http.post("/staff/login", json={"username": "nobody-at-all", "password": "nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert "set-cookie" not in wrong.headers


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"username": 1, "password": 2}', b'{"username": "a"}',
                                  json.dumps({"username": "\u0000<script>", "password": "x" * 2000}).encode()])
def test_malformed_sign_in_requests_are_refused(http, body):
    resp = http.post("/staff/login", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code in (400, 401)


def test_oversized_sign_in_is_refused(http):
    resp = http.post("/staff/login", content=b'{"username":"' + b"a" * 20000 + b'"}', headers={"Content-Type": "application/json"})
    assert resp.status_code == 413


def test_logout_ends_the_session(http, srv):
    token = staff_login(http, srv.url, "reviewer", "reviewer-sandbox")
    assert http.post("/staff/logout", headers=bearer(token)).status_code == 204
    assert http.get("/staff/me", headers=bearer(token)).status_code == 401


def test_disabling_a_user_ends_their_sessions(http, harness, srv):
    password = new_user(http, harness, "soon-disabled")
    token = staff_login(http, srv.url, "soon-disabled", password)
    assert http.get("/staff/me", headers=bearer(token)).status_code == 200
    assert http.patch("/admin/auth/staff/soon-disabled", json={"active": False}, headers=harness.admin_headers).status_code == 200
    assert http.get("/staff/me", headers=bearer(token)).status_code == 401
    assert http.post("/staff/login", json={"username": "soon-disabled", "password": password}).status_code == 401


def test_cookie_sessions_refuse_cross_site_writes(http, srv, harness):
    token = harness.admin
    with httpx.Client(base_url=srv.url) as browser:
        browser.cookies.set("precert_staff", token)
        evil = browser.post("/admin/auth/clients", json={"name": "x"}, headers={"Origin": "https://evil.example.org"})
        assert evil.status_code == 403
        same = browser.post("/admin/auth/clients", json={"name": "x"}, headers={"Origin": srv.url})
        assert same.status_code == 400  # through to validation


def test_invalid_session_tokens_are_refused(http):
    for token in ("nonsense", "x" * 500, "a.b"):
        assert http.get("/staff/me", headers=bearer(token)).status_code == 401
    assert http.get("/staff/me").status_code == 401


# ---------------------------------------------------------------------- roles
def test_roles_gate_the_admin_api(http, srv):
    reviewer = staff_login(http, srv.url, "reviewer", "reviewer-sandbox")
    director = staff_login(http, srv.url, "director", "director-sandbox")
    for token in (reviewer, director):
        assert http.get("/admin/auth/clients", headers=bearer(token)).status_code == 403
        assert http.get("/fhir/AuditEvent", headers=bearer(token)).status_code == 403
    admin = staff_login(http, srv.url, ADMIN_USER, ADMIN_PASSWORD)
    assert http.get("/admin/auth/clients", headers=bearer(admin)).status_code == 200


def test_require_staff_dependency_checks_roles():
    from fastapi import Depends, FastAPI

    from server.auth import require_staff

    with pytest.raises(ValueError):
        require_staff("janitor")
    dep = require_staff("medical-director")
    assert dep.__name__ == "require_staff_medical_director"
    app = FastAPI()

    @app.get("/x")
    async def x(who=Depends(dep)):
        return {"who": who.username}

    import asyncio

    async def call():
        sent = []

        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            sent.append(message)

        await app({"type": "http", "method": "GET", "path": "/x", "raw_path": b"/x", "query_string": b"", "headers": [],
                   "root_path": "", "scheme": "http", "server": ("t", 80), "client": ("c", 1), "http_version": "1.1"}, receive, send)
        return sent[0]["status"]

    assert asyncio.run(call()) == 401  # no security service installed: never open


def test_staff_accounts_need_valid_roles_and_strong_passwords(http, harness):
    bad = [
        {"username": "u1", "password": "short", "roles": ["reviewer"]},
        {"username": "u2", "password": "long enough password", "roles": ["janitor"]},
        {"username": "u3", "password": "long enough password", "roles": []},
        {"username": "bad name!", "password": "long enough password", "roles": ["reviewer"]},
        {"username": "u4", "password": None, "roles": ["reviewer"]},
        {"username": "u5", "password": "long enough password"},
    ]
    for body in bad:
        assert http.post("/admin/auth/staff", json=body, headers=harness.admin_headers).status_code == 400, body
    new_user(http, harness, "dup-user")
    dup = http.post("/admin/auth/staff", json={"username": "dup-user", "password": "long enough password", "roles": ["reviewer"]},
                    headers=harness.admin_headers)
    assert dup.status_code == 400
    listed = http.get("/admin/auth/staff", headers=harness.admin_headers).json()["staff"]
    assert all("password" not in u for u in listed)
    assert http.delete("/admin/auth/staff/dup-user", headers=harness.admin_headers).status_code == 204
    assert http.delete("/admin/auth/staff/dup-user", headers=harness.admin_headers).status_code == 404
    assert http.delete(f"/admin/auth/staff/{ADMIN_USER}", headers=harness.admin_headers).status_code == 400


# ---------------------------------------------------------------------- client registration
def test_clients_register_with_inline_jwks_or_a_jwks_url(http, harness):
    key = ClientKey.generate("RS384")
    inline = http.post("/admin/auth/clients", json={"name": "Clinic EHR", "npi": "1234567893", "jwks": key.jwks,
                                                    "scopes": "system/Claim.c system/ClaimResponse.r"}, headers=harness.admin_headers)
    assert inline.status_code == 201
    body = inline.json()
    assert body["organization"] == {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}
    assert body["scopes"] == "system/Claim.c system/ClaimResponse.r"
    by_url = http.post("/admin/auth/clients", json={"client_id": "https://ehr.example.org/client", "name": "URL EHR",
                                                    "organization": {"system": "urn:oid:2.16.840.1.113883.4.4", "value": "12-3456789"},
                                                    "jwks_url": "https://ehr.example.org/jwks.json"}, headers=harness.admin_headers)
    assert by_url.status_code == 201, by_url.text
    shown = http.get("/admin/auth/clients/https://ehr.example.org/client", headers=harness.admin_headers)
    assert shown.status_code == 200 and shown.json()["jwks_url"] == "https://ehr.example.org/jwks.json"
    ids = [c["client_id"] for c in http.get("/admin/auth/clients", headers=harness.admin_headers).json()["clients"]]
    assert body["client_id"] in ids and "https://ehr.example.org/client" in ids
    assert http.delete("/admin/auth/clients/https://ehr.example.org/client", headers=harness.admin_headers).status_code == 204
    assert http.get("/admin/auth/clients/https://ehr.example.org/client", headers=harness.admin_headers).status_code == 404


def test_bad_registrations_are_refused_with_the_field_named(http, harness):
    key = ClientKey.generate("ES384")
    private = {**key.jwk, "d": "secret"}
    cases = {
        "organization": {"name": "x", "jwks": key.jwks},
        "NPI": {"name": "x", "npi": "12345", "jwks": key.jwks},
        "exactly one": {"name": "x", "npi": "1234567893", "jwks": key.jwks, "jwks_url": "https://a.example/j"},
        "private key": {"name": "x", "npi": "1234567893", "jwks": {"keys": [private]}},
        "kid": {"name": "x", "npi": "1234567893", "jwks": {"keys": [{k: v for k, v in key.jwk.items() if k != "kid"}]}},
        "scopes": {"name": "x", "npi": "1234567893", "jwks": key.jwks, "scopes": "patient/*.read launch"},
        "jwks_url": {"name": "x", "npi": "1234567893", "jwks_url": "ftp://x"},
        "name": {"npi": "1234567893", "jwks": key.jwks},
        "client_id": {"client_id": "<script>alert(1)</script>", "name": "x", "npi": "1234567893", "jwks": key.jwks},
    }
    for field, body in cases.items():
        resp = http.post("/admin/auth/clients", json=body, headers=harness.admin_headers)
        assert resp.status_code == 400, (field, resp.text)
        assert field.lower().split()[0] in resp.json()["message"].lower(), (field, resp.json())
    for raw in (b"{", b"[]", b"null", b'"x"'):
        assert http.post("/admin/auth/clients", content=raw, headers={**harness.admin_headers, "Content-Type": "application/json"}).status_code == 400
    big = http.post("/admin/auth/clients", content=b'{"name":"' + b"x" * 300_000 + b'"}',
                    headers={**harness.admin_headers, "Content-Type": "application/json"})
    assert big.status_code == 413
    cid, _ = harness.register(client_id="taken-id")
    again = http.post("/admin/auth/clients", json={"client_id": "taken-id", "name": "x", "npi": "1234567893", "jwks": key.jwks},
                      headers=harness.admin_headers)
    assert again.status_code == 400 and "already" in again.json()["message"]


def test_a_registration_can_be_replaced_and_toggled(http, harness):
    cid, key = harness.register()
    new_key = ClientKey.generate("ES384")
    resp = http.put(f"/admin/auth/clients/{cid}", json={"name": "Renamed", "npi": "1234567893", "jwks": new_key.jwks},
                    headers=harness.admin_headers)
    assert resp.status_code == 200 and resp.json()["name"] == "Renamed"
    assert http.patch(f"/admin/auth/clients/{cid}", json={"active": "no"}, headers=harness.admin_headers).status_code == 400
    assert http.patch("/admin/auth/clients/no-such", json={"active": False}, headers=harness.admin_headers).status_code == 404
    resp = http.patch(f"/admin/auth/clients/{cid}", json={"active": False}, headers=harness.admin_headers)
    assert resp.json()["active"] is False
