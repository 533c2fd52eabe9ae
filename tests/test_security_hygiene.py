"""Hygiene: no PHI or credentials in logs, security headers, CORS closed unless configured."""

from __future__ import annotations

import logging
import threading
import time

import httpx
import orjson
import pytest
import uvicorn

from server.auth.testing import ClientKey, Harness, secured_app, token_form
from tests.pas_support import pas_request
from tests.support import ThreadedServer, free_port

PATIENT_FAMILY, PATIENT_GIVEN, MEMBER_ID = "Rivera", "Ana", "PCM000001"  # sandbox member pat-001


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        if record.thread == threading.main_thread().ident:
            return  # the test's own HTTP client, not the server
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name}: {text}")


@pytest.fixture(scope="module")
def logged_server(mongodb_uri):
    """A server logging everything, access log included, into a capture."""
    app = secured_app(mongodb_uri)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="debug", access_log=True, lifespan="on"))
    capture = Capture()
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.access", "uvicorn.error", "precert", "httpx")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(capture)
        lg.setLevel(logging.DEBUG)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", capture
    server.should_exit = True
    thread.join(30)
    for lg, level in saved:
        lg.removeHandler(capture)
        lg.setLevel(level)


def test_no_phi_or_credentials_reach_the_logs(logged_server):
    base, capture = logged_server
    with httpx.Client(base_url=base, timeout=30) as http:
        harness = Harness(http, base)
        cid, key = harness.register(npi="1234567893")
        assertion = key.assertion(cid, f"{base}/auth/token")
        token = http.post("/auth/token", data=token_form(assertion, "system/*.cruds")).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}

        assert http.get("/fhir/Patient", params={"family": PATIENT_FAMILY, "identifier": MEMBER_ID}, headers=auth).status_code == 200
        bundle = pas_request("2.2.1", member=MEMBER_ID)
        for e in bundle["entry"]:
            if e["resource"]["resourceType"] == "Patient":
                e["resource"]["name"] = [{"family": PATIENT_FAMILY, "given": [PATIENT_GIVEN]}]
        assert http.post("/fhir/Claim/$submit", content=orjson.dumps(bundle), headers=auth).status_code == 200
        # Errors that echo bodies back to the caller must not echo them into the log.
        http.post("/fhir/Patient", content=f'{{"resourceType":"Patient","name":[{{"family":"{PATIENT_FAMILY}"'.encode(), headers=auth)
        http.post("/fhir/Patient", content=orjson.dumps({"resourceType": "Patient", "name": PATIENT_FAMILY, "identifier": MEMBER_ID}), headers=auth)
        http.post("/fhir/Claim/$submit", content=orjson.dumps({"resourceType": "Bundle", "type": "collection",
                                                                 "entry": [{"resource": {"resourceType": "Patient", "name": [{"family": PATIENT_FAMILY}]}}]}), headers=auth)
        http.get("/fhir/Patient", params={"name": PATIENT_FAMILY}, headers={"Authorization": "Bearer " + token[:-4] + "AAAA"})
        http.post("/auth/token", data=token_form(assertion, "system/*.cruds"))  # replay
        http.post("/staff/login", json={"username": "reviewer", "password": f"{PATIENT_FAMILY}-secret"})
        deadline = time.monotonic() + 10  # the access line of the last request is written after its answer
        while not any("/staff/login" in line for line in list(capture.lines)):
            assert time.monotonic() < deadline, "the access log never showed the last request"
            time.sleep(0.02)
    text = "\n".join(capture.lines)
    # Access lines name the route template, not the raw path.
    assert "/fhir/{rtype}" in text, "the capture saw the access log"
    for secret in (PATIENT_FAMILY, MEMBER_ID, token, token[:40], assertion[:40], f"{PATIENT_FAMILY}-secret"):
        assert secret not in text, f"{secret[:20]}... appeared in the log"


def test_html_pages_get_security_headers(client):
    resp = client.get("/docs")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["referrer-policy"] == "no-referrer"


def test_api_responses_are_not_cached_or_sniffed(client):
    resp = client.get("/fhir/Patient/pat-001")
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in resp.headers  # plain http: HSTS only behind https


def test_https_deployments_send_hsts(mongodb_uri):
    server = ThreadedServer(secured_app(mongodb_uri, base_url="https://payer.example.org")).start()
    try:
        resp = httpx.get(f"{server.url}/fhir/metadata")
        assert resp.headers["strict-transport-security"].startswith("max-age=")
    finally:
        server.stop()


def test_cors_is_closed_by_default(client):
    pre = client.options("/fhir/Patient", headers={"Origin": "https://app.example.org", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in pre.headers
    resp = client.get("/fhir/metadata", headers={"Origin": "https://app.example.org"})
    assert "access-control-allow-origin" not in resp.headers


def test_cors_allows_only_the_configured_origins(mongodb_uri):
    server = ThreadedServer(secured_app(mongodb_uri, cors_origins=("https://app.example.org",))).start()
    try:
        with httpx.Client(base_url=server.url) as http:
            pre = http.options("/fhir/Claim", headers={"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": "authorization,content-type"})
            assert pre.status_code == 200
            assert pre.headers["access-control-allow-origin"] == "https://app.example.org"
            assert "authorization" in pre.headers["access-control-allow-headers"].lower()
            other = http.options("/fhir/Claim", headers={"Origin": "https://evil.example.org", "Access-Control-Request-Method": "POST"})
            assert other.headers.get("access-control-allow-origin") != "https://evil.example.org"
            resp = http.get("/fhir/metadata", headers={"Origin": "https://app.example.org"})
            assert resp.headers["access-control-allow-origin"] == "https://app.example.org"
            # CORS never replaces authentication.
            assert http.get("/fhir/Claim", headers={"Origin": "https://app.example.org"}).status_code == 401
    finally:
        server.stop()


def test_fhir_bodies_are_size_limited_before_authorization_matters(client):
    big = b'{"resourceType":"Patient","text":"' + b"x" * (11 * 1024 * 1024) + b'"}'
    resp = client.post("/fhir/Patient", content=big, headers={"Content-Type": "application/fhir+json"})
    assert resp.status_code == 413


def test_a_forged_client_key_never_appears_in_errors(client, server):
    key = ClientKey.generate("ES384")
    resp = client.post("/auth/token", data=token_form(key.assertion("sandbox-clinic", f"{server.url}/auth/token"), "system/*.rs"))
    assert resp.status_code == 401
    assert "eyJ" not in resp.text
