"""EHR authentication: a JWT from a trusted EHR is accepted; every kind of bad token is refused."""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid

import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_hooks.config import DEMO_EHR_ISS, CRDConfig, TrustedEHR
from cds_hooks.jwt_auth import demo_token
from tests.test_crd_conformance import fresh, order_sign, service_request

ISS = "https://ehr.test.example.org"


class Key:
    def __init__(self, alg: str):
        self.alg = alg
        self.kid = uuid.uuid4().hex
        if alg.startswith("ES"):
            self.private = ec.generate_private_key(ec.SECP384R1())
            jwk = ECAlgorithm.to_jwk(self.private.public_key())
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = RSAAlgorithm.to_jwk(self.private.public_key())
        self.jwk = json.loads(jwk) | {"kid": self.kid, "alg": alg, "use": "sig"}

    def token(self, aud: str, *, jku: str | None = None, iss: str = ISS, claims: dict | None = None, drop: tuple = (),
              headers: dict | None = None, alg: str | None = None, key=None) -> str:
        now = int(time.time())
        payload = {"iss": iss, "aud": aud, "iat": now, "exp": now + 300, "jti": secrets.token_hex(32)}
        payload.update(claims or {})
        for k in drop:
            payload.pop(k, None)
        head = {"kid": self.kid, "typ": "JWT"} | ({"jku": jku} if jku else {}) | (headers or {})
        return jwt.encode(payload, key or self.private, algorithm=alg or self.alg, headers=head)


@pytest.fixture
def ehr_keys():
    return {"ES384": Key("ES384"), "RS384": Key("RS384")}


@pytest.fixture
def enforced(server, ehr_keys):
    """JWT enforcement on, with one trusted EHR whose JWK Set is served (mocked) at its jku."""
    jku = f"{ISS}/{uuid.uuid4().hex}/jwks.json"
    crd = server.app.state.precert.services["crd"]
    config: CRDConfig = crd.config
    saved = (config.require_jwt, list(config.trusted))
    config.require_jwt = True
    config.trusted = saved[1] + [TrustedEHR(ISS, jku=jku)]
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        route = mock.get(jku).respond(json={"keys": [k.jwk for k in ehr_keys.values()]})
        try:
            yield {"jku": jku, "route": route, "mock": mock}
        finally:
            config.require_jwt, config.trusted = saved


def aud(server, service="order-sign-crd") -> str:
    return f"{server.url}/cds-services/{service}"


