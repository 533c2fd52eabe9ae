"""Security configuration, built from the environment's variables (:mod:`server.settings`; secrets
from files it names).

``PRECERT_REQUIRE_AUTH``          true: enforce authentication in sandbox mode too (production always does)
``PRECERT_AUTH_SIGNING_KEY_FILE`` PEM file with the EC P-256 private key that signs access tokens
                                  (required in production; a sandbox without one keeps a generated key in its database)
``PRECERT_AUTH_SIGNING_KEY``      the same PEM inline (for secret stores that inject environment values)
``PRECERT_ACCESS_TOKEN_SECONDS``  access-token lifetime, at most 300 (default 300)
``PRECERT_ADMIN_USERNAME`` and ``PRECERT_ADMIN_PASSWORD_FILE``
                                  create this administrator at start-up when no such user exists
``PRECERT_STAFF_SESSION_HOURS``   staff session lifetime (default 8); idle sessions end after 30 minutes

Tests and embedders may instead set ``app.state.auth_config`` to an :class:`AuthConfig` before the
app starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from server.settings import Settings, variables


@dataclass(frozen=True)
class AuthConfig:
    require_auth: bool | None = None  # None: production enforces, sandbox does not
    signing_key_pem: bytes | None = None
    access_token_seconds: int = 300
    assertion_max_seconds: int = 300  # exp of a client assertion at most this far ahead
    clock_skew_seconds: int = 30
    admin_username: str | None = None
    admin_password: str | None = None
    staff_session_seconds: int = 8 * 3600
    staff_idle_seconds: int = 30 * 60
    jwks_cache_max_seconds: int = 3600

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "AuthConfig":
        v = variables(env)
        key = None
        if v.auth_signing_key_file:
            key = v.auth_signing_key_file.read_bytes()
        elif v.auth_signing_key:
            key = v.auth_signing_key.encode()
        password = v.admin_password_file.read_text().strip() if v.admin_password_file else None
        return cls(
            require_auth=v.require_auth,
            signing_key_pem=key,
            access_token_seconds=min(300, v.access_token_seconds),
            admin_username=v.admin_username,
            admin_password=password,
            staff_session_seconds=int(v.staff_session_hours * 3600),
        )

    def enforcing(self, settings: Settings) -> bool:
        if settings.mode == "production":
            return True
        return bool(self.require_auth)
