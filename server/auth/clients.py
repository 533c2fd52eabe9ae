"""Registered SMART Backend Services clients (collection ``auth_clients``).

A client is a system (an EHR, a DTR app, a test harness) with a public JWK Set, given inline or as a
JWKS URL, the scopes it may be granted, and the provider organization it acts for. Every resource it
creates is owned by that organization, and it sees only that organization's claims, responses,
questionnaire responses, tasks and subscriptions.

The registry caches clients per process for :data:`CACHE_SECONDS`, so disabling a client stops its
tokens within that time in every worker (at once in the worker that served the change).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

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


def build_client(data: dict, production: bool) -> Client:
    """Validate a registration request (admin API body or CLI arguments)."""
    if not isinstance(data, dict):
        raise RegistrationError("the registration must be a JSON object")
    client_id = data.get("client_id") or secrets.token_urlsafe(16)
    if not isinstance(client_id, str) or not CLIENT_ID_RE.match(client_id):
        raise RegistrationError("client_id: 1-200 of A-Z a-z 0-9 . _ : / @ -")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise RegistrationError("name: required, at most 200 characters")
    org = data.get("organization")
    if isinstance(org, str):
        org = {"system": NPI_SYSTEM, "value": org}
    if data.get("npi") and not org:
        org = {"system": NPI_SYSTEM, "value": data["npi"]}
    if not isinstance(org, dict) or not isinstance(org.get("value"), str) or not org.get("value").strip():
        raise RegistrationError("organization: required, the provider organization's identifier {system, value} (e.g. its NPI)")
    org = {"system": str(org.get("system") or NPI_SYSTEM)[:200], "value": org["value"].strip()[:100], **({"display": str(org["display"])[:200]} if org.get("display") else {})}
    if org["system"] == NPI_SYSTEM and not re.fullmatch(r"\d{10}", org["value"]):
        raise RegistrationError("organization.value: an NPI is ten digits")
    scopes = data.get("scopes", data.get("scope"))
    if scopes is None:
        scopes = list(DEFAULT_SCOPES)
    elif isinstance(scopes, str):
        scopes = scopes.split()
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes) or not scopes:
        raise RegistrationError("scopes: a space-separated string or a list of system/ scopes")
    try:
        scopes = valid_scope_list(" ".join(scopes))
    except ValueError as exc:
        raise RegistrationError(f"scopes: {exc}") from None
    jwks, jwks_url = data.get("jwks"), data.get("jwks_url")
    if bool(jwks) == bool(jwks_url):
        raise RegistrationError("give exactly one of jwks (inline JWK Set) or jwks_url")
    if jwks:
        jwks = check_jwks(jwks)
    if jwks_url:
        if not isinstance(jwks_url, str):
            raise RegistrationError("jwks_url: must be a string")
        jwks_url = check_jwks_url(jwks_url, production)
    pas_version = data.get("pas_version")
    if pas_version is not None and pas_version not in PAS_VERSIONS:
        raise RegistrationError(f"pas_version: one of {', '.join(PAS_VERSIONS)}, or absent for the server default")
    return Client(client_id, name.strip(), org, scopes, jwks, jwks_url, bool(data.get("active", True)), pas_version=pas_version)


class ClientRegistry:
    def __init__(self, collection):
        self.collection = collection
        self._cache: dict[str, tuple[float, Client | None]] = {}

    async def get(self, client_id: str) -> Client | None:
        hit = self._cache.get(client_id)
        now = time.monotonic()
        if hit and hit[0] > now:
            return hit[1]
        doc = await self.collection.find_one({"_id": client_id})
        client = Client.from_doc(doc) if doc else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[client_id] = (now + CACHE_SECONDS, client)
        return client

    async def all(self) -> list[Client]:
        return [Client.from_doc(d) async for d in self.collection.find({}).sort("_id", 1)]

    async def add(self, client: Client) -> Client:
        from pymongo.errors import DuplicateKeyError

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
    import base64
    import hashlib

    members = ("e", "kty", "n") if jwk.get("kty") == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({m: jwk.get(m) for m in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
