"""One verifier for the signed JWTs Precert accepts from outside, and one replay store.

Two kinds of caller present a JWT signed with their own key: SMART Backend Services clients (the
client assertion at the token endpoint, :mod:`server.auth.tokens`) and EHRs calling CDS Hooks (the
bearer token, :mod:`cds_hooks.jwt_auth`). Each decides whom it trusts and which keys it registered;
everything else is done here, once:

- :func:`parse` reads the header and claims before any key is chosen;
- :func:`find_key` takes the key from a registered JWK Set or from a JWK Set URL,
  through the application's one fetcher (:mod:`server.auth.jwks`: Cache-Control, the outbound guard,
  the last good set when the key server fails), and fetches again once when the ``kid`` is new, so
  key rotation works;
- :func:`check` verifies the signature with the algorithm pinned, ``aud``, ``exp``, ``iat``, ``nbf``
  and the required claims;
- :class:`ReplayStore` remembers each ``jti`` until the token expires, in one MongoDB collection
  (a unique ``_id`` per kind, issuer and jti) that every worker shares, with a local cache that
  answers a repeat to this worker without a round trip.

Failures are :class:`Rejected`, with a ``reason`` the caller words in its own protocol's terms
(OAuth's ``invalid_client`` for SMART, ``invalid_token`` for CDS Hooks).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import jwt
from cachetools import TLRUCache
from pymongo.errors import DuplicateKeyError

from server.auth.jwks import JWKSFetcher, JWKSFetchError


class Rejected(Exception):
    """A JWT refused. ``reason`` is one of: ``malformed``, ``jwks`` (the key set could not be had),
    ``expired``, ``audience``, ``immature``, ``missing`` (``detail`` names the claim),
    ``signature``, ``invalid``, ``replay``."""

    def __init__(self, reason: str, detail: str = "", error_type: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.error_type = error_type  # the JWT library's exception, for messages that name it


def parse(token: str) -> tuple[dict, dict]:
    """(header, claims) of ``token``, unverified: for choosing the key and the issuer's rules."""
    try:
        return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise Rejected("malformed", str(exc)) from None


def check(token: str, key: Any, alg: str, audience: str | list[str], leeway: float, require: list[str]) -> dict:
    """The verified claims of ``token``: signed by ``key`` with ``alg`` (and only ``alg``), for
    ``audience``, within its lifetime give or take ``leeway`` seconds, carrying every claim in ``require``."""
    try:
        return jwt.decode(token, key, algorithms=[alg], audience=audience, leeway=leeway, options={"require": require})
    except jwt.ExpiredSignatureError:
        raise Rejected("expired") from None
    except jwt.InvalidAudienceError:
        raise Rejected("audience") from None
    except jwt.ImmatureSignatureError:
        raise Rejected("immature") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Rejected("missing", exc.claim) from None
    except jwt.InvalidSignatureError:
        raise Rejected("signature") from None
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise Rejected("invalid", str(exc), type(exc).__name__) from None


async def find_key(fetcher: JWKSFetcher, select: Callable[[dict], Any], *, jwks: dict | None = None,
                   jwks_url: str | None = None, refresh_min: float = 0.0) -> Any:
    """``select(jwk_set)`` over the registered set ``jwks``, or over the set at ``jwks_url`` through
    the application's one ``fetcher`` (fetched again, at most every ``refresh_min`` seconds, when
    ``select`` finds nothing: the owner rotated its keys). None when no key is selected."""
    if jwks_url is None:
        return select(jwks or {})
    try:
        key = select(await fetcher.get(jwks_url))
        if key is None:
            key = select(await fetcher.get(jwks_url, refresh=True, refresh_min=refresh_min))
    except JWKSFetchError as exc:
        raise Rejected("jwks", str(exc)) from None
    return key


class ReplayStore:
    """Each (kind, issuer, jti) accepted once while its token lives, across every worker."""

    SWEEP_SECONDS = 60.0

    def __init__(self, collection=None):
        self.collection = collection
        self._seen: TLRUCache[tuple[str, str, str], float] = TLRUCache(maxsize=100_000, ttu=lambda _k, exp, _now: exp,
                                                                        timer=time.time)
        self._next_sweep = 0.0
        self._indexed = False

    async def first_use(self, kind: str, iss: str, jti: str, expires: float) -> bool:
        """True the first time; False for a ``jti`` this issuer already used (a replay).
        ``expires`` (epoch seconds) is when the token can no longer be presented."""
        key = (kind, iss, jti)
        if key in self._seen:
            return False
        if self.collection is not None:
            now = time.time()
            if now > self._next_sweep:  # TTL indexes are not everywhere; sweep now and then
                self._next_sweep = now + self.SWEEP_SECONDS
                await self.collection.delete_many({"expires": {"$lt": datetime.now(timezone.utc) - timedelta(seconds=60)}})
            try:
                await self.collection.insert_one({"_id": f"{kind}\n{iss}\n{jti}",
                                                  "expires": datetime.fromtimestamp(expires, timezone.utc)})
            except DuplicateKeyError:
                return False
        self._seen[key] = expires
        return True

    def forget(self) -> None:
        """Forget what this worker has seen locally (the shared record stays)."""
        self._seen.clear()

    async def ensure_index(self) -> None:
        """Expire records in the database itself where it can (a TTL index); else the sweep does."""
        if self.collection is None or self._indexed:
            return
        self._indexed = True
        try:
            await self.collection.create_index("expires", expireAfterSeconds=0)
        except Exception:  # a database without TTL indexes: a plain index keeps the sweep cheap
            await self.collection.create_index("expires")


REPLAY_COLLECTION = "auth_jti"


def shared_replay(state) -> ReplayStore:
    """The application's one replay store (``state.services['jwt_replay']``), made by whichever
    surface starts first."""
    store = state.services.get("jwt_replay")
    if store is None:
        store = state.services["jwt_replay"] = ReplayStore(state.storage.collection(REPLAY_COLLECTION))
    return store
