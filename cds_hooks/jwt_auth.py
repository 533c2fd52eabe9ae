"""Trusting CDS clients: the EHR's JWT bearer token (CDS Hooks 2.0 "Trusting CDS Clients").

Checked, in order: the header (``alg`` asymmetric and allowed, ``kid``, ``typ`` JWT); the issuer on
the allow-list, and its ``jku`` (when given) one the allow-list names for it; the signature, with the
key whose ``kid`` matches in the issuer's JWK Set (through the application's one signed-JWT verifier,
:mod:`server.auth.signed_jwt`: the one JWK Set fetcher and cache, fetched again once when a ``kid``
is new, so key rotation works); ``aud`` is the URL of the endpoint called;
``exp`` in the future, ``iat`` not; ``jti`` not seen before within the token's life (the one replay
store that client assertions use too; unless the
operator lets a test laboratory reuse a token, ``PRECERT_CRD_ALLOW_JWT_REUSE=true``: test kits send one
JWT with several requests).

Problems give 401 (``WWW-Authenticate: Bearer error="invalid_token"``), or 403 when the token is
well formed but its issuer or key location is not trusted.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from jwt import PyJWK

from cds_hooks.config import DEMO_EHR_ISS, CRDConfig, TrustedEHR
from server.auth.jwks import JWKSFetcher
from server.auth.signed_jwt import Rejected, ReplayStore, check, find_key, parse
from server.errors import PrecertError

# A kid not in the cached set fetches the set again, at most this often (key rotation).
JWKS_REFRESH_MIN = 30.0


class AuthError(PrecertError):
    """An EHR JWT refused: 401, or 403 when its issuer or key location is not trusted; it carries
    RFC 6750's ``WWW-Authenticate`` header."""

    def __init__(self, status: int, message: str):
        desc = message.replace('"', "'")[:200]
        super().__init__(status, message, "login" if status == 401 else "forbidden",
                         headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{desc}"'})


@dataclass
class Verified:
    iss: str
    jti: str
    kid: str
    claims: dict


def _find_key(jwks: dict, kid: str, alg: str):
    for k in jwks.get("keys") or []:
        if isinstance(k, dict) and k.get("kid") == kid:
            try:
                return PyJWK.from_dict(k, algorithm=alg).key
            except Exception as exc:  # PyJWK raises several types for unusable keys
                raise AuthError(401, f"key '{kid}' cannot verify {alg}: {exc}") from None
    return None


# How a token the shared verifier refused is worded (CDS Hooks: invalid_token).
_TOKEN_WORDS = {
    "expired": "the JWT has expired",
    "immature": "the JWT 'iat' is in the future",
    "missing": "the JWT has no '{detail}' claim",
    "signature": "the JWT signature does not verify",
}


class Verifier:
    def __init__(self, config: CRDConfig, jwks: JWKSFetcher, allow_reuse: bool = False, replay: ReplayStore | None = None):
        self.config = config
        self.jwks = jwks
        self.replay = replay or ReplayStore()
        # A token reused within its lifetime by the same issuer is accepted (test laboratories only).
        self.allow_reuse = allow_reuse

    def _trusted(self, iss: str) -> list[TrustedEHR]:
        return [t for t in self.config.trusted if t.iss.rstrip("/") == iss.rstrip("/")]

    async def verify(self, authorization: str | None, audience: str) -> Verified:
        if not authorization:
            raise AuthError(401, "a JWT bearer token is required (Authorization: Bearer <JWT>)")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "the Authorization header must be 'Bearer <JWT>'")
        token = token.strip()
        try:
            header, claims = parse(token)
        except Rejected as exc:
            raise AuthError(401, f"the bearer token is not a JWT: {exc.detail}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.config.algorithms:
            raise AuthError(401, f"alg '{alg}' is not accepted; use one of {', '.join(sorted(self.config.algorithms))}")
        if not isinstance(kid, str) or not kid:
            raise AuthError(401, "the JWT header has no 'kid'")
        if header.get("typ") not in (None, "JWT"):
            raise AuthError(401, "the JWT header 'typ' must be 'JWT'")
        iss = claims.get("iss")
        if not isinstance(iss, str) or not iss:
            raise AuthError(401, "the JWT has no 'iss'")
        trusted = self._trusted(iss)
        if not trusted:
            raise AuthError(403, f"issuer '{iss[:120]}' is not a trusted EHR")
        jku = header.get("jku")
        if jku is not None:
            if not isinstance(jku, str) or not any(t.jku and t.jku == jku for t in trusted):
                raise AuthError(403, f"jku '{str(jku)[:120]}' is not a JWK Set location trusted for '{iss[:80]}'")
            sources = [t for t in trusted if t.jku == jku]
        else:
            sources = trusted
        key = None
        for source in sources:
            if source.jwks is None and not source.jku:
                continue
            try:
                key = await find_key(self.jwks, lambda jwks: _find_key(jwks, kid, alg), jwks=source.jwks,
                                     jwks_url=source.jku if source.jwks is None else None, refresh_min=JWKS_REFRESH_MIN)
            except Rejected as exc:
                raise AuthError(401, exc.detail) from None
            if key is not None:
                break
        if key is None:
            raise AuthError(401, f"no key '{kid}' in the JWK Set of '{iss[:80]}'")
        audiences = {audience, audience.rstrip("/"), audience.rstrip("/") + "/"}
        try:
            claims = check(token, key, alg, list(audiences), self.config.clock_skew, ["iss", "aud", "exp", "iat", "jti"])
        except Rejected as exc:
            if exc.reason == "audience":
                raise AuthError(401, f"the JWT 'aud' must be {audience}") from None
            words = _TOKEN_WORDS.get(exc.reason)
            raise AuthError(401, words.format(detail=exc.detail) if words else f"the JWT is not valid: {exc.detail or exc.reason}") from None
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, (int, float)) or iat > now + self.config.clock_skew:
            raise AuthError(401, "the JWT 'iat' is in the future")
        if exp - iat > self.config.max_token_lifetime:
            raise AuthError(401, f"the JWT lives longer than {self.config.max_token_lifetime} s")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise AuthError(401, "the JWT 'jti' must be a non-empty string")
        if not self.allow_reuse and not await self.replay.first_use("cds-hooks", iss, jti, float(exp) + self.config.clock_skew):
            raise AuthError(401, "the JWT has been used before (jti replay)")
        return Verified(iss=iss, jti=jti, kid=kid, claims=claims)


def demo_token(audience: str, lifetime: int = 300) -> str:
    """A token signed with the sandbox demo EHR key (documented in docs/crd.md)."""

    pem = (Path(__file__).resolve().parent / "demo_ehr_private_key.pem").read_text()
    now = int(time.time())
    return jwt.encode({"iss": DEMO_EHR_ISS, "aud": audience, "iat": now, "exp": now + lifetime, "jti": uuid.uuid4().hex},
                      pem, algorithm="ES384", headers={"kid": "precert-demo-ehr-es384", "typ": "JWT"})


__all__ = ["AuthError", "Verifier", "Verified", "demo_token", "json"]
