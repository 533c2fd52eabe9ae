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
