"""Payer staff: clinical reviewers, physician reviewers (medical directors) and administrators.

Each account carries its licence type (:data:`LICENCES`): a clinical reviewer is a nurse or a
pharmacist (RN, LPN, NP, PA, PharmD); a physician reviewer an MD or DO. Decisions check both the
role and the licence: only a ``medical-director`` holding a physician licence may deny or modify on
clinical grounds. An administrator manages accounts and settings and sees no case PHI.

Staff authenticate separately from SMART clients, with a username and password (scrypt-hashed),
and get a session: an opaque random token kept (as its SHA-256) in ``auth_staff_sessions``. Browsers
carry it in the ``precert_staff`` cookie (HttpOnly, SameSite=Strict, Secure over https); API callers
send it as ``Authorization: Bearer <token>``. Sessions end after ``staff_session_seconds`` or 30 idle
minutes, and at logout. Repeated failed sign-ins from one address make that address wait before
its next attempt (:mod:`server.auth.throttle`); no account is ever locked by them.

Routes use :func:`require_staff`::

    from server.auth import require_staff, StaffPrincipal

    @router.post("/review/cases/{case_id}/decision")
    async def decide(case_id: str, who: StaffPrincipal = Depends(require_staff("reviewer", "medical-director"))):
        ...  # who.username, who.roles
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from fastapi import Request
from fastapi.exceptions import HTTPException
from pymongo.errors import DuplicateKeyError

from server.auth.policy import ROLES
from server.auth.throttle import SignInThrottle
from server.npi import is_valid_npi

COOKIE = "precert_staff"
USERNAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,100}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, maxmem=64 * 1024 * 1024, **_SCRYPT)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt)}${b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected), maxmem=64 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# A hash to check against when the username is unknown, so both paths cost the same.
_DUMMY_HASH = hash_password(secrets.token_hex(8))


def check_roles(roles) -> list[str]:
    roles = list(dict.fromkeys(roles))
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise ValueError(f"roles: one or more of {', '.join(ROLES)}")
    return roles


def check_new_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < 12 or len(password) > 1024:
        raise ValueError("password: 12 to 1024 characters")
    return password


# Licence type -> (kind, in words). "physician" licences may sign clinical denials.
LICENCES = {
    "MD": ("physician", "Doctor of Medicine"),
    "DO": ("physician", "Doctor of Osteopathic Medicine"),
    "RN": ("clinical", "Registered Nurse"),
    "LPN": ("clinical", "Licensed Practical Nurse"),
    "NP": ("clinical", "Nurse Practitioner"),
    "PA": ("clinical", "Physician Assistant"),
    "PharmD": ("clinical", "Pharmacist"),
}
# The demo accounts' licences (the sandbox's own staff; see server.auth.routes.SANDBOX_STAFF).
SANDBOX_LICENCES = {"reviewer": "RN", "director": "MD"}
# ... and their (synthetic) NPIs.
SANDBOX_NPIS = {"reviewer": "1900000013", "director": "1900000021", "sandbox-reviewer": "1900000039"}


def check_npi(value) -> str:
    """A staff member's own NPI (named as the reviewer on PAS 2.2.1 decisions): ten digits with a
    valid check digit, or empty (none)."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not is_valid_npi(value.strip()):
        raise ValueError("npi: an NPI is ten digits ending in its check digit")
    return value.strip()


def check_licence(licence) -> str:
    if licence in (None, ""):
        return ""
    if not isinstance(licence, str) or licence not in LICENCES:
        raise ValueError(f"licence: one of {', '.join(LICENCES)} (or none, for an administrator)")
    return licence


@dataclass
class StaffPrincipal:
    username: str
    roles: list[str] = field(default_factory=list)
    display: str = ""
    session_id: str | None = None
    licence: str = ""
    npi: str = ""  # the reviewer's own NPI, which PAS 2.2.1 ClaimResponses name (claimResponseReviewer)

    def has(self, *roles: str) -> bool:
        return not roles or any(r in self.roles for r in roles)

    @property
    def physician(self) -> bool:
        """A physician reviewer: the medical-director role and a physician licence."""
        return "medical-director" in self.roles and LICENCES.get(self.licence, ("", ""))[0] == "physician"

    @property
    def acting_as(self) -> str:
        """How this person decides, for the audit trail: "physician reviewer (MD)", "clinical reviewer (RN)"."""
        if self.physician:
            return f"physician reviewer ({self.licence})"
        if "reviewer" in self.roles or "medical-director" in self.roles:
            return f"clinical reviewer ({self.licence})" if self.licence else "clinical reviewer (no licence on record)"
        return "administrator"


# Who an anonymous caller of an open sandbox (sandbox mode, authentication not enforced) acts as on
# the staff review API: the sandbox's physician reviewer. Its data is synthetic.
SANDBOX_REVIEWER = StaffPrincipal("sandbox-reviewer", ["medical-director", "reviewer"], "Open sandbox reviewer", None, "MD",
                                  SANDBOX_NPIS["sandbox-reviewer"])


