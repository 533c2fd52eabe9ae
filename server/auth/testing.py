"""Helpers for tests and tools that act as a SMART Backend Services client or as payer staff.

Not used by the server itself. ``ClientKey`` makes a real key pair (cryptography) and signs client
assertions the way SMART clients (and Inferno) do.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from server.auth.tokens import ASSERTION_TYPE


@dataclass
class ClientKey:
    alg: str
    kid: str
    private: object

    @classmethod
    def generate(cls, alg: str = "ES384", kid: str | None = None) -> "ClientKey":
        if alg == "ES384":
            private = ec.generate_private_key(ec.SECP384R1())
        elif alg == "RS384":
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            raise ValueError(alg)
        return cls(alg, kid or uuid.uuid4().hex, private)

    @classmethod
    def from_pem(cls, pem: bytes, alg: str, kid: str) -> "ClientKey":
        return cls(alg, kid, serialization.load_pem_private_key(pem, password=None))

    @property
    def jwk(self) -> dict:
        import json

        algo = ECAlgorithm if self.alg == "ES384" else RSAAlgorithm
        key = json.loads(algo.to_jwk(self.private.public_key()))
        key.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return key

    @property
    def jwks(self) -> dict:
        return {"keys": [self.jwk]}

    def assertion(self, client_id: str, token_url: str, *, lifetime: int = 300, jti: str | None = None,
                  headers: dict | None = None, claims: dict | None = None, alg: str | None = None) -> str:
        payload = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": int(time.time()) + lifetime,
                   "jti": jti or secrets.token_hex(32)}
        payload.update(claims or {})
        head = {"typ": "JWT", "kid": self.kid}
        head.update(headers or {})
        return jwt.encode(payload, self.private, algorithm=alg or self.alg, headers=head)


def token_form(assertion: str, scope: str) -> dict:
    return {"grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion}


def get_token(http, base: str, client_id: str, key: ClientKey, scope: str) -> dict:
    """Request an access token from a running server with an httpx.Client; returns the JSON."""
    resp = http.post(f"{base}/auth/token", data=token_form(key.assertion(client_id, f"{base}/auth/token"), scope))
    resp.raise_for_status()
    return resp.json()


def staff_login(http, base: str, username: str, password: str) -> str:
    resp = http.post(f"{base}/staff/login", json={"username": username, "password": password})
    resp.raise_for_status()
    http.cookies.clear()  # callers send the token explicitly; a stored cookie would sign in every request
    return resp.json()["token"]


SANDBOX_STAFF_PASSWORDS = {"reviewer": "reviewer-sandbox", "director": "director-sandbox", "admin": "admin-sandbox"}


ADMIN_USER, ADMIN_PASSWORD = "security-admin", "a-long-test-admin-password"


def secured_app(mongodb_uri: str, *, port: int | None = None, mode: str = "sandbox", require_auth: bool | None = True,
                signing_key: bytes | None = None, cors_origins: tuple = (), load_sandbox: bool = True,
                base_url: str | None = None):
    """An app with authentication enforced, on its own database, with an administrator account."""
    from server.app import create_app
    from server.auth.config import AuthConfig
    from server.auth.tokens import generate_signing_key
    from server.settings import Settings

    if base_url is None and port is not None and mode == "production":
        base_url = f"http://127.0.0.1:{port}"
    settings = Settings(mongodb_uri=mongodb_uri, db_name=f"precert_auth_{uuid.uuid4().hex[:8]}", mode=mode,
                        base_url=base_url, load_sandbox=load_sandbox, cors_origins=tuple(cors_origins))
    app = create_app(settings)
    app.state.auth_config = AuthConfig(
        require_auth=require_auth,
        signing_key_pem=signing_key if signing_key is not None else (generate_signing_key() if mode == "production" else None),
        admin_username=ADMIN_USER, admin_password=ADMIN_PASSWORD,
    )
    return app


class Harness:
    """A running secured server plus an administrator session, for registering test clients."""

    def __init__(self, http, base: str):
        self.http = http
        self.base = base
        self.admin = staff_login(http, base, ADMIN_USER, ADMIN_PASSWORD)

    @property
    def admin_headers(self) -> dict:
        return {"Authorization": f"Bearer {self.admin}"}

    def register(self, npi: str = "1234567893", scopes: str = "system/*.cruds", alg: str = "ES384",
                 client_id: str | None = None, **extra) -> tuple[str, ClientKey]:
        key = ClientKey.generate(alg)
        body = {"client_id": client_id or f"test-{uuid.uuid4().hex[:10]}", "name": "Test EHR", "npi": npi,
                "scopes": scopes, **({"jwks": key.jwks} if "jwks_url" not in extra else {}), **extra}
        resp = self.http.post(f"{self.base}/admin/auth/clients", json=body, headers=self.admin_headers)
        resp.raise_for_status()
        return resp.json()["client_id"], key

    def token(self, client_id: str, key: ClientKey, scope: str) -> str:
        return get_token(self.http, self.base, client_id, key, scope)["access_token"]

    def client_headers(self, npi: str = "1234567893", scope: str = "system/*.cruds") -> dict:
        cid, key = self.register(npi=npi)
        return {"Authorization": f"Bearer {self.token(cid, key, scope)}"}
