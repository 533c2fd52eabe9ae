"""Settings: every variable an operator can set, declared once, and the objects the app is built from.

:class:`Variables` declares each ``PRECERT_*`` variable with its type and default; pydantic-settings
reads them from the process environment (:class:`ProcessEnvironment`), and :meth:`Variables.of`
reads an explicit mapping (tests, worker start-up) the same way. An empty value counts as unset; a
value of the wrong type (``PRECERT_PORT=eighty``) is refused with the variable's name
(:class:`SettingsError`). :class:`Settings`, ``AuthConfig`` and ``CRDConfig`` are built from one
:class:`Variables`; the few values read while the server runs (``pas_version()``, ...) are read on
each call through the same declarations, so a changed variable is seen at once.

Secrets come only from the environment or files named by it, never from code or the command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

from cachetools import LRUCache
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PREFIX = "PRECERT_"


class SettingsError(ValueError):
    """A variable whose value is not of its type: the message names it (``PRECERT_PORT: ...``)."""


def _comma_list(value):
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


CommaList = Annotated[tuple[str, ...], NoDecode]


class Variables(BaseModel):
    """Every ``PRECERT_*`` variable (the field name, upper-cased, after the prefix), typed. Booleans
    take true/false, 1/0, yes/no, on/off."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    # -- the server (Settings)
    mode: str = "sandbox"  # "sandbox" loads demo data and documents demo credentials; "production" refuses demo keys
    mongodb_uri: str | None = None  # when unset, the embedded database is started on data_dir
    db_name: str = "precert"
    data_dir: Path = Path("precert-data")
    base_url: str | None = None  # public base URL for Location headers, links and fullUrls (else each request's)
    max_body_bytes: int = 10 * 1024 * 1024
    sandbox: bool | None = None  # load the demo payer (default: in sandbox mode)
    cors_origins: CommaList = ()
    body_read_timeout: float = 10.0  # seconds a request body may go without a byte (then 408)
    # -- precert serve and the CLI
    host: str = "127.0.0.1"
    port: int = 8080
    workers: str = ""  # server processes (default one per core); parsed by the CLI
    debug: bool = False  # the CLI shows a failure's traceback
    # -- read while the server runs
    rules_dir: str = ""  # the payer rules directory (default: the sandbox rules)
    dtr_version: str = ""  # the DTR version answered when a request does not say
    pas_version: str = ""  # the PAS version answered when nothing else decides it
    pas_retention_days: int | None = None  # how long requests stay available to $inquire (at least six months)
    notify_backoff_seconds: float = 2.0  # first retry delay of a failed notification
    notify_backoff_cap_seconds: float = 300.0  # longest retry delay
    outbound_allow: str = ""  # private hosts and networks outbound calls may reach in production
    embedded_sync_on_commit: bool = False  # the embedded database fsyncs its journal at every commit
    # -- security (AuthConfig)
    require_auth: bool | None = None  # enforce authentication in sandbox mode too (production always does)
    auth_signing_key_file: Path | None = None  # PEM file of the EC P-256 key that signs access tokens
    auth_signing_key: str | None = None  # the same PEM inline
    access_token_seconds: int = 300  # access-token lifetime, at most 300
    admin_username: str | None = None  # with admin_password_file: create this administrator at start-up
    admin_password_file: Path | None = None
    staff_session_hours: float = 8.0
    # -- CRD (CRDConfig)
    crd_require_jwt: bool | None = None  # refuse hook calls without a valid EHR JWT (default: in production)
    crd_trusted_ehrs: str = ""  # JSON list [{"iss", "jku" or "jwks"}] or a path to such a file
    crd_jwt_algs: CommaList = ("ES384", "RS384")
    crd_default_version: str = "2.0"
    crd_require_payer_id: bool | None = None  # CRD 2.2 hook-13 (default: in production)
    crd_dtr: str = "auto"  # auto | on | off
    crd_fhir_timeout: float = 3.0  # seconds per query to the EHR's FHIR server
    crd_allow_jwt_reuse: bool = False  # a test laboratory replays one EHR JWT within its lifetime
    crd_audit_compress: bool = True  # CRD call records keep their bodies compressed

    _lists = field_validator("cors_origins", "crd_jwt_algs", mode="before")(_comma_list)

    @field_validator("mode", "crd_dtr")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @classmethod
    def of(cls, env: Mapping[str, str]) -> "Variables":
        """The variables of an explicit mapping (``{"PRECERT_MODE": "production", ...}``); nothing
        else is read."""
        values = {key[len(PREFIX):].lower(): value for key, value in env.items()
                  if key.upper().startswith(PREFIX) and isinstance(value, str) and value.strip()}
        return _validated(lambda: cls.model_validate(values))


