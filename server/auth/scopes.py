"""SMART scopes, in both syntaxes, reduced to one permission model.

A permission is a resource type (or ``*``) with a set of the SMART v2 letters ``c r u d s``.
SMART v1 suffixes map onto them (``read`` = ``rs``, ``write`` = ``cud``, ``*`` = ``cruds``), so
``system/Claim.write`` and ``system/Claim.cud`` grant exactly the same thing. Only ``system/``
scopes mean anything to Backend Services; ``patient/``, ``user/``, launch and OpenID scopes, and v2
granular scopes with ``?param=value`` restrictions are recognised but never granted (a server may
grant fewer scopes than asked for; the token response says which were granted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

LETTERS = "cruds"
V1 = {"read": "rs", "write": "cud", "*": "cruds"}

_SCOPE_RE = re.compile(r"^(patient|user|system)/(\*|[A-Za-z]{1,64})\.([A-Za-z*]{1,5})(\?.*)?$")

# Resource type names as FHIR spells them, for scopes written in another case (the DTR IG text
# uses ``system/questionnaire.rs``).
_CANONICAL_TYPES: dict[str, str] = {}


def register_types(types) -> None:
    for t in types:
        _CANONICAL_TYPES[t.lower()] = t


def _canonical(rtype: str) -> str:
    return rtype if rtype == "*" else _CANONICAL_TYPES.get(rtype.lower(), rtype)


@dataclass(frozen=True)
class Scope:
    """One parsed ``system/Type.letters`` scope, remembering how it was written."""

    text: str
    context: str  # patient | user | system
    resource_type: str  # canonical type name or "*"
    letters: frozenset[str]
    v1: bool
    restricted: bool  # v2 granular scope with a query; never granted


def parse_scope(text: str) -> Scope | None:
    """Parse one scope; None when it is not a resource scope (or not well formed)."""
    m = _SCOPE_RE.match(text)
    if not m:
        return None
    context, rtype, perm, query = m.groups()
    if perm in V1:
        letters, v1 = V1[perm], True
    else:
        # v2: letters in the order c r u d s, each at most once.
        if not re.fullmatch(r"c?r?u?d?s?", perm):
            return None
        letters, v1 = perm, False
    return Scope(text, context, _canonical(rtype), frozenset(letters), v1, query is not None)


@dataclass
class Permissions:
    """What a token may do: resource type (or ``*``) -> letters."""

    grants: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def from_scopes(cls, scopes) -> "Permissions":
        perms = cls()
        for text in scopes if not isinstance(scopes, str) else scopes.split():
            scope = parse_scope(text) if isinstance(text, str) else text
            if scope is None or scope.context != "system" or scope.restricted:
                continue
            perms.grants.setdefault(scope.resource_type, set()).update(scope.letters)
        return perms

    def allows(self, rtype: str, letter: str) -> bool:
        return letter in self.grants.get(rtype, ()) or letter in self.grants.get("*", ())

    def letters_for(self, rtype: str) -> set[str]:
        return set(self.grants.get(rtype, set())) | set(self.grants.get("*", set()))


def _v2_text(context: str, rtype: str, letters) -> str:
    return f"{context}/{rtype}." + "".join(c for c in LETTERS if c in letters)


def mediate(requested: str, allowed: Permissions) -> list[str]:
    """The scopes to grant for a token request: each requested ``system/`` scope cut down to what
    the client's registration allows. A scope granted in full keeps its spelling (v1 stays v1); a
    partly granted one is returned in v2 form with the letters actually granted."""
    granted: list[str] = []
    for text in dict.fromkeys(requested.split()):
        scope = parse_scope(text)
        if scope is None or scope.context != "system" or scope.restricted:
            continue
        if scope.resource_type == "*":
            # Wildcard request: grant what the registration allows, type by type.
            star = scope.letters & allowed.grants.get("*", set())
            if star == scope.letters:
                granted.append(text)
                continue
            if star:
                granted.append(_v2_text("system", "*", star))
            for rtype, letters in sorted(allowed.grants.items()):
                if rtype != "*" and (scope.letters & letters) - star:
                    granted.append(_v2_text("system", rtype, scope.letters & letters))
            continue
        letters = scope.letters & allowed.letters_for(scope.resource_type)
        if letters == scope.letters:
            granted.append(text)
        elif letters:
            granted.append(_v2_text("system", scope.resource_type, letters))
    return list(dict.fromkeys(granted))


def valid_scope_list(text: str) -> list[str]:
    """Scopes a registration may hold: well-formed ``system/`` resource scopes."""
    bad = [s for s in text.split() if (p := parse_scope(s)) is None or p.context != "system" or p.restricted]
    if bad:
        raise ValueError(f"not system resource scopes: {', '.join(bad[:5])}")
    return text.split()
