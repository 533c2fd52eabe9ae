"""Settings, read from the environment (``PRECERT_*``) and overridable by the CLI.

Secrets come only from the environment or files named by it, never from code or the command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    # MongoDB URI; when None, the embedded SecantusDB server is started on ``data_dir``.
    mongodb_uri: str | None = None
    db_name: str = "precert"
    data_dir: Path = Path("precert-data")
    # Public base URL (scheme://host[:port]) used in Location headers, links and fullUrls. When
    # None, it is taken from each request.
    base_url: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    # "sandbox" loads demo data and documents demo credentials; "production" refuses demo keys.
    mode: str = "sandbox"
    load_sandbox: bool = True
    default_page_size: int = 20
    max_page_size: int = 1000
    embedded_db_command: str = "secantusd-py"
    cors_origins: tuple[str, ...] = ()
    # Seconds a request body may go without a byte before it is refused (408).
    body_read_timeout: float = 10.0
    # A test laboratory replays one EHR JWT within its lifetime (CRD jti replay is refused otherwise).
    crd_allow_jwt_reuse: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        mode = env.get("PRECERT_MODE", "sandbox").strip().lower()
        return cls(
            mongodb_uri=env.get("PRECERT_MONGODB_URI") or None,
            db_name=env.get("PRECERT_DB_NAME", "precert"),
            data_dir=Path(env.get("PRECERT_DATA_DIR", "precert-data")),
            base_url=(env.get("PRECERT_BASE_URL") or None),
            max_body_bytes=int(env.get("PRECERT_MAX_BODY_BYTES", str(10 * 1024 * 1024))),
            mode=mode,
            load_sandbox=_bool(env.get("PRECERT_SANDBOX"), mode == "sandbox"),
            cors_origins=tuple(o.strip() for o in env.get("PRECERT_CORS_ORIGINS", "").split(",") if o.strip()),
            body_read_timeout=float(env.get("PRECERT_BODY_READ_TIMEOUT", "10")),
            crd_allow_jwt_reuse=_bool(env.get("PRECERT_CRD_ALLOW_JWT_REUSE"), False),
        )

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# ---------------------------------------------------------------------- knobs read where they are used
# Every other read of the process environment is here too, one function per variable, so this module
# is the one place that lists what can be configured (the test suite checks that no other module
# reads ``os.environ``). They are read on each call, as a few are changed while the process runs
# (the CLI's flags, a test's monkeypatch).


def environment() -> dict[str, str]:
    """A copy of the whole environment, for the config objects that read a family of variables
    (``PRECERT_AUTH_*``, ``PRECERT_CRD_*``) and take an explicit mapping in tests."""
    return dict(os.environ)


def export(values: dict[str, str]) -> None:
    """Hand settings to worker processes, which read them back with :meth:`Settings.from_env`."""
    os.environ.update(values)


def workers() -> str:
    """``PRECERT_WORKERS``: how many server processes ``precert serve`` runs (default: one per core)."""
    return os.environ.get("PRECERT_WORKERS", "").strip()


def host() -> str:
    """``PRECERT_HOST``: the address ``precert serve`` listens on."""
    return os.environ.get("PRECERT_HOST", "127.0.0.1")


def port() -> int:
    """``PRECERT_PORT``: the port ``precert serve`` listens on."""
    return int(os.environ.get("PRECERT_PORT", "8080"))


def debug() -> bool:
    """``PRECERT_DEBUG``: the CLI shows the traceback of a failure instead of one line."""
    return bool(os.environ.get("PRECERT_DEBUG"))


def rules_dir() -> str:
    """``PRECERT_RULES_DIR``: the payer rules directory (default: the sandbox rules)."""
    return os.environ.get("PRECERT_RULES_DIR", "").strip()


def dtr_version() -> str:
    """``PRECERT_DTR_VERSION``: the DTR version answered when a request does not say."""
    return os.environ.get("PRECERT_DTR_VERSION", "").strip()


def pas_version() -> str:
    """``PRECERT_PAS_VERSION``: the PAS version answered when nothing else decides it."""
    return os.environ.get("PRECERT_PAS_VERSION", "").strip()


def pas_retention_days() -> str:
    """``PRECERT_PAS_RETENTION_DAYS``: how long requests stay available to ``$inquire`` (never
    less than PAS's six months)."""
    return os.environ.get("PRECERT_PAS_RETENTION_DAYS", "").strip()


def notify_backoff() -> tuple[float, float]:
    """``PRECERT_NOTIFY_BACKOFF_SECONDS`` and ``PRECERT_NOTIFY_BACKOFF_CAP_SECONDS``: the first retry
    delay of a failed notification and the longest."""
    return (float(os.environ.get("PRECERT_NOTIFY_BACKOFF_SECONDS", "2")),
            float(os.environ.get("PRECERT_NOTIFY_BACKOFF_CAP_SECONDS", "300")))


def outbound_allow() -> str:
    """``PRECERT_OUTBOUND_ALLOW``: private hosts and networks outbound calls may reach in production."""
    return os.environ.get("PRECERT_OUTBOUND_ALLOW", "")


def embedded_sync_on_commit() -> bool:
    """``PRECERT_EMBEDDED_SYNC_ON_COMMIT``: the embedded database fsyncs its journal at every commit."""
    return _bool(os.environ.get("PRECERT_EMBEDDED_SYNC_ON_COMMIT"), False)


def crd_audit_compress() -> bool:
    """``PRECERT_CRD_AUDIT_COMPRESS``: CRD call records keep their bodies compressed (default on)."""
    return _bool(os.environ.get("PRECERT_CRD_AUDIT_COMPRESS"), True)