class ProcessEnvironment(BaseSettings, Variables):
    """:class:`Variables` read from the process environment by pydantic-settings."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, case_sensitive=False, extra="ignore")


def _validated(build) -> Variables:
    try:
        return build()
    except ValidationError as exc:
        problems = "; ".join(f"{PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise SettingsError(problems) from None


def variables(env: Mapping[str, str] | None = None) -> Variables:
    """The variables of ``env``, or of the process environment when it is None."""
    return Variables.of(env) if env is not None else _validated(ProcessEnvironment)


# One variable, read on each call: the value is validated by its declaration once per distinct raw value.
_ONE: LRUCache = LRUCache(maxsize=256)


def _current(name: str):
    raw = os.environ.get(PREFIX + name.upper())
    key = (name, raw)
    try:
        return _ONE[key]
    except KeyError:
        value = getattr(Variables.of({PREFIX + name.upper(): raw} if raw else {}), name)
        _ONE[key] = value
        return value


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
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        v = variables(env)
        return cls(
            mongodb_uri=v.mongodb_uri,
            db_name=v.db_name,
            data_dir=v.data_dir,
            base_url=v.base_url,
            max_body_bytes=v.max_body_bytes,
            mode=v.mode,
            load_sandbox=v.sandbox if v.sandbox is not None else v.mode == "sandbox",
            cors_origins=v.cors_origins,
            body_read_timeout=v.body_read_timeout,
            crd_allow_jwt_reuse=v.crd_allow_jwt_reuse,
        )

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def export(values: dict[str, str]) -> None:
    """Hand settings to worker processes, which read them back with :meth:`Settings.from_env`."""
    os.environ.update(values)


# ---------------------------------------------------------------------- values read where they are used
# Read on each call, as a few are changed while the process runs (the CLI's flags, a test's monkeypatch).


def workers() -> str:
    """``PRECERT_WORKERS``: how many server processes ``precert serve`` runs (default: one per core)."""
    return _current("workers")


def host() -> str:
    """``PRECERT_HOST``: the address ``precert serve`` listens on."""
    return _current("host")


def port() -> int:
    """``PRECERT_PORT``: the port ``precert serve`` listens on."""
    return _current("port")


def debug() -> bool:
    """``PRECERT_DEBUG``: the CLI shows the traceback of a failure instead of one line."""
    return _current("debug")


def rules_dir() -> str:
    """``PRECERT_RULES_DIR``: the payer rules directory (default: the sandbox rules)."""
    return _current("rules_dir")


def dtr_version() -> str:
    """``PRECERT_DTR_VERSION``: the DTR version answered when a request does not say."""
    return _current("dtr_version")


def pas_version() -> str:
    """``PRECERT_PAS_VERSION``: the PAS version answered when nothing else decides it."""
    return _current("pas_version")


def pas_retention_days() -> int | None:
    """``PRECERT_PAS_RETENTION_DAYS``: how long requests stay available to ``$inquire`` (never
    less than PAS's six months)."""
    return _current("pas_retention_days")


def notify_backoff() -> tuple[float, float]:
    """``PRECERT_NOTIFY_BACKOFF_SECONDS`` and ``PRECERT_NOTIFY_BACKOFF_CAP_SECONDS``: the first retry
    delay of a failed notification and the longest."""
    return _current("notify_backoff_seconds"), _current("notify_backoff_cap_seconds")


def outbound_allow() -> str:
    """``PRECERT_OUTBOUND_ALLOW``: private hosts and networks outbound calls may reach in production."""
    return _current("outbound_allow")


def embedded_sync_on_commit() -> bool:
    """``PRECERT_EMBEDDED_SYNC_ON_COMMIT``: the embedded database fsyncs its journal at every commit."""
    return _current("embedded_sync_on_commit")


def crd_audit_compress() -> bool:
    """``PRECERT_CRD_AUDIT_COMPRESS``: CRD call records keep their bodies compressed (default on)."""
    return _current("crd_audit_compress")
