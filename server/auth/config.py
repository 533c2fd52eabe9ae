"""Security configuration, read from the environment (secrets from files it names).

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

from dataclasses import dataclass
from pathlib import Path

from server.settings import Settings
from server.settings import environment


def _bool(value: str | None) -> bool | None:
    if value is None or value.strip() == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


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
    def from_env(cls, env: dict[str, str] | None = None) -> "AuthConfig":
        env = dict(environment() if env is None else env)
        key = None
        if env.get("PRECERT_AUTH_SIGNING_KEY_FILE"):
            key = Path(env["PRECERT_AUTH_SIGNING_KEY_FILE"]).read_bytes()
        elif env.get("PRECERT_AUTH_SIGNING_KEY"):
            key = env["PRECERT_AUTH_SIGNING_KEY"].encode()
        password = None
        if env.get("PRECERT_ADMIN_PASSWORD_FILE"):
            password = Path(env["PRECERT_ADMIN_PASSWORD_FILE"]).read_text().strip()
        return cls(
            require_auth=_bool(env.get("PRECERT_REQUIRE_AUTH")),
            signing_key_pem=key,
            access_token_seconds=min(300, int(env.get("PRECERT_ACCESS_TOKEN_SECONDS", "300"))),
            admin_username=env.get("PRECERT_ADMIN_USERNAME") or None,
            admin_password=password,
            staff_session_seconds=int(float(env.get("PRECERT_STAFF_SESSION_HOURS", "8")) * 3600),
        )

    def enforcing(self, settings: Settings) -> bool:
        if settings.mode == "production":
            return True
        return bool(self.require_auth)
