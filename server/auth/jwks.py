"""The JWK Sets Precert trusts keys from, fetched and cached in one place: SMART Backend Services
clients' registered ``jwks_url`` and the ``jku`` of EHRs calling CDS Hooks.

One fetcher, one cache, shared by both (``shared(state)``): the same URL is fetched once however
many surfaces use it, and one set of rules applies to every fetch:

- httpx (so tests mock the URL with respx), no redirects, a short timeout, at most 64 KB;
- in production, through the outbound guard (:mod:`server.outbound`): a URL that reaches the payer's
  own network (loopback, private, link-local) is refused unless ``PRECERT_OUTBOUND_ALLOW`` names it,
  checked after name resolution at each fetch;
- cached as long as the answer's ``Cache-Control`` says (``max-age``, at most ``max_seconds``; five
  minutes without one; not at all for ``no-store``/``no-cache``);
- ``refresh=True`` (a ``kid`` not in the cached set: the owner rotated its keys) fetches again, but
  never sooner than ``refresh_min`` seconds after the last fetch, so unknown ``kid`` values cannot
  make Precert hammer a key server;
- a key server that fails briefly does not lock callers out: the last good set is used while it is
  younger than ``max_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import httpx

from server.outbound import OutboundRefused, check_destination

log = logging.getLogger("precert.auth.jwks")

JWKS_MAX_BYTES = 64 * 1024
DEFAULT_TTL = 300.0


class JWKSFetchError(Exception):
    """The JWK Set could not be had; the message says why, for the caller's error response."""


@dataclass
class _Entry:
    fetched: float
    expires: float
    jwks: dict


class JWKSFetcher:
    def __init__(self, *, max_seconds: float = 3600, timeout: float = 5.0, guarded: bool = False,
                 http: httpx.AsyncClient | None = None):
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.guarded = guarded
        self.http = http
        self._cache: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _client(self) -> httpx.AsyncClient:
        if self.http is None:
            self.http = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self.http

    def forget(self, url: str) -> None:
        """Drop a cached set (an operator changed a registration)."""
        self._cache.pop(url, None)

    def age(self, url: str, seconds: float) -> None:
        """Make the cached set for ``url`` look ``seconds`` older (tests of rotation and expiry)."""
        entry = self._cache.get(url)
        if entry is not None:
            entry.fetched -= seconds
            entry.expires -= seconds

    async def get(self, url: str, *, refresh: bool = False, refresh_min: float = 0.0) -> dict:
        now = time.monotonic()
        entry = self._cache.get(url)
        if entry is not None and not refresh and now < entry.expires:
            return entry.jwks
        if entry is not None and refresh and now - entry.fetched < refresh_min:
            return entry.jwks
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            latest = self._cache.get(url)
            if latest is not None and latest is not entry and time.monotonic() < latest.expires:
                return latest.jwks  # fetched by another request while this one waited
            try:
                jwks, ttl = await self._fetch(url)
            except JWKSFetchError:
                if entry is not None and time.monotonic() - entry.fetched < self.max_seconds:
                    log.warning("JWK Set at %s unavailable; using the copy fetched %.0f s ago", url[:120],
                                time.monotonic() - entry.fetched)
                    return entry.jwks
                raise
            fetched = time.monotonic()
            if ttl > 0:
                self._cache[url] = _Entry(fetched, fetched + ttl, jwks)
            else:
                self._cache.pop(url, None)
            return jwks

    async def _fetch(self, url: str) -> tuple[dict, float]:
        where = url[:120]
        if self.guarded:
            try:
                await check_destination(url)
            except OutboundRefused as exc:
                raise JWKSFetchError(f"the JWK Set at {where} is not fetched: {exc}") from None
        try:
            resp = await asyncio.wait_for(self._client().get(url, headers={"Accept": "application/json"}), self.timeout)
        except (httpx.HTTPError, asyncio.TimeoutError, OSError) as exc:
            raise JWKSFetchError(f"the JWK Set at {where} could not be fetched ({type(exc).__name__})") from None
        if resp.status_code != 200:
            raise JWKSFetchError(f"the JWK Set at {where} returned HTTP {resp.status_code}")
        if len(resp.content) > JWKS_MAX_BYTES:
            raise JWKSFetchError(f"the JWK Set at {where} is larger than {JWKS_MAX_BYTES} bytes")
        try:
            jwks = resp.json()
        except ValueError:
            raise JWKSFetchError(f"the document at {where} is not JSON") from None
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise JWKSFetchError(f"the document at {where} is not a JWK Set") from None
        return jwks, self._ttl(resp.headers.get("cache-control", ""))

    def _ttl(self, cache_control: str) -> float:
        directives = {d.strip().split("=")[0].lower(): d.strip() for d in cache_control.split(",") if d.strip()}
        if "no-store" in directives or "no-cache" in directives:
            return 0
        if "max-age" in directives:
            try:
                return min(self.max_seconds, max(0, int(directives["max-age"].split("=", 1)[1].strip('"'))))
            except (IndexError, ValueError):
                return 0
        return min(self.max_seconds, DEFAULT_TTL)

    async def close(self) -> None:
        if self.http is not None:
            http, self.http = self.http, None
            await http.aclose()


def shared(state, production: bool) -> JWKSFetcher:
    """The application's one fetcher (``state.services['jwks']``), made by whichever surface starts first."""
    fetcher = state.services.get("jwks")
    if fetcher is None:
        fetcher = state.services["jwks"] = JWKSFetcher(guarded=production)
    return fetcher
