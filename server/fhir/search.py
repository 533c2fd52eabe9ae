"""Parsing FHIR search requests into criteria the storage layer can answer.

The parser knows FHIR's search syntax (modifiers, prefixes, comma-OR, repeated-AND); it knows
nothing of MongoDB. Unknown parameters are refused with a 400, since ignoring them silently would
return more than the client asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from server.fhir.errors import FHIRError, issue
from server.fhir.search_params import COMMON_PARAMS, RESULT_PARAMS, SearchParam, date_range, params_for

DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@dataclass
class Criterion:
    name: str
    type: str
    modifier: str | None
    values: list[Any]  # OR'd


@dataclass
class SearchRequest:
    criteria: list[Criterion] = field(default_factory=list)
    sort: list[tuple[str, str, bool]] = field(default_factory=list)  # (name, type, descending)
    count: int = 20
    offset: int = 0
    includes: list[tuple[str, str, str | None]] = field(default_factory=list)  # (source type, param, target)
    revincludes: list[tuple[str, str]] = field(default_factory=list)
    total: bool = True
    summary_count: bool = False


def _split_values(raw: str) -> list[str]:
    # Commas separate alternatives; "\," is a literal comma.
    out, cur, i = [], "", 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            cur += raw[i + 1]
            i += 2
            continue
        if ch == ",":
            out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    out.append(cur)
    return out


def _token(value: str) -> tuple[str | None, str | None]:
    if "|" in value:
        system, code = value.split("|", 1)
        return system, (code or None)
    return None, value


def _date_value(name: str, value: str) -> tuple[str, datetime, datetime]:
    prefix = "eq"
    if len(value) > 2 and value[:2] in DATE_PREFIXES and not value[:2].isdigit():
        prefix, value = value[:2], value[2:]
    rng = date_range(value)
    if rng is None:
        raise FHIRError.single(400, "value", f"search parameter '{name}': '{value[:40]}' is not a FHIR date", name)
    return prefix, rng[0], rng[1]


# The longest search value accepted, per value (names, identifiers, URLs are all far shorter).
MAX_VALUE_LENGTH = 1000


def _int_param(name: str, raw: str, minimum: int, maximum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise FHIRError.single(400, "value", f"{name} must be a whole number, not '{raw[:40]}'", name) from None
    if value < minimum:
        raise FHIRError.single(400, "value", f"{name} must be at least {minimum}", name)
    return min(value, maximum)


def parse_search(
    resource_type: str,
    items: list[tuple[str, str]],
    *,
    default_count: int = 20,
    max_count: int = 1000,
) -> SearchRequest:
    declared = params_for(resource_type)
    req = SearchRequest(count=default_count)
    problems: list[dict] = []
    for key, raw in items:
        name, _, modifier = key.partition(":")
        modifier = modifier or None
        if name == "_count":
            req.count = _int_param("_count", raw, 0, max_count)
            if req.count == 0:
                req.summary_count = True
            continue
        if name == "_getpagesoffset":
            req.offset = _int_param("_getpagesoffset", raw, 0, 10_000_000)
            continue
        if name == "_total":
            req.total = raw != "none"
            continue
        if name == "_summary":
            if raw == "count":
                req.summary_count = True
            continue
        if name in ("_format", "_elements", "_pretty"):
            continue
        if name == "_sort":
            for part in raw.split(","):
                desc = part.startswith("-")
                pname = part[1:] if desc else part
                if pname in ("_lastUpdated", "_id"):
                    req.sort.append((pname, "special", desc))
                elif pname in declared:
                    req.sort.append((pname, declared[pname].type, desc))
                else:
                    problems.append(issue("not-supported", f"cannot sort {resource_type} by '{pname[:64]}'", "_sort"))
            continue
        if name in ("_include", "_revinclude"):
            parts = raw.split(":")
            if len(parts) < 2:
                problems.append(issue("value", f"{name} must be Type:parameter, not '{raw[:64]}'", name))
                continue
            src, pname = parts[0], parts[1]
            target = parts[2] if len(parts) > 2 else None
            src_params = params_for(src)
            if pname not in src_params or src_params[pname].type != "reference":
                problems.append(issue("not-supported", f"{name}: '{src[:40]}:{pname[:40]}' is not a reference search parameter", name))
                continue
            if name == "_include":
                if src != resource_type:
                    problems.append(issue("value", f"_include must start with '{resource_type}:'", name))
                    continue
                req.includes.append((src, pname, target))
            else:
                req.revincludes.append((src, pname))
            continue
        if name == "_id":
            req.criteria.append(Criterion("_id", "id", modifier, _split_values(raw)))
            continue
        if name == "_lastUpdated":
            req.criteria.append(Criterion("_lastUpdated", "date", modifier, [_date_value(name, v) for v in _split_values(raw)]))
            continue
        param: SearchParam | None = declared.get(name)
        if param is None:
            if name in RESULT_PARAMS or name in COMMON_PARAMS:
                continue
            problems.append(issue("not-supported", f"'{name[:64]}' is not a search parameter of {resource_type}", name[:64]))
            continue
        if modifier == "missing":
            req.criteria.append(Criterion(name, param.type, "missing", [raw == "true"]))
            continue
        values = _split_values(raw)
        if any(len(v) > MAX_VALUE_LENGTH for v in values):
            # Longer values match nothing real, and the database refuses them as patterns.
            problems.append(issue("too-long", f"a value of '{name}' is longer than {MAX_VALUE_LENGTH} characters", key[:80]))
            continue
        if param.type == "token":
            if modifier not in (None, "not", "text"):
                problems.append(issue("not-supported", f"modifier ':{modifier[:20]}' is not supported on '{name}'", key[:80]))
                continue
            req.criteria.append(Criterion(name, "token", modifier, [_token(v) for v in values]))
        elif param.type == "reference":
            if modifier not in (None, "identifier") and not (modifier and modifier[:1].isupper()):
                problems.append(issue("not-supported", f"modifier ':{modifier[:20]}' is not supported on '{name}'", key[:80]))
                continue
            if modifier == "identifier":
                req.criteria.append(Criterion(name, "reference", "identifier", [_token(v) for v in values]))
            else:
                refs = [f"{modifier}/{v}" if modifier and "/" not in v else v for v in values]
                req.criteria.append(Criterion(name, "reference", None, refs))
        elif param.type == "date":
            req.criteria.append(Criterion(name, "date", modifier, [_date_value(name, v) for v in values]))
        elif param.type == "string":
            if modifier not in (None, "exact", "contains"):
                problems.append(issue("not-supported", f"modifier ':{modifier[:20]}' is not supported on '{name}'", key[:80]))
                continue
            req.criteria.append(Criterion(name, "string", modifier, values))
        elif param.type == "uri":
            if modifier not in (None, "below", "above"):
                problems.append(issue("not-supported", f"modifier ':{modifier[:20]}' is not supported on '{name}'", key[:80]))
                continue
            req.criteria.append(Criterion(name, "uri", modifier, values))
    if problems:
        raise FHIRError(400, problems)
    return req