def _sid(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class StaffDirectory:
    def __init__(self, users, sessions, config, production: bool, throttle: SignInThrottle | None = None):
        self.users = users
        self.sessions = sessions
        self.config = config
        self.production = production
        self.throttle = throttle

    async def add(self, username: str, password: str, roles, display: str = "", sandbox: bool = False, licence: str | None = None,
                  npi: str | None = None) -> dict:
        if not USERNAME_RE.match(username or ""):
            raise ValueError("username: 1-100 of A-Z a-z 0-9 . _ @ -")
        roles = check_roles(roles)
        if licence is None and sandbox:
            licence = SANDBOX_LICENCES.get(username)
        licence = check_licence(licence)
        if not sandbox:
            check_new_password(password)
        hashed = await asyncio.to_thread(hash_password, password)
        if npi is None and sandbox:
            npi = SANDBOX_NPIS.get(username)
        npi = check_npi(npi)
        doc = {"_id": username, "display": display[:200], "roles": roles, "licence": licence, "npi": npi or "", "password": hashed, "active": True,
               "sandbox": sandbox, "created": datetime.now(timezone.utc)}

        try:
            await self.users.insert_one(doc)
        except DuplicateKeyError:
            raise ValueError(f"username: '{username}' already exists") from None
        return self.public(doc)

    @staticmethod
    def public(doc: dict) -> dict:
        return {"username": doc["_id"], "display": doc.get("display", ""), "roles": doc.get("roles", []),
                "licence": doc.get("licence") or "", "npi": doc.get("npi") or "", "active": doc.get("active", True),
                "sandbox": doc.get("sandbox", False)}

    async def list(self) -> list[dict]:
        return [self.public(d) async for d in self.users.find({}).sort("_id", 1)]

    async def update(self, username: str, roles=None, active: bool | None = None, password: str | None = None,
                     licence: str | None = None, npi: str | None = None) -> dict | None:
        change: dict = {}
        if licence is not None:
            change["licence"] = check_licence(licence)
        if npi is not None:
            change["npi"] = check_npi(npi)
        if roles is not None:
            change["roles"] = check_roles(roles)
        if active is not None:
            change["active"] = bool(active)
        if password is not None:
            change["password"] = await asyncio.to_thread(hash_password, check_new_password(password))
        if change:
            await self.users.update_one({"_id": username}, {"$set": change})
        if active is False or password is not None:
            await self.sessions.delete_many({"username": username})
        doc = await self.users.find_one({"_id": username})
        return self.public(doc) if doc else None

    async def remove(self, username: str) -> bool:
        await self.sessions.delete_many({"username": username})
        return (await self.users.delete_one({"_id": username})).deleted_count == 1

    async def login(self, username: str, password: str, address: str | None = None) -> tuple[str, StaffPrincipal] | None:
        """A new session token and principal, or None (the reason is not told to the caller).

        Raises :class:`~server.auth.throttle.SignInThrottled` while ``address`` (the client's) must
        wait after repeated failures; the password is then not checked."""
        if self.throttle is not None:
            await self.throttle.check(username, address)
        doc = await self.users.find_one({"_id": username}) if USERNAME_RE.match(username or "") else None
        stored = doc["password"] if doc else _DUMMY_HASH
        ok = await asyncio.to_thread(check_password, password or "", stored)
        now = datetime.now(timezone.utc)
        if doc is None or not ok:
            if self.throttle is not None:
                await self.throttle.failed(username, address)
            return None
        if not doc.get("active", True) or (doc.get("sandbox") and self.production):
            return None
        if self.throttle is not None:
            await self.throttle.succeeded(username, address)
        token = secrets.token_urlsafe(32)
        await self.sessions.insert_one({
            "_id": _sid(token), "username": username, "created": now, "seen": now,
            "expires": now + timedelta(seconds=self.config.staff_session_seconds),
        })
        return token, StaffPrincipal(username, list(doc.get("roles", [])), doc.get("display", ""), _sid(token), doc.get("licence") or "", doc.get("npi") or "")

    async def session(self, token: str) -> StaffPrincipal | None:
        if not token or len(token) > 200:
            return None
        sid = _sid(token)
        sess = await self.sessions.find_one({"_id": sid})
        if sess is None:
            return None
        now = datetime.now(timezone.utc)
        aware = lambda d: d if d.tzinfo else d.replace(tzinfo=timezone.utc)  # noqa: E731
        if aware(sess["expires"]) <= now or aware(sess["seen"]) + timedelta(seconds=self.config.staff_idle_seconds) <= now:
            await self.sessions.delete_one({"_id": sid})
            return None
        doc = await self.users.find_one({"_id": sess["username"]})
        if doc is None or not doc.get("active", True) or (doc.get("sandbox") and self.production):
            return None
        if now - aware(sess["seen"]) > timedelta(seconds=60):
            await self.sessions.update_one({"_id": sid}, {"$set": {"seen": now}})
        return StaffPrincipal(doc["_id"], list(doc.get("roles", [])), doc.get("display", ""), sid, doc.get("licence") or "", doc.get("npi") or "")

    async def logout(self, token: str) -> None:
        await self.sessions.delete_one({"_id": _sid(token)})


def staff_token(request) -> str | None:
    """The staff session token a request carries (cookie, or a bearer that is not a JWT)."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        token = auth[7:].strip()
        if token.count(".") != 2:
            return token
    return request.cookies.get(COOKIE)


def require_staff(*roles: str):
    """A FastAPI dependency: the signed-in staff member, who must hold one of ``roles`` (any staff
    member when none are given). 401 without a valid session, 403 without the role. Staff sign-in is
    required in every mode, the open sandbox included (it has demo staff accounts)."""
    for role in roles:
        if role not in ROLES:
            raise ValueError(f"unknown staff role {role!r}; roles are {', '.join(ROLES)}")

    async def dependency(request: Request) -> StaffPrincipal:
        # The authentication middleware has already looked the session up, for every request.
        principal = getattr(request.state, "principal", None)
        who = principal.staff if principal is not None else None
        if who is None:
            raise HTTPException(401, "payer staff sign-in required (POST /staff/login)",
                                headers={"WWW-Authenticate": 'Bearer realm="precert-staff"'})
        if not who.has(*roles):
            raise HTTPException(403, f"this needs the {' or '.join(roles)} role")
        return who

    dependency.__name__ = f"require_staff_{'_'.join(r.replace('-', '_') for r in roles) or 'any'}"
    return dependency