def hook(client, token: str | None, service="order-sign-crd"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(f"/cds-services/{service}", json=order_sign(service_request("j-1", "99213")), headers=headers)


def refused(r, status: int, text: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["message"] and text in r.json()["message"], r.json()
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_a_valid_token_from_a_trusted_ehr_is_accepted(client, server, enforced, ehr_keys, alg):
    r = hook(client, ehr_keys[alg].token(aud(server), jku=enforced["jku"]))
    assert r.status_code == 200, r.text
    assert enforced["route"].called


def test_the_jwks_is_cached(client, server, enforced, ehr_keys):
    for _ in range(3):
        assert hook(client, ehr_keys["ES384"].token(aud(server), jku=enforced["jku"])).status_code == 200
    assert enforced["route"].call_count == 1


def test_a_new_key_id_fetches_the_jwks_again(client, server, enforced, ehr_keys):
    assert hook(client, ehr_keys["ES384"].token(aud(server), jku=enforced["jku"])).status_code == 200
    rotated = Key("ES384")
    enforced["route"].respond(json={"keys": [rotated.jwk]})
    crd = server.app.state.precert.services["crd"]
    crd.verifier.jwks.age(enforced["jku"], 60)  # past the minimum interval between fetches
    assert hook(client, rotated.token(aud(server), jku=enforced["jku"])).status_code == 200


def test_the_sandbox_demo_ehr_key_is_accepted(client, server, enforced):
    assert hook(client, demo_token(aud(server))).status_code == 200


def test_the_caller_is_recorded(client, server, enforced, ehr_keys):
    body = order_sign(service_request("j-2", "99213"))
    token = ehr_keys["ES384"].token(aud(server), jku=enforced["jku"])
    client.post("/cds-services/order-sign-crd", json=body, headers={"Authorization": f"Bearer {token}"})
    rec = fresh(client).get("/admin/crd/calls", params={"hookInstance": body["hookInstance"]}).json()["calls"][0]
    assert rec["client"]["iss"] == ISS and rec["client"]["verified"] is True


def test_missing_token(client, server, enforced):
    refused(hook(client, None), 401, "JWT bearer token is required")


def test_not_a_jwt(client, server, enforced):
    refused(hook(client, "not-a-jwt"), 401, "not a JWT")


def test_alg_none(client, server, enforced, ehr_keys):
    now = int(time.time())
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    token = f"{enc({'alg': 'none', 'typ': 'JWT', 'kid': 'x'})}.{enc({'iss': ISS, 'aud': aud(server), 'iat': now, 'exp': now + 60, 'jti': 'n'})}."
    refused(hook(client, token), 401, "alg 'none'")


def test_symmetric_hmac(client, server, enforced, ehr_keys):
    token = ehr_keys["ES384"].token(aud(server), jku=enforced["jku"], alg="HS256", key="shared-secret-that-is-long-enough-1234")
    refused(hook(client, token), 401, "alg 'HS256'")


def test_wrong_audience(client, server, enforced, ehr_keys):
    refused(hook(client, ehr_keys["ES384"].token(aud(server, "order-select-crd"), jku=enforced["jku"])), 401, "'aud'")


def test_expired(client, server, enforced, ehr_keys):
    token = ehr_keys["ES384"].token(aud(server), jku=enforced["jku"], claims={"iat": int(time.time()) - 900, "exp": int(time.time()) - 600})
    refused(hook(client, token), 401, "expired")


def test_issued_in_the_future(client, server, enforced, ehr_keys):
    token = ehr_keys["ES384"].token(aud(server), jku=enforced["jku"], claims={"iat": int(time.time()) + 600, "exp": int(time.time()) + 900})
    refused(hook(client, token), 401, "'iat'")


@pytest.mark.parametrize("claim", ["jti", "exp", "iat"])
def test_missing_claim(client, server, enforced, ehr_keys, claim):
    refused(hook(client, ehr_keys["ES384"].token(aud(server), jku=enforced["jku"], drop=(claim,))), 401, claim)


def test_replayed_jti(client, server, enforced, ehr_keys):
    token = ehr_keys["ES384"].token(aud(server), jku=enforced["jku"])
    assert hook(client, token).status_code == 200
    refused(hook(client, token), 401, "replay")


def test_replay_to_another_worker_is_refused(client, server, enforced, ehr_keys):
    """Another worker has not seen the token in memory; the shared record refuses it all the same."""
    token = ehr_keys["ES384"].token(aud(server), jku=enforced["jku"])
    assert hook(client, token).status_code == 200
    server.app.state.precert.services["crd"].verifier.replay.forget()
    refused(hook(client, token), 401, "replay")


def test_untrusted_issuer(client, server, enforced, ehr_keys):
    refused(hook(client, ehr_keys["ES384"].token(aud(server), jku=enforced["jku"], iss="https://evil.example.org")), 403, "not a trusted EHR")


def test_untrusted_jku(client, server, enforced, ehr_keys):
    refused(hook(client, ehr_keys["ES384"].token(aud(server), jku="https://evil.example.org/jwks.json")), 403, "jku")


def test_unknown_kid(client, server, enforced):
    stranger = Key("ES384")
    refused(hook(client, stranger.token(aud(server), jku=enforced["jku"])), 401, "no key")


def test_bad_signature(client, server, enforced, ehr_keys):
    token = ehr_keys["ES384"].token(aud(server), jku=enforced["jku"])
    head, payload, sig = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "==")) | {"iss": ISS, "jti": "forged"}
    body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    refused(hook(client, f"{head}.{body}.{sig}"), 401, "signature")


