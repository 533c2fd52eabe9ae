"""SMART Backend Services: the token endpoint (client-confidential-asymmetric) and access tokens."""

from __future__ import annotations

import base64
import json
import time

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from server.auth.testing import ClientKey, secured_app, token_form
from server.auth.tokens import ASSERTION_TYPE
from tests.support import ThreadedServer


@pytest.fixture(scope="module")
def jwks_host():
    """A client's JWKS URL, served for real on loopback."""
    served = {"jwks": {"keys": []}, "hits": 0, "cache": "max-age=300"}

    async def jwks(request):
        served["hits"] += 1
        return JSONResponse(served["jwks"], headers={"Cache-Control": served["cache"]})

    host = ThreadedServer(Starlette(routes=[Route("/jwks.json", jwks)])).start()
    served["url"] = f"{host.url}/jwks.json"
    yield served
    host.stop()


def token_url(srv) -> str:
    return f"{srv.url}/auth/token"


def post(http, form: dict) -> httpx.Response:
    return http.post("/auth/token", data=form, headers={"Accept": "application/json"})


def b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


# ---------------------------------------------------------------------- discovery
def test_smart_configuration_is_served_at_the_root_and_the_fhir_base(http, srv):
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        resp = http.get(path, headers={"Accept": "application/fhir+json"})
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/json")
        doc = resp.json()
        assert doc["token_endpoint"] == token_url(srv)
        assert doc["grant_types_supported"] == ["client_credentials"]
        assert "private_key_jwt" in doc["token_endpoint_auth_methods_supported"]
        assert {"RS384", "ES384"} <= set(doc["token_endpoint_auth_signing_alg_values_supported"])
        assert {"client-confidential-asymmetric", "permission-v1", "permission-v2"} <= set(doc["capabilities"])
        assert doc["code_challenge_methods_supported"] == ["S256"]
        assert "issuer" not in doc and "authorization_endpoint" not in doc


