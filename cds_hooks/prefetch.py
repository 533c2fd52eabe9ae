"""Prefetch: the data a hook call brings with it, and fetching what it does not bring.

Data is found in this order (CRD foundation.md): resources in the hook context; prefetch values,
recognised by what they contain rather than by key name (clients rename keys: the IG's own example
sends ``device`` where discovery says ``devices``); then queries against the client's ``fhirServer``
with its ``fhirAuthorization`` bearer token, running the same templates Precert advertises. In the
sandbox, a call with neither prefetch nor ``fhirServer`` runs those templates against Precert's own
sandbox records instead (:class:`LocalFetcher`), so a developer's first hook call needs no EHR.

Templates come in two dialects, both rendered here:
- CRD 2.0.1 / CDS Hooks 2.0: ``{{context.patientId}}``, and ``{{context.draftOrders.ServiceRequest.id}}``
  (a resource type in the path picks those resources out of a Bundle), in ``_include``-style queries;
- CRD 2.2 / CDS Hooks "simpler FHIRPath": ``{{context.draftOrders.entry.resource.ofType(DeviceRequest)
  .code.resolve().id}}``, ``{{%encounter.participant.individual.resolve().ofType(Practitioner).id}}``,
  unions with ``|``; ``%key`` is the result of an earlier prefetch.
A token that evaluates to nothing means the query is not run and the key has no data (``None``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable
from urllib.parse import parse_qsl

import httpx

from server.fhir.errors import FHIRError
from server.fhir.search import parse_search
from server.outbound import OutboundRefused, check_destination
from server.storage import criteria_filter

log = logging.getLogger("precert.crd.prefetch")

_TOKEN = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_STEP = re.compile(r"""\s*(?:([A-Za-z_%][A-Za-z0-9_\-]*)\s*(?:\(\s*((?:'[^']*'|[^)'])*)\s*\))?)\s*""")


class TemplateError(ValueError):
    pass


def _split_top(expr: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quotes and parentheses."""
    out, depth, quote, cur = [], 0, False, []
    for ch in expr:
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == sep and depth == 0 and not quote:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def reference_parts(ref: Any) -> tuple[str, str] | None:
    """('Type', 'id') from 'Type/id', 'https://host/fhir/Type/id[/_history/n]' or a Reference dict."""
    if isinstance(ref, dict):
        ref = ref.get("reference")
    if not isinstance(ref, str):
        return None
    return _parts(ref)


@lru_cache(maxsize=4096)
def _parts(ref: str) -> tuple[str, str] | None:
    if not ref or ref.startswith("#") or ref.startswith("urn:"):
        return None
    ref = ref.split("/_history/")[0].rstrip("/")
    parts = ref.split("/")
    if len(parts) < 2 or not parts[-2][:1].isupper() or not parts[-1]:
        return None
    return parts[-2], parts[-1]


def _children(item: Any, name: str) -> list:
    if isinstance(item, dict):
        if name in item:
            value = item[name]
        elif name == "value":  # value[x]
            value = next((v for k, v in item.items() if k.startswith("value") and k != "value"), None)
        elif name == "medication":  # medication[x]
            value = item.get("medicationReference") or item.get("medicationCodeableConcept")
        elif name == "code" and "codeReference" in item:  # DeviceRequest.code[x]
            value = item["codeReference"]
        else:
            value = None
        if value is None:
            return []
        return list(value) if isinstance(value, list) else [value]
    return []


def evaluate_path(expr: str, context: dict, results: dict) -> list:
    """Evaluate one (simpler FHIRPath or CDS Hooks 2.0) token expression; returns the collection."""
    out: list = []
    for branch in _split_top(expr, "|"):
        out.extend(_evaluate_branch(branch.strip(), context, results))
    return out


