"""The SMART Backend Services token service: client assertions in, short-lived access tokens out.

Access tokens are JWTs signed by the server's own EC P-256 key (ES256) and checked on each request
against that one public key with the algorithm pinned, so no database round trip sits on the FHIR
hot path and several workers sharing the key file honour each other's tokens. They live 300 s at
most; the client registry (cached 30 s) is consulted on every request as well, so disabling a client
ends its access within that time without a revocation list.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass

import jwt
from cachetools import TLRUCache
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from server.auth.clients import Client, ClientRegistry, jwk_thumbprint, sandbox_thumbprints
from server.auth.config import AuthConfig
from server.auth.jwks import JWKSFetcher
from server.auth.signed_jwt import ReplayStore, Rejected, check, find_key, parse
from server.auth.scopes import Permissions, mediate

log = logging.getLogger("precert.auth")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = {"RS384": "RSA", "ES384": "EC"}
ACCESS_ALG = "ES256"
ACCESS_TYP = "at+jwt"
ACCESS_AUDIENCE = "urn:precert:fhir"
_JTI_RE = re.compile(r"^[\x21-\x7e]{1,256}$")


class TokenError(Exception):
    """An OAuth error response: ``error`` code, description, HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def invalid_client(description: str) -> TokenError:
    return TokenError("invalid_client", description, 401)


# How a client assertion the shared verifier refused is worded (OAuth invalid_client).
_ASSERTION_WORDS = {
    "expired": "client_assertion has expired",
    "audience": "client_assertion aud must be the token endpoint, {url}",
    "signature": "client_assertion signature does not verify",
    "missing": "client_assertion has no '{detail}' claim",
}


def _select_key(jwks: dict, kid: str, alg: str) -> dict | None:
    """The one registered key with this kid for this algorithm (type, curve, alg), else None."""
    kty = ASSERTION_ALGS[alg]
    matches = [
        k for k in jwks.get("keys", [])
        if isinstance(k, dict) and k.get("kid") == kid and k.get("kty") == kty
        and (kty != "EC" or k.get("crv") == "P-384") and k.get("alg") in (None, alg)
    ]
    return matches[0] if len(matches) == 1 else None


@dataclass
class AccessClaims:
    client_id: str
    scope: str
    jti: str
    exp: int


