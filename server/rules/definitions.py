"""The validated shapes of a rule set: payer, rules, code matchers, conditions and gold cards.

The loader builds them from the YAML files and the engine evaluates them; both import them from here,
so neither has to import the other's module to know them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.rules import codes as codesys


@dataclass
class Condition:
    id: str
    when: str
    explain: str
    set: dict
    if_unknown: dict | None
    fn: Any = field(repr=False, default=None)


@dataclass
class CodeMatcher:
    alias: str
    family: str
    code: str | None = None
    low: str | None = None
    high: str | None = None

    def describe(self) -> dict:
        out = {"system": codesys.system_uri(self.alias)}
        if self.code is not None:
            out["code"] = self.code
        else:
            out["range"] = f"{self.low}-{self.high}"
        return out


@dataclass
class Rule:
    id: str
    title: str
    description: str | None
    category: str | None
    plans: tuple[str, ...]
    matchers: list[CodeMatcher]
    values: dict
    gold_card: bool
    conditions: list[Condition]
    priority: int
    file: str
    line: int
    order: int = 0

    def summary(self) -> dict:
        out = {"id": self.id, "title": self.title, "category": self.category, "file": self.file, "line": self.line,
               "plans": list(self.plans) or "all", "codes": [m.describe() for m in self.matchers]}
        out.update({k: v for k, v in self.values.items() if v not in (None, [], {})})
        out["gold_card"] = self.gold_card
        if self.conditions:
            out["conditions"] = [{"id": c.id, "when": c.when, "explain": c.explain, "set": dict(c.set),
                                  **({"if_unknown": dict(c.if_unknown)} if c.if_unknown else {})} for c in self.conditions]
        return out


@dataclass
class GoldCard:
    npi: str
    name: str | None
    categories: tuple[str, ...]   # empty = every category
    rules: tuple[str, ...]        # empty = every rule
    until: str | None


@dataclass
class Payer:
    id: str
    name: str
    aliases: tuple[str, ...]
    identifiers: tuple[tuple[str | None, str], ...]
    references: tuple[str, ...]
    unidentified_payor: str          # "assume-member" | "not-member"
    plans: tuple[str, ...]
    contact: dict
    network_npis: frozenset[str]
    network_orgs: frozenset[str]
    preferred_sites: tuple[dict, ...] = ()   # in-network places to propose: {reference, display}
    # Decision clocks: {category or "default": {"expedited": hours, "standard": hours}}; a category
    # not named keeps the CMS-0057-F default (72 hours expedited, 7 days standard).
    clocks: dict = field(default_factory=dict)
    # The peer-to-peer discussion offered with clinical denials: {"contact": str, "window_days": int}.
    peer_to_peer: dict = field(default_factory=dict)


def _ref_id(ref: str) -> str:
    """'Organization/x', 'https://h/fhir/Organization/x' and 'x' all become 'Organization/x' (or 'x')."""
    ref = ref.strip().split("/_history/")[0]
    parts = ref.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else parts[-1]
