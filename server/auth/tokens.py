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
from datetime import datetime, timedelta, timezone

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pymongo.errors import DuplicateKeyError

from server.auth.clients import Client, ClientRegistry, jwk_thumbprint, sandbox_thumbprints
from server.auth.config import AuthConfig
from server.auth.jwks import JWKSFetcher, JWKSFetchError
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
    def __init__(self, config: AuthConfig, registry: ClientRegistry, jti_collection, production: bool,
                 jwks: JWKSFetcher | None = None):
        self.config = config
        self.registry = registry
        self.jti = jti_collection
        self.production = production
        pem = config.signing_key_pem or generate_signing_key()
        self._private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(self._private, ec.EllipticCurvePrivateKey) or self._private.curve.name != "secp256r1":
            raise ValueError("the access-token signing key must be an EC P-256 private key (PEM)")
        self._public = self._private.public_key()
        # Registered jwks_url sets: the application's one JWK Set fetcher (server.auth.jwks).
        self.jwks = jwks or JWKSFetcher(max_seconds=config.jwks_cache_max_seconds, guarded=production)
        self._demo = sandbox_thumbprints()
        self._last_sweep = 0.0
        self._verified: dict[str, AccessClaims] = {}

    # ------------------------------------------------------------------ client assertions
    async def authenticate_client(self, assertion: str, token_url: str) -> Client:
        """Verify a client assertion (SMART client-confidential-asymmetric) and return its client."""
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
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
        if client.jwks_url:
            try:
                key = self._select_key(await self.jwks.get(client.jwks_url), kid, alg)
                if key is None:  # the client may have rotated its keys: fetch once more
                    key = self._select_key(await self.jwks.get(client.jwks_url, refresh=True), kid, alg)
            except JWKSFetchError as exc:
                raise invalid_client(f"the client's JWKS URL: {exc}") from None
        else:
            key = self._select_key(client.jwks or {}, kid, alg)
        if key is None:
            raise invalid_client("no single registered key matches the assertion's kid and alg")
        if self.production and jwk_thumbprint(key) in self._demo:
            raise invalid_client("the published sandbox keys are refused in production")
        try:
            public = (RSAAlgorithm if ASSERTION_ALGS[alg] == "RSA" else ECAlgorithm).from_jwk(key)
            claims = jwt.decode(
                assertion,
                public,
                algorithms=[alg],
                audience=token_url,
                leeway=self.config.clock_skew_seconds,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise invalid_client("client_assertion has expired") from None
        except jwt.InvalidAudienceError:
            raise invalid_client(f"client_assertion aud must be the token endpoint, {token_url}") from None
        except jwt.InvalidSignatureError:
            raise invalid_client("client_assertion signature does not verify") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise invalid_client(f"client_assertion rejected: {type(exc).__name__}") from None
        now = time.time()
        exp = claims["exp"]
        if not isinstance(exp, (int, float)) or exp > now + self.config.assertion_max_seconds + self.config.clock_skew_seconds:
            raise invalid_client("client_assertion exp is more than five minutes ahead")
        jti = claims["jti"]
        if not isinstance(jti, str) or not _JTI_RE.match(jti):
            raise invalid_client("client_assertion jti must be a string of 1-256 visible characters")
        await self._remember_jti(iss, jti, exp)
        return client

    def _select_key(self, jwks: dict, kid: str, alg: str) -> dict | None:
        kty = ASSERTION_ALGS[alg]
        matches = [
            k for k in jwks.get("keys", [])
            if isinstance(k, dict) and k.get("kid") == kid and k.get("kty") == kty
            and (kty != "EC" or k.get("crv") == "P-384") and k.get("alg") in (None, alg)
        ]
        return matches[0] if len(matches) == 1 else None

    async def _remember_jti(self, iss: str, jti: str, exp: float) -> None:
        expires = datetime.fromtimestamp(exp + self.config.clock_skew_seconds, timezone.utc)
        try:
            await self.jti.insert_one({"_id": f"{iss}\n{jti}", "expires": expires})
        except DuplicateKeyError:
            raise invalid_client("client_assertion jti was already used (replay)") from None
        now = time.monotonic()
        if now - self._last_sweep > 60:  # TTL indexes are not everywhere; sweep now and then
            self._last_sweep = now
            await self.jti.delete_many({"expires": {"$lt": datetime.now(timezone.utc) - timedelta(seconds=60)}})

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
            if hit.exp > time.time():
                return hit
            self._verified.pop(token, None)
        claims = self._verify(token)
        if claims is not None:
            if len(self._verified) >= 10_000:
                self._verified.clear()
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