def test_key_of_the_wrong_type(client, server, enforced, ehr_keys):
    rsa_key = ehr_keys["RS384"]
    token = jwt.encode({"iss": ISS, "aud": aud(server), "iat": int(time.time()), "exp": int(time.time()) + 60, "jti": "k"},
                       ehr_keys["ES384"].private, algorithm="ES384", headers={"kid": rsa_key.kid, "jku": enforced["jku"], "typ": "JWT"})
    refused(hook(client, token), 401, "")


def test_wrong_typ(client, server, enforced, ehr_keys):
    refused(hook(client, ehr_keys["ES384"].token(aud(server), jku=enforced["jku"], headers={"typ": "at+jwt"})), 401, "typ")


def test_too_long_lived(client, server, enforced, ehr_keys):
    now = int(time.time())
    refused(hook(client, ehr_keys["ES384"].token(aud(server), jku=enforced["jku"], claims={"exp": now + 86400})), 401, "longer")


def test_unreachable_jwks(client, server, enforced, ehr_keys):
    enforced["route"].respond(500)
    crd = server.app.state.precert.services["crd"]
    crd.verifier.jwks.forget(enforced["jku"])
    refused(hook(client, ehr_keys["ES384"].token(aud(server), jku=enforced["jku"])), 401, "HTTP 500")


