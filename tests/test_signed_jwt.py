"""One verifier for signed JWTs and one replay store, shared by SMART client assertions and CDS Hooks
EHR tokens."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from server.auth.signed_jwt import Rejected, ReplayStore, check, parse

KEY = ec.generate_private_key(ec.SECP384R1())
OTHER = ec.generate_private_key(ec.SECP384R1())
AUD = "https://payer.example.org/auth/token"


def token(key=KEY, **claims) -> str:
    now = int(time.time())
    body = {"iss": "c", "sub": "c", "aud": AUD, "iat": now, "exp": now + 60, "jti": "j1", **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="ES384", headers={"kid": "k"})


def reason(fn) -> str:
    with pytest.raises(Rejected) as exc:
        fn()
    return exc.value.reason


def test_a_good_token_gives_its_claims():
    assert check(token(), KEY.public_key(), "ES384", AUD, 30, ["iss", "aud", "exp", "jti"])["jti"] == "j1"


def test_each_way_a_token_is_wrong_has_its_own_reason():
    pub = KEY.public_key()
    assert reason(lambda: parse("not.a.jwt")) == "malformed"
    assert reason(lambda: check(token(OTHER), pub, "ES384", AUD, 30, [])) == "signature"
    assert reason(lambda: check(token(exp=int(time.time()) - 120), pub, "ES384", AUD, 30, [])) == "expired"
    assert reason(lambda: check(token(aud="https://elsewhere.example.org"), pub, "ES384", AUD, 30, [])) == "audience"
    assert reason(lambda: check(token(jti=None), pub, "ES384", AUD, 30, ["jti"])) == "missing"
    # the algorithm is pinned: a token signed otherwise is refused whatever its header says
    assert reason(lambda: check(token(), pub, "RS384", AUD, 30, [])) == "invalid"


async def test_a_jti_is_accepted_once_per_kind_and_issuer():
    store = ReplayStore()
    later = time.time() + 60
    assert await store.first_use("smart", "client-a", "j1", later)
    assert not await store.first_use("smart", "client-a", "j1", later)
    assert await store.first_use("smart", "client-b", "j1", later)  # another issuer's jti is its own
    assert await store.first_use("cds-hooks", "client-a", "j1", later)  # and so is another kind's


async def test_a_jti_is_forgotten_once_its_token_has_expired():
    store = ReplayStore()
    assert await store.first_use("smart", "c", "old", time.time() - 1)
    assert await store.first_use("smart", "c", "old", time.time() + 60)


def test_client_assertions_and_ehr_tokens_share_one_replay_store_and_one_key_fetcher(server):
    services = server.app.state.precert.services
    tokens, crd = services["auth"].tokens, services["crd"].verifier
    assert tokens.replay is crd.replay is services["jwt_replay"]
    assert tokens.jwks is crd.jwks is services["jwks"]
    assert crd.replay.collection.name == tokens.replay.collection.name == "auth_jti"