def test_capability_statement_advertises_the_token_endpoint(http, srv):
    statement = http.get("/fhir/metadata").json()
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = security["extension"][0]
    assert uris["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert {"url": "token", "valueUri": token_url(srv)} in uris["extension"]


# ---------------------------------------------------------------------- successful requests
@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_a_registered_client_gets_a_short_lived_bearer_token(http, srv, harness, alg):
    cid, key = harness.register(alg=alg)
    resp = post(http, token_form(key.assertion(cid, token_url(srv)), "system/Claim.c system/ClaimResponse.rs"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["token_type"].lower() == "bearer"
    assert isinstance(body["expires_in"], int) and 0 < body["expires_in"] <= 300
    assert body["scope"] == "system/Claim.c system/ClaimResponse.rs"
    assert "refresh_token" not in body
    ok = http.get("/fhir/ClaimResponse", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert ok.status_code == 200


def test_inferno_style_assertion_with_exp_exactly_five_minutes_and_jku_is_accepted(http, srv, harness, jwks_host):
    key = ClientKey.generate("ES384")
    jwks_host["jwks"] = key.jwks
    cid, _ = harness.register(jwks_url=jwks_host["url"])
    assertion = key.assertion(cid, token_url(srv), lifetime=300, headers={"jku": jwks_host["url"]})
    resp = post(http, token_form(assertion, "system/Claim.c"))
    assert resp.status_code == 200, resp.text


def test_scopes_in_v1_syntax_are_granted_as_written(http, srv, harness):
    cid, key = harness.register(scopes="system/*.cruds")
    resp = post(http, token_form(key.assertion(cid, token_url(srv)), "system/Claim.write system/*.read"))
    assert resp.json()["scope"] == "system/Claim.write system/*.read"
    headers = {"Authorization": f"Bearer {resp.json()['access_token']}"}
    assert http.get("/fhir/Patient/pat-001", headers=headers).status_code == 200
    assert http.delete("/fhir/Patient/pat-001", headers=headers).status_code == 403


def test_scopes_beyond_the_registration_are_cut_down(http, srv, harness):
    cid, key = harness.register(scopes="system/Claim.cr system/ClaimResponse.rs")
    resp = post(http, token_form(key.assertion(cid, token_url(srv)),
                                 "system/Claim.cruds system/Patient.rs system/*.read patient/Claim.read system/Claim.rs?status=active"))
    assert resp.status_code == 200
    granted = resp.json()["scope"].split()
    assert "system/Claim.cr" in granted
    assert "system/ClaimResponse.rs" in granted
    assert not any(s.startswith("system/Patient") or s.startswith("patient/") or "?" in s for s in granted)
    headers = {"Authorization": f"Bearer {resp.json()['access_token']}"}
    assert http.get("/fhir/Patient/pat-001", headers=headers).status_code == 403


def test_no_grantable_scope_is_invalid_scope(http, srv, harness):
    cid, key = harness.register(scopes="system/Claim.c")
    resp = post(http, token_form(key.assertion(cid, token_url(srv)), "system/Patient.rs user/Claim.read"))
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_scope"


def test_missing_scope_is_invalid_scope(http, srv, harness):
    cid, key = harness.register()
    resp = post(http, token_form(key.assertion(cid, token_url(srv)), ""))
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_scope"


def test_the_sandbox_demo_client_works_with_its_published_key(mongodb_uri):
    from pathlib import Path

    server = ThreadedServer(secured_app(mongodb_uri)).start()
    try:
        pem = (Path(__file__).resolve().parents[1] / "docs/sandbox-keys/sandbox-clinic-es384.pem").read_bytes()
        key = ClientKey.from_pem(pem, "ES384", "sandbox-clinic-es384")
        with httpx.Client(base_url=server.url) as c:
            resp = post(c, token_form(key.assertion("sandbox-clinic", f"{server.url}/auth/token"), "system/*.rs"))
            assert resp.status_code == 200, resp.text
    finally:
        server.stop()


# ---------------------------------------------------------------------- rejected requests
def test_wrong_grant_type_is_unsupported_grant_type(http, srv, harness):
    cid, key = harness.register()
    form = token_form(key.assertion(cid, token_url(srv)), "system/Claim.c")
    form["grant_type"] = "not_a_grant_type"
    resp = post(http, form)
    assert resp.status_code == 400 and resp.json()["error"] == "unsupported_grant_type"


def test_wrong_assertion_type_is_invalid_client(http, srv, harness):
    cid, key = harness.register()
    form = token_form(key.assertion(cid, token_url(srv)), "system/Claim.c")
    form["client_assertion_type"] = "not_an_assertion_type"
    resp = post(http, form)
    assert resp.status_code in (400, 401) and resp.json()["error"] == "invalid_client"


def rejected(http, srv, assertion: str, scope: str = "system/Claim.c") -> dict:
    resp = post(http, token_form(assertion, scope))
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "invalid_client"
    assert "access_token" not in resp.json()
    return resp.json()


def test_expired_assertion_is_rejected(http, srv, harness):
    cid, key = harness.register()
    rejected(http, srv, key.assertion(cid, token_url(srv), lifetime=-120))


def test_assertion_valid_for_more_than_five_minutes_is_rejected(http, srv, harness):
    cid, key = harness.register()
    rejected(http, srv, key.assertion(cid, token_url(srv), lifetime=3600))


def test_wrong_audience_is_rejected(http, srv, harness):
    cid, key = harness.register()
    rejected(http, srv, key.assertion(cid, "https://some-other-server.example.org/token"))
    rejected(http, srv, key.assertion(cid, f"{srv.url}/fhir"))


def test_wrong_signature_is_rejected(http, srv, harness):
    cid, key = harness.register()
    impostor = ClientKey("ES384", key.kid, ClientKey.generate("ES384").private)
    rejected(http, srv, impostor.assertion(cid, token_url(srv)))
    good = key.assertion(cid, token_url(srv))
    head, body, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = claims["iss"] = cid
    claims["exp"] += 1
    rejected(http, srv, f"{head}.{b64(claims)}.{sig}")


def test_replayed_jti_is_rejected(http, srv, harness):
    cid, key = harness.register()
    assertion = key.assertion(cid, token_url(srv))
    assert post(http, token_form(assertion, "system/Claim.c")).status_code == 200
    body = rejected(http, srv, assertion)
    assert "replay" in body["error_description"]
    # The same jti in a freshly signed assertion is a replay too.
    jti = jwt.decode(assertion, options={"verify_signature": False})["jti"]
    rejected(http, srv, key.assertion(cid, token_url(srv), jti=jti))


def test_alg_none_is_rejected(http, srv, harness):
    cid, key = harness.register()
    claims = {"iss": cid, "sub": cid, "aud": token_url(srv), "exp": int(time.time()) + 200, "jti": "none-alg-1"}
    rejected(http, srv, f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': key.kid})}.{b64(claims)}.")


def test_hmac_assertions_are_rejected(http, srv, harness):
    cid, key = harness.register(alg="RS384")
    # The classic confusion: sign with HMAC using the client's public key as the secret.
    from cryptography.hazmat.primitives import serialization

    public_pem = key.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = {"iss": cid, "sub": cid, "aud": token_url(srv), "exp": int(time.time()) + 200, "jti": "hmac-1"}
    head = b64({"alg": "HS384", "typ": "JWT", "kid": key.kid})
    import hashlib
    import hmac

    signing_input = f"{head}.{b64(claims)}"
    sig = base64.urlsafe_b64encode(hmac.new(public_pem, signing_input.encode(), hashlib.sha384).digest()).rstrip(b"=").decode()
    rejected(http, srv, f"{signing_input}.{sig}")


def test_other_algorithms_and_key_mismatches_are_rejected(http, srv, harness):
    cid, key = harness.register(alg="ES384")
    rejected(http, srv, key.assertion(cid, token_url(srv), headers={"kid": "no-such-kid"}))
    es256 = ClientKey("ES384", key.kid, __import__("cryptography.hazmat.primitives.asymmetric.ec", fromlist=["ec"]).generate_private_key(
        __import__("cryptography.hazmat.primitives.asymmetric.ec", fromlist=["ec"]).SECP256R1()))
    rejected(http, srv, es256.assertion(cid, token_url(srv), alg="ES256"))
    rsa_cid, rsa_key = harness.register(alg="RS384")
    rejected(http, srv, rsa_key.assertion(rsa_cid, token_url(srv), alg="RS256"))


def test_unknown_disabled_and_mismatched_clients_are_rejected(http, srv, harness):
    cid, key = harness.register()
    rejected(http, srv, key.assertion("never-registered", token_url(srv)))
    rejected(http, srv, key.assertion(cid, token_url(srv), claims={"sub": "someone-else"}))
    other_cid, _ = harness.register()
    rejected(http, srv, key.assertion(other_cid, token_url(srv)))  # signed with a key that is not other_cid's
    assert http.patch(f"/admin/auth/clients/{cid}", json={"active": False}, headers=harness.admin_headers).status_code == 200
    rejected(http, srv, key.assertion(cid, token_url(srv)))


def test_missing_claims_are_rejected(http, srv, harness):
    cid, key = harness.register()
    for drop in ("jti", "exp", "aud"):
        claims = {"iss": cid, "sub": cid, "aud": token_url(srv), "exp": int(time.time()) + 200, "jti": f"missing-{drop}"}
        del claims[drop]
        rejected(http, srv, jwt.encode(claims, key.private, algorithm="ES384", headers={"kid": key.kid, "typ": "JWT"}))


def test_jku_other_than_the_registered_url_is_rejected(http, srv, harness, jwks_host):
    key = ClientKey.generate("ES384")
    jwks_host["jwks"] = key.jwks
    cid, _ = harness.register(jwks_url=jwks_host["url"])
    rejected(http, srv, key.assertion(cid, token_url(srv), headers={"jku": "https://attacker.example.org/jwks.json"}))
    inline_cid, inline_key = harness.register()
    rejected(http, srv, inline_key.assertion(inline_cid, token_url(srv), headers={"jku": jwks_host["url"]}))


def test_jwks_url_is_cached_and_refetched_for_a_rotated_key(http, srv, harness, jwks_host):
    old = ClientKey.generate("ES384")
    jwks_host["jwks"] = old.jwks
    jwks_host["cache"] = "max-age=600"
    cid, _ = harness.register(jwks_url=jwks_host["url"])
    hits = jwks_host["hits"]
    for _ in range(3):
        assert post(http, token_form(old.assertion(cid, token_url(srv)), "system/Claim.c")).status_code == 200
    assert jwks_host["hits"] == hits + 1
    new = ClientKey.generate("ES384")
    jwks_host["jwks"] = new.jwks
    assert post(http, token_form(new.assertion(cid, token_url(srv)), "system/Claim.c")).status_code == 200
    rejected(http, srv, old.assertion(cid, token_url(srv)))


def test_unreachable_jwks_url_is_invalid_client(http, srv, harness):
    from tests.support import free_port

    key = ClientKey.generate("ES384")
    cid, _ = harness.register(jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json")
    rejected(http, srv, key.assertion(cid, token_url(srv)))


@pytest.mark.parametrize("assertion", ["", "not-a-jwt", "a.b.c", "eyJhbGciOiJFUzM4NCJ9.e30.", "\u202e<script>alert(1)</script>", "x" * 5000])
def test_malformed_assertions_are_invalid_client(http, srv, assertion):
    resp = post(http, token_form(assertion, "system/Claim.c"))
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"


def test_token_requests_must_be_forms_of_bounded_size(http, srv, harness):
    cid, key = harness.register()
    form = token_form(key.assertion(cid, token_url(srv)), "system/Claim.c")
    assert http.post("/auth/token", json=form).status_code == 400
    assert http.post("/auth/token", content=b"\xff\xfe" * 10, headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code in (400, 401)
    big = http.post("/auth/token", content=b"a=" + b"x" * (70 * 1024), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413
    dup = http.post("/auth/token", content="grant_type=client_credentials&grant_type=client_credentials",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert dup.status_code == 400 and dup.json()["error"] == "invalid_request"
    assert post(http, {"client_assertion_type": ASSERTION_TYPE}).status_code == 400


# ---------------------------------------------------------------------- access tokens at the FHIR API
def test_forged_and_expired_access_tokens_are_refused(http, srv, harness):
    cid, key = harness.register()
    good = harness.token(cid, key, "system/*.cruds")
    headers, body, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged_claims = {**claims, "scope": "system/*.cruds", "sub": "sandbox-clinic"}
    tokens = {
        "alg none": f"{b64({'alg': 'none', 'typ': 'at+jwt'})}.{b64(forged_claims)}.",
        "hmac": jwt.encode(forged_claims, "secret-guess", algorithm="HS256", headers={"typ": "at+jwt"}),
        "other key": jwt.encode(forged_claims, ClientKey.generate("ES384").private, algorithm="ES384", headers={"typ": "at+jwt"}),
        "tampered": f"{headers}.{b64(forged_claims)}.{sig}",
        "expired": srv.app.state.precert.services["auth"].tokens.mint(cid, "system/*.cruds", lifetime=-120),
        "client assertion": key.assertion(cid, token_url(srv)),
        "garbage": "abc.def.ghi",
    }
    for name, token in tokens.items():
        resp = http.get("/fhir/Patient/pat-001", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 401, name
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.json()["resourceType"] == "OperationOutcome"
    assert http.get("/fhir/Patient/pat-001", headers={"Authorization": f"Bearer {good}"}).status_code == 200
    assert http.get("/fhir/Patient/pat-001", headers={"Authorization": f"Basic {good}"}).status_code == 401


def test_disabling_a_client_stops_its_tokens(http, srv, harness):
    cid, key = harness.register()
    token = harness.token(cid, key, "system/Patient.rs")
    assert http.get("/fhir/Patient/pat-001", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert http.patch(f"/admin/auth/clients/{cid}", json={"active": False}, headers=harness.admin_headers).status_code == 200
    assert http.get("/fhir/Patient/pat-001", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_assertion_typ_other_than_jwt_is_rejected(http, srv, harness):
    cid, key = harness.register()
    rejected(http, srv, key.assertion(cid, token_url(srv), headers={"typ": "at+jwt"}))


def test_jwks_url_marked_no_store_is_fetched_every_time(http, srv, harness, jwks_host):
    key = ClientKey.generate("ES384")
    jwks_host["jwks"] = key.jwks
    jwks_host["cache"] = "no-store"
    cid, _ = harness.register(jwks_url=jwks_host["url"])
    hits = jwks_host["hits"]
    for _ in range(2):
        assert post(http, token_form(key.assertion(cid, token_url(srv)), "system/Claim.c")).status_code == 200
    assert jwks_host["hits"] == hits + 2
    jwks_host["cache"] = "max-age=300"