def test_feedback_needs_a_token_too(client, server, enforced, ehr_keys):
    r = client.post("/cds-services/order-sign-crd/feedback", json={"feedback": []})
    assert r.status_code == 401
    token = ehr_keys["ES384"].token(f"{server.url}/cds-services/order-sign-crd/feedback", jku=enforced["jku"])
    ok = client.post("/cds-services/order-sign-crd/feedback", headers={"Authorization": f"Bearer {token}"},
                     json={"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]})
    assert ok.status_code == 200


def test_discovery_stays_open(client, server, enforced):
    assert client.get("/cds-services").status_code == 200


def test_sandbox_does_not_require_a_token_by_default(client):
    assert hook(client, None).status_code == 200


def test_production_requires_tokens_and_refuses_the_demo_key():
    config = CRDConfig.from_env("production", {})
    assert config.require_jwt and not any(t.iss == DEMO_EHR_ISS for t in config.trusted)
    sandbox = CRDConfig.from_env("sandbox", {"PRECERT_CRD_REQUIRE_JWT": "true"})
    assert sandbox.require_jwt and any(t.iss == DEMO_EHR_ISS for t in sandbox.trusted)
    assert not CRDConfig.from_env("sandbox", {}).require_jwt


def test_trusted_ehrs_from_the_environment(tmp_path):
    entries = [{"iss": "https://a.example.org", "jku": "https://a.example.org/jwks.json"}]
    assert CRDConfig.from_env("production", {"PRECERT_CRD_TRUSTED_EHRS": json.dumps(entries)}).trusted[0].jku == entries[0]["jku"]
    path = tmp_path / "ehrs.json"
    path.write_text(json.dumps(entries))
    assert CRDConfig.from_env("production", {"PRECERT_CRD_TRUSTED_EHRS": str(path)}).trusted[0].iss == "https://a.example.org"


def test_jwt_reuse_is_refused_by_default(server):
    from server.settings import Settings

    assert Settings.from_env({}).crd_allow_jwt_reuse is False
    assert server.app.state.precert.services["crd"].verifier.allow_reuse is False


@pytest.fixture
def reuse_allowed(server):
    """PRECERT_CRD_ALLOW_JWT_REUSE=true, as a test laboratory runs the server."""
    from server.settings import Settings

    assert Settings.from_env({"PRECERT_CRD_ALLOW_JWT_REUSE": "true"}).crd_allow_jwt_reuse is True
    verifier = server.app.state.precert.services["crd"].verifier
    verifier.allow_reuse = True
    try:
        yield
    finally:
        verifier.allow_reuse = False


def test_a_test_laboratory_may_reuse_a_jwt_within_its_lifetime(client, server, enforced, ehr_keys, reuse_allowed):
    token = ehr_keys["ES384"].token(aud(server), jku=enforced["jku"])
    assert [hook(client, token).status_code for _ in range(3)] == [200, 200, 200]


def test_a_reused_jwt_past_its_lifetime_is_still_refused(client, server, enforced, ehr_keys, reuse_allowed):
    now = int(time.time())
    token = ehr_keys["ES384"].token(aud(server), jku=enforced["jku"], claims={"iat": now - 400, "exp": now - 100})
    refused(hook(client, token), 401, "expired")


# ----------------------------------------------------------------------------- the sandbox says why
def _demo_claims_token(server, *, aud_url: str | None = None, kid: str = "precert-demo-ehr-es384", key=None, lifetime: int = 300) -> str:
    from pathlib import Path

    import cds_hooks

    pem = key or (Path(cds_hooks.__file__).parent / "demo_ehr_private_key.pem").read_text()
    now = int(time.time())
    return jwt.encode({"iss": DEMO_EHR_ISS, "aud": aud_url or aud(server), "iat": now - 10, "exp": now + lifetime,
                       "jti": uuid.uuid4().hex}, pem, algorithm="ES384", headers={"kid": kid, "typ": "JWT"})


@pytest.mark.parametrize("problem,reason", [
    ("wrong-aud", "'aud' must be"),
    ("unknown-kid", "no key 'not-a-demo-key'"),
    ("bad-signature", "signature does not verify"),
    ("expired", "expired"),
])
def test_in_the_sandbox_a_failing_jwt_is_answered_and_the_reason_given(client, server, problem, reason):
    other = ec.generate_private_key(ec.SECP384R1())
    token = {
        "wrong-aud": lambda: _demo_claims_token(server, aud_url="https://somewhere.else.example/cds-services/order-sign-crd"),
        "unknown-kid": lambda: _demo_claims_token(server, kid="not-a-demo-key"),
        "bad-signature": lambda: _demo_claims_token(server, key=other),
        "expired": lambda: _demo_claims_token(server, lifetime=-120),
    }[problem]()
    r = hook(client, token)
    assert r.status_code == 200, r.text
    assert reason in r.headers["x-precert-jwt-problem"]
    first = r.json()["cards"][0]
    assert first["indicator"] == "info" and first["summary"].startswith("Sandbox: the EHR's JWT was not accepted")
    assert reason in first["detail"]
    assert any(a["resource"]["resourceType"] == "ServiceRequest" for a in r.json().get("systemActions", []))


def test_in_the_sandbox_a_good_jwt_or_none_adds_no_problem(client, server):
    for token in (demo_token(aud(server)), None):
        r = hook(client, token)
        assert r.status_code == 200
        assert "x-precert-jwt-problem" not in r.headers
        assert not any(c["summary"].startswith("Sandbox: the EHR's JWT") for c in r.json()["cards"])


def test_a_failing_jwt_is_still_refused_when_tokens_are_required(client, server, enforced):
    r = hook(client, _demo_claims_token(server, kid="not-a-demo-key"))
    refused(r, 401, "no key 'not-a-demo-key'")


def test_the_calls_page_shows_each_call_and_why_its_token_failed(client, server):
    body = order_sign(service_request("j-page", "70551"))
    r = client.post("/cds-services/order-sign-crd", json=body,
                    headers={"Authorization": f"Bearer {_demo_claims_token(server, kid='not-a-demo-key')}"})
    assert r.status_code == 200
    page = fresh(client).get("/admin/crd/calls", params={"hookInstance": body["hookInstance"]},
                             headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "no key &#39;not-a-demo-key&#39;" in page.text and "order-sign-crd" in page.text
    assert page.text.count('class="call"') == 1
    as_json = fresh(client).get("/admin/crd/calls", params={"hookInstance": body["hookInstance"]}, headers={"Accept": "application/json"})
    assert as_json.headers["content-type"].startswith("application/json")
    assert "not-a-demo-key" in as_json.json()["calls"][0]["client"]["error"]


def test_the_calls_page_needs_a_staff_sign_in_when_authentication_is_enforced(http, harness):
    html = {"Accept": "text/html"}
    assert http.get("/admin/crd/calls", headers=html).status_code == 401
    r = http.get("/admin/crd/calls", headers={**html, **harness.admin_headers})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