def _evaluate_branch(expr: str, context: dict, results: dict) -> list:
    steps = _split_top(expr, ".")
    if not steps or not steps[0]:
        raise TemplateError(f"empty expression '{expr}'")
    head = steps[0].strip()
    if head == "context":
        items: list = [context]
    elif head.startswith("%"):
        value = results.get(head[1:])
        items = [] if value is None else [value]
    else:
        raise TemplateError(f"a token must start with 'context' or '%key', not '{head}'")
    for raw in steps[1:]:
        m = _STEP.fullmatch(raw)
        if not m:
            raise TemplateError(f"cannot read '{raw}' in '{expr}'")
        name, arg = m.group(1), m.group(2)
        if arg is not None or raw.strip().endswith("()"):
            items = _function(name, (arg or "").strip(), items)
        elif name[:1].isupper() and name not in ("Bundle",):
            # CDS Hooks 2.0 style: a resource type in the path selects those resources.
            picked = []
            for it in items:
                if isinstance(it, dict) and it.get("resourceType") == "Bundle":
                    picked += [e.get("resource") for e in it.get("entry") or [] if isinstance(e, dict)
                               and isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") == name]
                elif isinstance(it, dict) and it.get("resourceType") == name:
                    picked.append(it)
                elif isinstance(it, str) and it.startswith(name + "/"):
                    picked.append({"resourceType": name, "id": it.split("/", 1)[1]})
            items = picked
        else:
            items = [child for it in items for child in _children(it, name)]
    return items


def _function(name: str, arg: str, items: list) -> list:
    if name == "resolve":
        out = []
        for it in items:
            parts = reference_parts(it) if isinstance(it, (dict, str)) else None
            if parts:
                out.append({"resourceType": parts[0], "id": parts[1]})
            elif isinstance(it, dict) and it.get("resourceType"):
                out.append(it)
        return out
    if name == "ofType":
        return [it for it in items if isinstance(it, dict) and it.get("resourceType") == arg]
    if name == "extension":
        url = arg.strip("'\"")
        return [e for it in items if isinstance(it, dict) for e in it.get("extension") or []
                if isinstance(e, dict) and e.get("url") == url]
    raise TemplateError(f"function {name}() is not supported in prefetch templates")


def render(template: str, context: dict, results: dict) -> str | None:
    """The query for a template, or None when a token has no value (the key then has no data)."""
    missing = False

    def sub(m: re.Match) -> str:
        nonlocal missing
        values = []
        for v in evaluate_path(m.group(1), context, results):
            if isinstance(v, dict):
                v = v.get("id")
            if isinstance(v, (str, int)) and str(v) and str(v) not in values:
                values.append(str(v))
        if not values:
            missing = True
            return ""
        return ",".join(values)

    query = _TOKEN.sub(sub, template)
    return None if missing else query


def dependencies(template: str) -> set[str]:
    return set(re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)", template))


# ----------------------------------------------------------------------------- the data pool
def resources_in(value: Any) -> list[dict]:
    """The resources a prefetch value carries (a resource, or a Bundle's entries); none for
    null, OperationOutcome or anything else."""
    if not isinstance(value, dict):
        return []
    rtype = value.get("resourceType")
    if rtype == "Bundle":
        out = []
        entries = value.get("entry")
        for e in entries if isinstance(entries, list) else []:
            if isinstance(e, dict) and isinstance(e.get("resource"), dict) and e["resource"].get("resourceType"):
                if e["resource"]["resourceType"] == "OperationOutcome":
                    continue
                out.append(e["resource"])
        return out
    if isinstance(rtype, str) and rtype != "OperationOutcome":
        return [value]
    return []


@dataclass
class DataPool:
    """Every resource known for this call, by 'Type/id' and by type."""

    by_ref: dict[str, dict] = field(default_factory=dict)
    by_type: dict[str, list[dict]] = field(default_factory=dict)

    def add(self, resource: dict) -> None:
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(rtype, str):
            return
        key = f"{rtype}/{rid}" if isinstance(rid, str) else None
        if key and key in self.by_ref:
            return
        if key:
            self.by_ref[key] = resource
        self.by_type.setdefault(rtype, []).append(resource)

    def add_all(self, resources: Iterable[dict]) -> None:
        for r in resources:
            self.add(r)

    def resolve(self, ref: Any) -> dict | None:
        parts = reference_parts(ref)
        return self.by_ref.get(f"{parts[0]}/{parts[1]}") if parts else None

    def of_type(self, rtype: str) -> list[dict]:
        return self.by_type.get(rtype, [])


# ----------------------------------------------------------------------------- fetching
class FetchFailed(Exception):
    """The FHIR server could not give the data (network, timeout, HTTP error, not FHIR)."""


class Queries:
    """Runs a hook's prefetch templates through ``get``, in dependency order, each layer in parallel."""

    async def get(self, query: str) -> Any:  # pragma: no cover - each fetcher has its own
        raise NotImplementedError

    async def run(self, templates: dict[str, str], context: dict, results: dict, wanted: Iterable[str]) -> dict[str, str]:
        """Fill ``results`` for the ``wanted`` keys, in dependency order, each layer in parallel.
        Returns {key: error} for the keys that failed."""
        pending = [k for k in wanted if k in templates and k not in results]
        errors: dict[str, str] = {}
        while pending:
            ready = [k for k in pending if not (dependencies(templates[k]) & set(pending))]
            if not ready:  # a cycle: run the rest as they are
                ready = pending
            queries = {}
            for key in ready:
                try:
                    q = render(templates[key], context, results)
                except TemplateError as exc:
                    errors[key] = str(exc)
                    continue
                if q is None:
                    results[key] = None
                else:
                    queries[key] = q
            outcomes = await asyncio.gather(*(self.get(q) for q in queries.values()), return_exceptions=True)
            for key, outcome in zip(queries, outcomes):
                if isinstance(outcome, FetchFailed):
                    errors[key] = str(outcome)
                elif isinstance(outcome, BaseException):
                    errors[key] = f"{type(outcome).__name__}: {str(outcome)[:120]}"
                else:
                    results[key] = outcome
            pending = [k for k in pending if k not in ready]
        return errors


@dataclass
class Fetcher(Queries):
    """Runs prefetch queries against the client's FHIR server, in parallel, with short timeouts."""

    client: httpx.AsyncClient
    base: str
    token: str | None
    timeout: float = 3.0
    # In production the EHR names the server Precert calls: it must not be the payer's own network
    # (server.outbound), checked at each request, after name resolution.
    guarded: bool = False

    async def get(self, query: str) -> Any:
        url = query if query.startswith(("http://", "https://")) else f"{self.base.rstrip('/')}/{query.lstrip('/')}"
        if self.guarded:
            try:
                await check_destination(url)
            except OutboundRefused as exc:
                raise FetchFailed(f"GET {url[:200]} refused: {exc}") from None
        headers = {"Accept": "application/fhir+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            resp = await asyncio.wait_for(self.client.get(url, headers=headers), self.timeout)
        except (httpx.HTTPError, asyncio.TimeoutError, OSError) as exc:
            raise FetchFailed(f"GET {url[:200]} failed: {type(exc).__name__} {str(exc)[:120]}") from None
        if resp.status_code == 404 and "?" not in query:
            return None
        if resp.status_code >= 400:
            raise FetchFailed(f"GET {url[:200]} returned HTTP {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            raise FetchFailed(f"GET {url[:200]} did not return JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise FetchFailed(f"GET {url[:200]} did not return a FHIR resource")
        if body["resourceType"] == "OperationOutcome":
            raise FetchFailed(f"GET {url[:200]} returned an OperationOutcome")
        return body



@dataclass
class LocalFetcher(Queries):
    """Runs the same prefetch queries against Precert's own records, for the sandbox only: the
    sandbox's members, Coverages, providers and any orders a developer stored through ``/fhir``.

    ``repository`` is a read-only view (``server.fhir.repository.Repository`` with a reading
    principal): this path only ever reads, and reads what the FHIR API would show.
    """

    repository: Any
    max_results: int = 50

    async def get(self, query: str) -> Any:
        path, _, params = query.partition("?")
        path = path.strip("/")
        if "/" in path and not params:
            rtype, rid = path.split("/", 1)
            try:
                stored = await self.repository.read(rtype, rid)
            except Exception as exc:  # an id the store refuses is simply not there
                log.debug("local read %s failed: %s", path[:100], exc)
                return None
            return None if stored is None or stored.deleted else stored.resource
        try:
            req = parse_search(path, parse_qsl(params, keep_blank_values=True), default_count=self.max_results,
                               max_count=self.max_results)
        except FHIRError as exc:
            raise FetchFailed(f"{query[:200]} cannot be searched here: {exc}") from None
        found, _ = await self.repository.search(path, criteria_filter(req.criteria) or None, count=self.max_results,
                                                with_total=False)
        return {"resourceType": "Bundle", "type": "searchset", "total": len(found),
                "entry": [{"resource": r.resource} for r in found]}
