"""Modes: the open sandbox, PRECERT_REQUIRE_AUTH, and production (real keys or no start; every
route but the few public ones authenticated)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from server.auth.config import AuthConfig
from server.auth.testing import ADMIN_PASSWORD, ADMIN_USER, ClientKey, Harness, secured_app, token_form
from server.settings import Settings
from tests.support import ThreadedServer, free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prod(mongodb_uri):
    port = free_port()
    app = secured_app(mongodb_uri, port=port, mode="production", load_sandbox=False)
    app.add_api_route("/zz-undeclared-probe", lambda: {"open": True}, methods=["GET"])
    server = ThreadedServer(app, port=port).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(prod):
    with httpx.Client(base_url=prod.url, timeout=30) as c:
        yield c


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_production_refuses_to_start_without_a_signing_key(mongodb_uri):
    port = free_port()
    app = secured_app(mongodb_uri, port=port, mode="production", signing_key=b"")
    with pytest.raises(RuntimeError):
        ThreadedServer(app, port=port).start(timeout=30)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_production_refuses_to_start_without_a_public_base_url(mongodb_uri):
    app = secured_app(mongodb_uri, mode="production")
    with pytest.raises(RuntimeError):
        ThreadedServer(app).start(timeout=30)


def test_production_problems_are_named():
    from server.auth.routes import _production_problems

    problems = _production_problems(AuthConfig(), Settings(mode="production", base_url="http://payer.example.org"))
    text = " ".join(problems)
    assert "PRECERT_AUTH_SIGNING_KEY_FILE" in text and "https" in text
    assert _production_problems(AuthConfig(signing_key_pem=b"k"), Settings(mode="production", base_url="https://payer.example.org")) == []


def test_production_leaves_only_discovery_metadata_and_health_open(http):
    for path in ("/fhir/metadata", "/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration",
                 "/health/live", "/health/ready"):
        assert http.get(path).status_code == 200, path
    assert http.get("/cds-services").status_code not in (401, 403)


@pytest.mark.parametrize("method,path", [
    ("GET", "/fhir/Patient"), ("GET", "/fhir/Patient/pat-001"), ("POST", "/fhir/Claim/$submit"),
    ("POST", "/fhir/Claim/$inquire"), ("POST", "/fhir/Questionnaire/$questionnaire-package"),
    ("GET", "/fhir/AuditEvent"), ("GET", "/admin/rules"), ("GET", "/admin/auth/clients"),
    ("GET", "/review/api/cases"), ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/staff/me"),
])
def test_production_authenticates_everything_else(http, method, path):
    resp = http.request(method, path, content=b"{}" if method == "POST" else None,
                        headers={"Content-Type": "application/fhir+json"} if method == "POST" else {})
    assert resp.status_code == 401, (path, resp.status_code)
    assert resp.headers["www-authenticate"].startswith("Bearer")


def test_a_route_without_a_declared_requirement_is_refused(http):
    assert http.get("/zz-undeclared-probe").status_code == 403


def test_production_has_no_demo_staff_or_clients(http, prod):
    assert http.post("/staff/login", json={"username": "admin", "password": "admin-sandbox"}).status_code == 401
    key = ClientKey.from_pem((ROOT / "docs/sandbox-keys/sandbox-clinic-es384.pem").read_bytes(), "ES384", "sandbox-clinic-es384")
    resp = http.post("/auth/token", data=token_form(key.assertion("sandbox-clinic", f"{prod.url}/auth/token"), "system/*.rs"))
    assert resp.status_code == 401


def test_production_refuses_the_published_demo_keys_even_when_registered(http, prod):
    import json

    harness = Harness(http, prod.url)
    demo = json.loads((ROOT / "server/auth/sandbox_clients.json").read_text())["sandbox-clinic"]["jwks"]
    resp = http.post("/admin/auth/clients", json={"client_id": "copied-demo", "name": "Copied demo", "npi": "1234567893",
                                                  "jwks": demo}, headers=harness.admin_headers)
    assert resp.status_code == 201
    key = ClientKey.from_pem((ROOT / "docs/sandbox-keys/sandbox-clinic-es384.pem").read_bytes(), "ES384", "sandbox-clinic-es384")
    resp = http.post("/auth/token", data=token_form(key.assertion("copied-demo", f"{prod.url}/auth/token"), "system/*.rs"))
    assert resp.status_code == 401 and "sandbox" in resp.json()["error_description"]


def test_production_works_with_a_real_client(http, prod):
    harness = Harness(http, prod.url)
    headers = harness.client_headers(scope="system/Organization.rs")
    assert http.get("/fhir/Organization", headers=headers).status_code == 200
    assert harness.admin and ADMIN_USER and ADMIN_PASSWORD


def test_the_open_sandbox_serves_fhir_without_a_token(client):
    assert client.get("/fhir/Patient/pat-001").status_code == 200


def test_the_open_sandbox_still_checks_a_token_that_is_presented(client):
    resp = client.get("/fhir/Patient/pat-001", headers={"Authorization": "Bearer not.a.token"})
    assert resp.status_code == 401


def test_the_open_sandbox_still_requires_sign_in_for_security_administration(client):
    assert client.get("/admin/auth/clients").status_code == 401
    assert client.get("/fhir/AuditEvent").status_code == 401
    token = client.post("/staff/login", json={"username": "admin", "password": "admin-sandbox"}).json()["token"]
    client.cookies.clear()  # the shared client must not stay signed in for other tests
    assert client.get("/admin/auth/clients", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_the_open_sandbox_publishes_demo_clients(client, server):
    key = ClientKey.from_pem((ROOT / "docs/sandbox-keys/sandbox-hospital-es384.pem").read_bytes(), "ES384", "sandbox-hospital-es384")
    resp = client.post("/auth/token", data=token_form(key.assertion("sandbox-hospital", f"{server.url}/auth/token"), "system/Claim.c"))
    assert resp.status_code == 200
    token = resp.json()["access_token"]
    assert client.get("/fhir/Patient/pat-001", headers={"Authorization": f"Bearer {token}"}).status_code == 403


def test_require_auth_and_keys_come_from_the_environment(tmp_path):
    from server.auth.tokens import generate_signing_key

    key_file = tmp_path / "key.pem"
    key_file.write_bytes(generate_signing_key())
    pw = tmp_path / "pw"
    pw.write_text("a long admin password\n")
    config = AuthConfig.from_env({"PRECERT_REQUIRE_AUTH": "true", "PRECERT_AUTH_SIGNING_KEY_FILE": str(key_file),
                                  "PRECERT_ACCESS_TOKEN_SECONDS": "3600", "PRECERT_ADMIN_USERNAME": "root",
                                  "PRECERT_ADMIN_PASSWORD_FILE": str(pw)})
    assert config.require_auth is True and config.signing_key_pem.startswith(b"-----BEGIN")
    assert config.access_token_seconds == 300
    assert config.admin_password == "a long admin password"
    assert config.enforcing(Settings(mode="sandbox"))
    assert not AuthConfig.from_env({}).enforcing(Settings(mode="sandbox"))
    assert AuthConfig.from_env({"PRECERT_REQUIRE_AUTH": "false"}).enforcing(Settings(mode="production"))


def test_sandbox_workers_share_one_generated_signing_key(mongodb_uri):
    """Two app instances on one sandbox database (two workers) honour each other's tokens."""
    import uuid

    from server.app import create_app
    from server.auth.testing import ClientKey as Key

    settings = Settings(mongodb_uri=mongodb_uri, db_name=f"precert_workers_{uuid.uuid4().hex[:8]}", mode="sandbox")
    first = ThreadedServer(create_app(settings)).start()
    second = ThreadedServer(create_app(settings)).start()
    try:
        key = Key.from_pem((ROOT / "docs/sandbox-keys/sandbox-clinic-es384.pem").read_bytes(), "ES384", "sandbox-clinic-es384")
        token = httpx.post(f"{first.url}/auth/token",
                           data=token_form(key.assertion("sandbox-clinic", f"{first.url}/auth/token"), "system/Patient.rs")).json()["access_token"]
        resp = httpx.get(f"{second.url}/fhir/Patient/pat-001", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200
    finally:
        second.stop()
        first.stop()
