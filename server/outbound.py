"""Where Precert may send requests of its own: rest-hook notifications, JWK Sets
(:mod:`server.auth.jwks`) and EHR FHIR servers (:mod:`cds_hooks.prefetch`).

In production a caller-chosen URL must not reach the payer's own network: loopback, private,
link-local, multicast and reserved addresses are refused unless an operator allow-lists them in
``PRECERT_OUTBOUND_ALLOW`` (comma-separated host names, addresses or networks such as
``10.1.0.0/16``). Host names are resolved and every address they resolve to is checked, at the
time of the request, so a name cannot be pointed at an internal address after it was accepted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlparse
from server import settings

# Headers a caller may not set on a request Precert sends: they belong to the connection or to
# Precert, not to the subscriber.
FORBIDDEN_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "content-length", "content-type", "expect", "cookie",
    "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip",
})


class OutboundRefused(Exception):
    pass


def allow_list(env: dict | None = None) -> tuple[set[str], list[ipaddress._BaseNetwork]]:
    raw = settings.variables(env).outbound_allow if env is not None else settings.outbound_allow()
    names, nets = set(), []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            names.add(item.lower())
    return names, nets


def internal(address: ipaddress._BaseAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return (address.is_loopback or address.is_private or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified)


def _allowed(host: str, address: ipaddress._BaseAddress | None, allow) -> bool:
    names, nets = allow
    if host.lower() in names:
        return True
    return address is not None and any(address in net for net in nets)


def literal_refusal(url: str, env: dict | None = None) -> str | None:
    """Why ``url`` names an internal address outright (an IP literal or ``localhost``), or None."""
    host = (urlparse(url).hostname or "").strip("[]")
    allow = allow_list(env)
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return None if _allowed(host, None, allow) else f"'{host}' is this server itself"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if internal(address) and not _allowed(host, address, allow):
        return f"{address} is a loopback, private, link-local or reserved address"
    return None


async def check_destination(url: str, env: dict | None = None) -> None:
    """Raise OutboundRefused when ``url`` reaches an internal address (production only)."""
    reason = literal_refusal(url, env)
    if reason:
        raise OutboundRefused(reason)
    parsed = urlparse(url)
    host = parsed.hostname or ""
    allow = allow_list(env)
    if _allowed(host, None, allow):
        return
    try:
        ipaddress.ip_address(host.strip("[]"))
        return  # a literal, already checked
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parsed.port or (443 if parsed.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except OSError as exc:
        raise OutboundRefused(f"'{host[:100]}' does not resolve: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if internal(address) and not _allowed(host, address, allow):
            raise OutboundRefused(f"'{host[:100]}' resolves to {address}, an internal address")


def safe_headers(pairs) -> list[tuple[str, str]]:
    return [(n, v) for n, v in pairs if n.strip().lower() not in FORBIDDEN_HEADERS]