def generate_signing_key() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class TokenService:
    def __init__(self, config: AuthConfig, registry: ClientRegistry, replay: ReplayStore, production: bool,
                 jwks: JWKSFetcher | None = None):
        self.config = config
        self.registry = registry
        self.replay = replay
        self.production = production
        pem = config.signing_key_pem or generate_signing_key()
        self._private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(self._private, ec.EllipticCurvePrivateKey) or self._private.curve.name != "secp256r1":
            raise ValueError("the access-token signing key must be an EC P-256 private key (PEM)")
        self._public = self._private.public_key()
        # Registered jwks_url sets: the application's one JWK Set fetcher (server.auth.jwks).
        self.jwks = jwks or JWKSFetcher(max_seconds=config.jwks_cache_max_seconds, guarded=production)
        self._demo = sandbox_thumbprints()
        # Verified access tokens, each kept until it expires (its own exp claim).
        self._verified: TLRUCache[str, AccessClaims] = TLRUCache(maxsize=10_000, ttu=lambda _token, claims, _now: claims.exp,
                                                                 timer=time.time)

    # ------------------------------------------------------------------ client assertions
    async def authenticate_client(self, assertion: str, token_url: str) -> Client:
        """Verify a client assertion (SMART client-confidential-asymmetric) and return its client."""
        try:
            header, unverified = parse(assertion)
        except Rejected:
            raise invalid_client("client_assertion is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ASSERTION_ALGS:
            raise invalid_client(f"client_assertion alg must be RS384 or ES384, not {str(alg)[:20]}")
        if header.get("typ") not in (None, "JWT"):
            raise invalid_client("client_assertion typ must be JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise invalid_client("client_assertion header has no kid")
        iss, sub = unverified.get("iss"), unverified.get("sub")
        if not isinstance(iss, str) or not iss or iss != sub:
            raise invalid_client("client_assertion iss and sub must both be the client_id")
        client = await self.registry.get(iss)
        if client is None or not client.active:
            raise invalid_client("the client is not registered or is disabled")
        if client.sandbox and self.production:
            raise invalid_client("sandbox demo clients are refused in production")
        jku = header.get("jku")
        if jku is not None:
            if not client.jwks_url or jku != client.jwks_url:
                raise invalid_client("client_assertion jku is not the client's registered JWKS URL")
        try:
            key = await find_key(self.jwks, lambda jwks: _select_key(jwks, kid, alg), jwks=client.jwks,
                                 jwks_url=client.jwks_url or None)
        except Rejected as exc:
            raise invalid_client(f"the client's JWKS URL: {exc.detail}") from None
        if key is None:
            raise invalid_client("no single registered key matches the assertion's kid and alg")
        if self.production and jwk_thumbprint(key) in self._demo:
            raise invalid_client("the published sandbox keys are refused in production")
        try:
            public = (RSAAlgorithm if ASSERTION_ALGS[alg] == "RSA" else ECAlgorithm).from_jwk(key)
            claims = check(assertion, public, alg, token_url, self.config.clock_skew_seconds, ["iss", "sub", "aud", "exp", "jti"])
        except Rejected as exc:
            words = _ASSERTION_WORDS.get(exc.reason)
            raise invalid_client(words.format(url=token_url, detail=exc.detail) if words else
                                 f"client_assertion rejected: {exc.error_type or exc.reason}") from None
        except (ValueError, TypeError) as exc:  # a registered key the algorithm cannot load
            raise invalid_client(f"client_assertion rejected: {type(exc).__name__}") from None
        now = time.time()
        exp = claims["exp"]
        if not isinstance(exp, (int, float)) or exp > now + self.config.assertion_max_seconds + self.config.clock_skew_seconds:
            raise invalid_client("client_assertion exp is more than five minutes ahead")
        jti = claims["jti"]
        if not isinstance(jti, str) or not _JTI_RE.match(jti):
            raise invalid_client("client_assertion jti must be a string of 1-256 visible characters")
        if not await self.replay.first_use("smart", iss, jti, exp + self.config.clock_skew_seconds):
            raise invalid_client("client_assertion jti was already used (replay)")
        return client

    # ------------------------------------------------------------------ access tokens
    def issue(self, client: Client, requested_scope: str) -> dict:
        granted = mediate(requested_scope, client.permissions)
        if not granted:
            raise TokenError("invalid_scope", "none of the requested scopes is allowed for this client (use system/ scopes)")
        lifetime = min(300, self.config.access_token_seconds)
        now = int(time.time())
        scope = " ".join(granted)
        token = jwt.encode(
            {"iss": "precert", "aud": ACCESS_AUDIENCE, "sub": client.client_id, "iat": now, "exp": now + lifetime,
             "jti": secrets.token_urlsafe(12), "scope": scope},
            self._private,
            algorithm=ACCESS_ALG,
            headers={"typ": ACCESS_TYP},
        )
        return {"access_token": token, "token_type": "bearer", "expires_in": lifetime, "scope": scope}

    def mint(self, client_id: str, scope: str, lifetime: int = 300) -> str:
        """An access token without a token request (tests and operator tooling)."""
        now = int(time.time())
        return jwt.encode(
            {"iss": "precert", "aud": ACCESS_AUDIENCE, "sub": client_id, "iat": now, "exp": now + lifetime,
             "jti": secrets.token_urlsafe(12), "scope": scope},
            self._private, algorithm=ACCESS_ALG, headers={"typ": ACCESS_TYP},
        )

    def verify(self, token: str) -> AccessClaims | None:
        """The claims of a valid access token issued by this server, else None. Verified tokens are
        remembered until they expire, so a client's repeated calls cost one signature check."""
        hit = self._verified.get(token)
        if hit is not None:
            return hit
        claims = self._verify(token)
        if claims is not None:
            self._verified[token] = claims
        return claims

    def _verify(self, token: str) -> AccessClaims | None:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != ACCESS_ALG or header.get("typ") != ACCESS_TYP:
                return None
            claims = jwt.decode(token, self._public, algorithms=[ACCESS_ALG], audience=ACCESS_AUDIENCE,
                                issuer="precert", options={"require": ["sub", "exp", "scope", "jti"]})
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        return AccessClaims(claims["sub"], claims["scope"], claims["jti"], claims["exp"])

    async def close(self) -> None:
        await self.jwks.close()


def permissions(claims: AccessClaims) -> Permissions:
    return Permissions.from_scopes(claims.scope)
