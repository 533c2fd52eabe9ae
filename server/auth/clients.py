"""Registered SMART Backend Services clients (collection ``auth_clients``).

A client is a system (an EHR, a DTR app, a test harness) with a public JWK Set, given inline or as a
JWKS URL, the scopes it may be granted, and the provider organization it acts for. Every resource it
creates is owned by that organization, and it sees only that organization's claims, responses,
questionnaire responses, tasks and subscriptions.

The registry caches clients per process for :data:`CACHE_SECONDS`, so disabling a client stops its
tokens within that time in every worker (at once in the worker that served the change).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cachetools import TTLCache
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator, model_validator
from pymongo.errors import DuplicateKeyError

from server.auth.scopes import Permissions, valid_scope_list
from server.npi import NPI, npi

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
CACHE_SECONDS = 30
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._:/@-]{1,200}$")
DEFAULT_SCOPES = (
    "system/Claim.cr system/ClaimResponse.rs system/Subscription.cruds system/QuestionnaireResponse.cruds "
    "system/Task.rs system/Questionnaire.rs system/ValueSet.rs system/Library.rs system/CodeSystem.rs "
    "system/Patient.rs system/Coverage.rs system/Organization.rs system/Practitioner.rs "
    "system/PractitionerRole.rs system/Location.rs"
).split()

PAS_VERSIONS = ("2.0.1", "2.2.1")

SANDBOX_CLIENTS_FILE = Path(__file__).with_name("sandbox_clients.json")


class RegistrationError(ValueError):
    """A client registration that cannot be accepted; the message says which field and why."""


def organization_key(system: str, value: str) -> str:
    """The owner tag of a provider organization: its identifier as ``system|value``."""
    return f"{system}|{value}"


def check_jwks(jwks: dict) -> dict:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise RegistrationError("jwks: must be a JWK Set, {\"keys\": [...]}, with at least one key")
    kids = set()
    for i, key in enumerate(jwks["keys"]):
        if not isinstance(key, dict):
            raise RegistrationError(f"jwks.keys[{i}]: must be a JSON object")
        if any(k in key for k in ("d", "p", "q", "dp", "dq", "qi", "k")):
            raise RegistrationError(f"jwks.keys[{i}]: holds private key material; register the public key only")
        kty, kid = key.get("kty"), key.get("kid")
        if kty not in ("RSA", "EC"):
            raise RegistrationError(f"jwks.keys[{i}].kty: must be RSA or EC")
        if not isinstance(kid, str) or not kid:
            raise RegistrationError(f"jwks.keys[{i}].kid: required")
        if kid in kids:
            raise RegistrationError(f"jwks.keys[{i}].kid: '{kid[:64]}' is used twice")
        kids.add(kid)
        needed = ("n", "e") if kty == "RSA" else ("crv", "x", "y")
        missing = [n for n in needed if not key.get(n)]
        if missing:
            raise RegistrationError(f"jwks.keys[{i}]: missing {', '.join(missing)}")
    return {"keys": [dict(k) for k in jwks["keys"]]}


def check_jwks_url(url: str, production: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise RegistrationError("jwks_url: must be an absolute https URL")
    if parts.scheme != "https" and production:
        raise RegistrationError("jwks_url: must use https in production")
    return url


@dataclass
class Client:
    client_id: str
    name: str
    organization: dict  # {"system", "value", "display"?}
    scopes: list[str]
    jwks: dict | None = None
    jwks_url: str | None = None
    active: bool = True
    sandbox: bool = False  # a demo client whose keys are published; refused in production
    created: datetime | None = None
    permissions: Permissions = field(default_factory=Permissions)
    pas_version: str | None = None  # the PAS version answered when its requests do not say (2.0.1 or 2.2.1)

    def __post_init__(self):
        self.permissions = Permissions.from_scopes(self.scopes)

    @property
    def owner(self) -> str:
        return organization_key(self.organization["system"], self.organization["value"])

    def to_doc(self) -> dict:
        return {
            "_id": self.client_id,
            "name": self.name,
            "organization": self.organization,
            "scopes": self.scopes,
            "jwks": json.dumps(self.jwks) if self.jwks else None,
            "jwks_url": self.jwks_url,
            "active": self.active,
            "sandbox": self.sandbox,
            "created": self.created or datetime.now(timezone.utc),
            "pas_version": self.pas_version,
        }

    @classmethod
    def from_doc(cls, doc: dict) -> "Client":
        return cls(
            client_id=doc["_id"],
            name=doc.get("name", ""),
            organization=doc["organization"],
            scopes=list(doc.get("scopes") or []),
            jwks=json.loads(doc["jwks"]) if doc.get("jwks") else None,
            jwks_url=doc.get("jwks_url"),
            active=doc.get("active", True),
            sandbox=doc.get("sandbox", False),
            created=doc.get("created"),
            pas_version=doc.get("pas_version"),
        )

    def public(self) -> dict:
        """The registration as the admin API and CLI show it (public keys only, by nature)."""
        return {
            "client_id": self.client_id,
            "name": self.name,
            "organization": self.organization,
            "scopes": " ".join(self.scopes),
            "jwks_url": self.jwks_url,
            "jwks": self.jwks,
            "active": self.active,
            "sandbox": self.sandbox,
            "created": self.created.isoformat() if self.created else None,
            "pas_version": self.pas_version,
        }


class Registration(BaseModel):
    """A client registration request (admin API body or CLI arguments). Each field's check says
    what is wrong in words that name the field; ``production`` (validation context) refuses
    loopback and private JWK Set URLs."""

    model_config = ConfigDict(extra="ignore", validate_default=True)

    client_id: Any = None
    name: Any = None
    organization: Any = None
    npi: Any = None
    scopes: Any = None
    scope: Any = None
    jwks: Any = None
    jwks_url: Any = None
    active: Any = True
    pas_version: Any = None

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v):
        v = v or secrets.token_urlsafe(16)
        if not isinstance(v, str) or not CLIENT_ID_RE.match(v):
            raise ValueError("client_id: 1-200 of A-Z a-z 0-9 . _ : / @ -")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not isinstance(v, str) or not v.strip() or len(v) > 200:
            raise ValueError("name: required, at most 200 characters")
        return v.strip()

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, v, info: ValidationInfo):
        if v and not isinstance(v, str):
            raise ValueError("jwks_url: must be a string")
        return check_jwks_url(v, bool((info.context or {}).get("production"))) if v else None

    @field_validator("pas_version")
    @classmethod
    def _pas_version(cls, v):
        if v is not None and v not in PAS_VERSIONS:
            raise ValueError(f"pas_version: one of {', '.join(PAS_VERSIONS)}, or absent for the server default")
        return v

    @model_validator(mode="after")
    def _together(self):
        org = self.organization
        if isinstance(org, str):
            org = {"system": NPI_SYSTEM, "value": org}
        if self.npi and not org:
            org = {"system": NPI_SYSTEM, "value": self.npi}
        if not isinstance(org, dict) or not isinstance(org.get("value"), str) or not org.get("value").strip():
            raise ValueError("organization: required, the provider organization's identifier {system, value} (e.g. its NPI)")
        org = {"system": str(org.get("system") or NPI_SYSTEM)[:200], "value": org["value"].strip()[:100],
               **({"display": str(org["display"])[:200]} if org.get("display") else {})}
        if org["system"] == NPI_SYSTEM and not re.fullmatch(r"\d{10}", org["value"]):
            raise ValueError("organization.value: an NPI is ten digits")
        self.organization = org
        scopes = self.scopes if self.scopes is not None else self.scope
        if scopes is None:
            scopes = list(DEFAULT_SCOPES)
        elif isinstance(scopes, str):
            scopes = scopes.split()
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes) or not scopes:
            raise ValueError("scopes: a space-separated string or a list of system/ scopes")
        try:
            self.scopes = valid_scope_list(" ".join(scopes))
        except ValueError as exc:
            raise ValueError(f"scopes: {exc}") from None
        if bool(self.jwks) == bool(self.jwks_url):
            raise ValueError("give exactly one of jwks (inline JWK Set) or jwks_url")
        if self.jwks:
            self.jwks = check_jwks(self.jwks)
        return self

    def client(self) -> Client:
        return Client(self.client_id, self.name, self.organization, self.scopes, self.jwks or None, self.jwks_url,
                      bool(self.active), pas_version=self.pas_version)


def build_client(data, production: bool) -> Client:
    """A :class:`Client` from a registration request, or :class:`RegistrationError` saying what is
    wrong (the first problem found, in the order the fields are listed above)."""
    if not isinstance(data, dict):
        raise RegistrationError("the registration must be a JSON object")
    try:
        return Registration.model_validate(data, context={"production": production}).client()
    except ValidationError as exc:
        first = exc.errors()[0]
        error = (first.get("ctx") or {}).get("error")
        raise RegistrationError(str(error) if error is not None else first.get("msg", "the registration is not valid")) from None


class ClientRegistry:
    def __init__(self, collection):
        self.collection = collection
        # Registrations (and unknown ids) for CACHE_SECONDS: a client disabled through another worker
        # loses access within that time.
        self._cache: TTLCache[str, Client | None] = TTLCache(maxsize=10_000, ttl=CACHE_SECONDS)

    async def get(self, client_id: str) -> Client | None:
        try:
            return self._cache[client_id]
        except KeyError:
            pass
        doc = await self.collection.find_one({"_id": client_id})
        client = self._cache[client_id] = Client.from_doc(doc) if doc else None
        return client

    async def all(self) -> list[Client]:
        return [Client.from_doc(d) async for d in self.collection.find({}).sort("_id", 1)]

    async def add(self, client: Client) -> Client:

        client.created = client.created or datetime.now(timezone.utc)
        try:
            await self.collection.insert_one(client.to_doc())
        except DuplicateKeyError:
            raise RegistrationError(f"client_id: '{client.client_id}' is already registered") from None
        self._cache.pop(client.client_id, None)
        return client

    async def replace(self, client: Client) -> None:
        await self.collection.replace_one({"_id": client.client_id}, client.to_doc(), upsert=True)
        self._cache.pop(client.client_id, None)

    async def set_active(self, client_id: str, active: bool) -> bool:
        result = await self.collection.update_one({"_id": client_id}, {"$set": {"active": active}})
        self._cache.pop(client_id, None)
        return result.matched_count == 1

    async def remove(self, client_id: str) -> bool:
        result = await self.collection.delete_one({"_id": client_id})
        self._cache.pop(client_id, None)
        return result.deleted_count == 1


def sandbox_clients() -> list[Client]:
    """The demo clients, whose private keys are published in docs/sandbox-keys/."""
    data = json.loads(SANDBOX_CLIENTS_FILE.read_text())
    orgs = {
        "sandbox-clinic": ("org-clinic", npi("23456789"), "Precert Demo Family Clinic"),
        "sandbox-hospital": ("org-hospital", npi("34567890"), "Precert Demo General Hospital"),
    }
    out = []
    for cid, entry in data.items():
        _, org_npi, display = orgs[cid]
        out.append(
            Client(cid, entry["name"], {"system": NPI, "value": org_npi, "display": display},
                   ["system/*.cruds"], jwks=entry["jwks"], sandbox=True)
        )
    return out


def sandbox_thumbprints() -> set[str]:
    """JWK thumbprints of the published demo keys (refused outside the sandbox)."""
    data = json.loads(SANDBOX_CLIENTS_FILE.read_text())
    return {jwk_thumbprint(k) for entry in data.values() for k in entry["jwks"]["keys"]}


def jwk_thumbprint(jwk: dict) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url)."""

    members = ("e", "kty", "n") if jwk.get("kty") == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({m: jwk.get(m) for m in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
