"""FHIR R4 profile validation from the StructureDefinition snapshots shipped in ``fhir-packages/``.

The packages load once, on first use, and each profile compiles once into a tree of
:class:`Node` (one per snapshot element, slices hanging off the sliced element). Validation walks the
JSON beside that tree: cardinality, types and choice types, fixed and pattern values, slicing, bindings
against the local ValueSets and CodeSystems, extensions and their contexts, reference targets inside a
Bundle, and the FHIRPath invariants (fhirpathpy). Every issue carries a FHIRPath location and a key: the
invariant's own key (``bdl-7``), or one of :data:`KEYS` for the structural checks.
"""

from __future__ import annotations

import json
import re
import tarfile
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import fhirpathpy
import orjson
from cachetools import LRUCache
from fhirpathpy import apply_parsed_path as _fhirpath_apply, parse as _fhirpath_parse
from fhirpathpy.engine.nodes import ResourceNode as _FhirpathNode
from fhirpathpy.models import models as _fhirpath_models

from server.fhir.invariants import COMPILED as COMPILED_INVARIANTS

PACKAGES_DIR = Path(__file__).resolve().parents[2] / "fhir-packages"
KEY_SYSTEM = "urn:precert:validation-key"
KEYS = ("cardinality", "type", "unknown-element", "fixed", "pattern", "slice-closed", "slice-order",
        "slice-cardinality", "binding", "extension-unknown", "extension-context", "reference-target",
        "profile-unknown", "invariant-error", "max-length", "min-value", "max-value")
_R4_MODEL = _fhirpath_models["r4"]
PRIMITIVES = {
    "boolean": (bool,), "integer": (int,), "unsignedInt": (int,), "positiveInt": (int,), "decimal": (int, float),
    "string": (str,), "code": (str,), "id": (str,), "uri": (str,), "url": (str,), "canonical": (str,),
    "oid": (str,), "uuid": (str,), "markdown": (str,), "base64Binary": (str,), "date": (str,),
    "dateTime": (str,), "time": (str,), "instant": (str,), "xhtml": (str,),
}
PRIMITIVE_RE = {
    "id": re.compile(r"^[A-Za-z0-9\-.]{1,64}$"),
    "code": re.compile(r"^[^\s]+( [^\s]+)*$"),
    "date": re.compile(r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$"),
    "dateTime": re.compile(r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01])(T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)"
                           r"(\.\d+)?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00)))?)?)?$"),
    "instant": re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)"
                          r"(\.\d+)?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00))$"),
    "time": re.compile(r"^([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?$"),
    "uri": re.compile(r"^\S*$"), "url": re.compile(r"^\S*$"), "canonical": re.compile(r"^\S*$"),
    "oid": re.compile(r"^urn:oid:[0-2](\.(0|[1-9]\d*))+$"),
    "uuid": re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
}
# Base invariants not evaluated by FHIRPath: on every element they would dominate the cost. ele-1 is
# the walk's own check (the end of _Run.element); ext-1 is not checked (fhirpathpy, given an Extension
# without its element path, cannot see value[x] and would fail every simple extension). Matched on
# key and expression text, so a profile that redefines the key with other text has it evaluated.
NATIVE_INVARIANTS = {
    ("ele-1", "hasValue() or (children().count() > id.count())"),
    ("ele-1", "hasValue() or (children().count() > id.count()) or $this is Parameters"),
    ("ext-1", "extension.exists() != value.exists()"),
}


class UnknownProfile(LookupError):
    pass


class TooCostly(ValueError):
    """A resource too large or too deeply nested to validate in bounded time."""


# Bounds on the work one validation may do: the cost grows with the number of JSON values, and
# nesting deeper than any FHIR definition allows would only exhaust the stack.
MAX_VALUES = 50_000
MAX_DEPTH = 64


def check_cost(resource: Any) -> None:
    """Raise :class:`TooCostly` for a resource beyond :data:`MAX_VALUES` or :data:`MAX_DEPTH`."""
    count = 0
    stack = [(resource, 0)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise TooCostly(f"the resource has more than {MAX_VALUES} values; validate it in parts")
        if depth > MAX_DEPTH:
            raise TooCostly(f"the resource nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


# --------------------------------------------------------------------------------------------- packages
class Registry:
    """Conformance resources of every shipped package, by canonical URL (and ``url|version``)."""

    def __init__(self, directory: Path = PACKAGES_DIR):
        self.resources: dict[str, list[tuple[str, dict]]] = {}
        self.examples: list[tuple[str, str, dict]] = []
        for tgz in sorted(directory.glob("*.tgz")):
            self._load(tgz)

    def _load(self, tgz: Path) -> None:
        package = tgz.name.removesuffix(".tgz")
        with tarfile.open(tgz) as tar:
            for member in tar.getmembers():
                if not member.isfile() or not member.name.endswith(".json") or member.name.endswith("package.json"):
                    continue
                try:
                    res = json.load(tar.extractfile(member))
                except ValueError:
                    continue
                if not isinstance(res, dict):
                    continue
                if "/example/" in member.name:
                    self.examples.append((package, member.name, res))
                    continue
                url = res.get("url")
                if res.get("resourceType") in ("StructureDefinition", "ValueSet", "CodeSystem") and url:
                    self.resources.setdefault(url, []).append((package, res))
                    if res.get("version"):
                        self.resources.setdefault(f"{url}|{res['version']}", []).append((package, res))

    def add(self, resource: dict, package: str = "local") -> None:
        """Make one more StructureDefinition, ValueSet or CodeSystem known (Precert's own profiles)."""
        self.resources.setdefault(resource["url"], []).append((package, resource))
        _profiles.clear()
        _child_indexes.clear()
        _disc_nodes.clear()
        expand.cache_clear()
        _codesystem_codes.cache_clear()

    def get(self, url: str, prefer: str | None = None) -> dict | None:
        found = self.resources.get(url)
        if not found:
            return None
        if prefer:
            for package, res in found:
                if package == prefer:
                    return res
        return found[-1][1]

    def structure(self, url_or_type: str, prefer: str | None = None) -> dict | None:
        url = url_or_type if "/" in url_or_type else f"http://hl7.org/fhir/StructureDefinition/{url_or_type}"
        res = self.get(url, prefer) or (self.get(url.split("|")[0], prefer) if "|" in url else None)
        return res if res and res.get("resourceType") == "StructureDefinition" and res.get("snapshot") else None


_lock = threading.Lock()
_registry: Registry | None = None


def registry() -> Registry:
    global _registry
    if _registry is not None:  # the validator asks on every extension and reference: no lock once loaded
        return _registry
    with _lock:
        if _registry is None:
            _registry = Registry()
        return _registry


# --------------------------------------------------------------------------------------------- compile
@dataclass
class Node:
    path: str
    name: str
    min: int = 0
    max: str = "*"
    types: list[dict] = field(default_factory=list)
    fixed: Any = None
    pattern: Any = None
    binding: dict | None = None
    constraints: list[tuple[str, str, str, Any]] = field(default_factory=list)
    children: dict[str, "Node"] = field(default_factory=dict)
    slicing: dict | None = None
    slices: list["Node"] = field(default_factory=list)
    slice_name: str | None = None
    choice: bool = False
    content_ref: str | None = None
    is_array: bool = True
    max_length: int | None = None
    min_value: Any = None
    max_value: Any = None


def _value_of(el: dict, prefix: str) -> Any:
    for key, value in el.items():
        if key.startswith(prefix) and key != prefix:
            return value
    return None


def _compile_constraint(expr):
    try:
        return fhirpathpy.compile(expr, _R4_MODEL, {"traceFn": lambda *_: None})
    except Exception:
        return None


def _compile_at(expr: str, base: str):
    """``expr`` parsed once, evaluated on an element known to be at ``base`` (``Claim.item``), so that
    FHIRPath sees its type and resolves choice elements (``value`` for ``valueString``).
    (fhirpathpy's ``compile`` takes no path; its ``evaluate`` does, but parses on every call.)"""
    try:
        parsed = _fhirpath_parse(expr)
    except Exception:
        return None
    options = {"traceFn": lambda *_: None}

    def run(value, context):
        return _fhirpath_apply(_FhirpathNode.create_node(value, base), parsed, context or {}, _R4_MODEL, options)

    return run


_UNEVALUABLE: set[str] = set()


@lru_cache(maxsize=8192)
def _compiled_expr(expr: str, base: str = ""):
    """Compiled once per (expression, element path): an invariant of a nested element is evaluated
    on that element, typed by its path."""
    return _compile_at(expr, base) if base else _compile_constraint(expr)


_SYSTEM_TYPES = {"String": "string", "Boolean": "boolean", "Integer": "integer", "Decimal": "decimal",
                 "Date": "date", "DateTime": "dateTime", "Time": "time"}


def _types(el: dict) -> list[dict]:
    out = []
    for t in el.get("type", []):
        code = t.get("code", "")
        if code.startswith("http://hl7.org/fhirpath/System."):
            t = {**t, "code": _SYSTEM_TYPES.get(code.rsplit(".", 1)[1], "string")}
            for ext in el["type"][0].get("extension", []):
                if ext.get("url", "").endswith("structuredefinition-fhir-type") and ext.get("valueUrl"):
                    t["code"] = ext["valueUrl"]
        out.append(t)
    return out


@dataclass
class Profile:
    url: str
    type: str
    root: Node
    package: str | None
    by_id: dict[str, Node]


_profiles: dict[tuple[str, str | None], Profile] = {}
_declared: dict[tuple[str, str | None], frozenset[str]] = {}


def _declared_extensions(profile: Profile) -> frozenset[tuple[str, str]]:
    """The (element path, unversioned extension URL) pairs a profile slices in."""
    key = (profile.url, profile.package)
    found = _declared.get(key)
    if found is None:
        found = frozenset((n.path.rsplit(".", 1)[0], p.split("|")[0]) for n in profile.by_id.values() for t in n.types
                          if t.get("code") == "Extension" for p in t.get("profile", []))
        _declared[key] = found
    return found


_placed_anywhere: list[frozenset[tuple[str, str]]] = []


def _placed_by_some_profile(here: tuple[str, str]) -> bool:
    """Whether any shipped profile slices this extension in at this element path. PAS 2.2.1 declares
    infoChanged for ``Claim.item`` only, yet its own Claim update profile places it on
    ``Claim.supportingInfo``; a placement the IG itself makes is a warning, not an error."""
    if not _placed_anywhere:
        found = set()
        for entries in registry().resources.values():
            for _pkg, res in entries:
                if res.get("resourceType") != "StructureDefinition" or res.get("derivation") != "constraint":
                    continue
                for el in (res.get("snapshot") or {}).get("element", []):
                    for t in el.get("type") or []:
                        if t.get("code") == "Extension":
                            for prof in t.get("profile") or []:
                                found.add((el["path"].rsplit(".", 1)[0], prof.split("|")[0]))
        _placed_anywhere.append(frozenset(found))
    return here in _placed_anywhere[0]


def compile_profile(url_or_type: str, prefer: str | None = None) -> Profile:
    key = (url_or_type, prefer)
    if key in _profiles:
        return _profiles[key]
    sd = registry().structure(url_or_type, prefer)
    if sd is None:
        raise UnknownProfile(url_or_type)
    by_id: dict[str, Node] = {}
    root: Node | None = None
    for el in sd["snapshot"]["element"]:
        eid = el.get("id") or el["path"]
        last = eid.rsplit(".", 1)[-1]
        name, _, slice_name = last.partition(":")
        node = Node(
            path=el["path"], name=name, min=el.get("min", 0), max=el.get("max", "*"), types=_types(el),
            fixed=_value_of(el, "fixed"), pattern=_value_of(el, "pattern"), binding=el.get("binding"),
            slicing=el.get("slicing"), slice_name=slice_name or None, choice=name.endswith("[x]"),
            content_ref=(el.get("contentReference") or "").split("#")[-1] or None,
            is_array=(el.get("base") or {}).get("max", el.get("max", "*")) not in ("0", "1"),
            max_length=el.get("maxLength") if isinstance(el.get("maxLength"), int) else None,
            min_value=_value_of(el, "minValue"), max_value=_value_of(el, "maxValue"),
        )
        for c in el.get("constraint", []):
            if (c.get("key"), c.get("expression")) in NATIVE_INVARIANTS or not c.get("expression"):
                continue
            node.constraints.append((c["key"], c.get("severity", "error"), c["expression"], c.get("human", "")))
        by_id[eid] = node
        if root is None:
            root = node
            continue
        parent_id = eid.rsplit(".", 1)[0] if not slice_name else None
        if slice_name:
            base_id = eid[: -(len(slice_name) + 1)]
            base = by_id.get(base_id)
            if base is not None:
                base.slices.append(node)
                continue
            parent_id = eid.rsplit(".", 1)[0]
        parent = by_id.get(parent_id)
        if parent is None:
            continue
        key_name = name[:-3] if node.choice else name
        parent.children.setdefault(key_name, node)
    profile = Profile(url=sd["url"], type=sd["type"], root=root, package=prefer, by_id=by_id)
    _profiles[key] = profile
    return profile


# --------------------------------------------------------------------------------------------- terminology
@lru_cache(maxsize=2048)
def _codesystem_codes(url: str) -> frozenset | None:
    cs = registry().get(url)
    if not cs or cs.get("resourceType") != "CodeSystem" or cs.get("content") not in (None, "complete"):
        return None
    codes: set[str] = set()

    def walk(concepts):
        for c in concepts:
            codes.add(c["code"])
            walk(c.get("concept", []))
    walk(cs.get("concept", []))
    return frozenset(codes)


@lru_cache(maxsize=2048)
def expand(valueset_url: str) -> frozenset | None:
    """The (system, code) pairs of a ValueSet, or ``None`` when it cannot be expanded locally."""
    url = valueset_url.split("|")[0]
    vs = registry().get(url)
    if not vs or vs.get("resourceType") != "ValueSet":
        return None
    if vs.get("expansion", {}).get("contains") and not vs.get("compose"):
        return frozenset((c.get("system"), c.get("code")) for c in vs["expansion"]["contains"])
    compose = vs.get("compose") or {}
    if compose.get("exclude"):
        return None
    out: set[tuple[str, str]] = set()
    for inc in compose.get("include", []):
        if inc.get("filter"):
            return None
        system = inc.get("system")
        if inc.get("concept"):
            out.update((system, c["code"]) for c in inc["concept"])
        elif system:
            codes = _codesystem_codes(system)
            if codes is None:
                return None
            out.update((system, c) for c in codes)
        for nested in inc.get("valueSet", []):
            sub = expand(nested)
            if sub is None:
                return None
            out |= sub
    return frozenset(out)


# --------------------------------------------------------------------------------------------- validate
@lru_cache(maxsize=64)
def _primitive_max_length(ptype: str) -> int | None:
    """The maxLength a primitive type's own definition sets on its value (string: 1 MB)."""
    try:
        value = compile_profile(ptype).root.children.get("value")
    except UnknownProfile:
        return None
    return value.max_length if value is not None else None


def _issue(severity: str, code: str, key: str, location: str, text: str) -> dict:
    return {"severity": severity, "code": code, "details": {"coding": [{"system": KEY_SYSTEM, "code": key}]},
            "diagnostics": text, "expression": [location]}


def _matches_pattern(value: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and _matches_pattern(value[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches_pattern(v, p) for v in value) for p in pattern)
    return value == pattern


def claimed_profiles(resource: Any) -> list[str]:
    """The canonical URLs in ``meta.profile``; other values there are the cardinality and type checks' to report."""
    meta = resource.get("meta") if isinstance(resource, dict) else None
    found = meta.get("profile") if isinstance(meta, dict) else None
    return [p for p in found if isinstance(p, str)] if isinstance(found, list) else []


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


_disc_nodes: dict[tuple[int, str], tuple[Node, Node | None]] = {}
_child_indexes: dict[int, tuple[dict, dict[str, int], tuple[str, ...], tuple[str, ...]]] = {}


def _child_index(children: dict[str, Node], cache: bool) -> tuple[dict, dict[str, int], tuple[str, ...], tuple[str, ...]]:
    """For one element's children: each name's position, the names checked even when absent (a
    minimum, or a slice with one), and the choice names (matched by prefix)."""
    hit = _child_indexes.get(id(children))
    if hit is not None and hit[0] is children:
        return hit
    order = {name: i for i, name in enumerate(children)}
    always = tuple(n for n, c in children.items() if c.min or any(s.min for s in c.slices))
    choices = tuple(n for n, c in children.items() if c.choice)
    found = (children, order, always, choices)
    if cache:  # the dict belongs to a compiled profile (held here, so its id stays its own)
        _child_indexes[id(children)] = found
    return found


def _children_to_visit(children: dict[str, Node], value: dict, cache: bool = True) -> list[str]:
    """The children of an element that can report anything, in definition order: those present in
    ``value`` and those required. An absent optional child has nothing to check; skipping them makes
    the walk follow the instance, not the (much larger) definition."""
    _, order, always, choices = _child_index(children, cache)
    visit = set(always)
    for k in value:
        child = children.get(k)
        if child is not None and not child.choice:
            visit.add(k)
    for c in choices:
        if c not in visit and any(k.startswith(c) and k[len(c):][:1].isupper() for k in value):
            visit.add(c)
    return sorted(visit, key=order.__getitem__)


# Issues of one resource against one profile, by the resource's JSON, across validations: an EHR or
# a provider's system sends the same Organization, Practitioner, Location and Patient request after
# request. Only walks that read nothing outside the resource are kept (no reference resolved in the
# Bundle, no invariant over %rootResource or resolve()), so the issues depend on its JSON alone.
_SEEN: LRUCache = LRUCache(maxsize=4096)
_SEEN_LOCK = threading.Lock()
SEEN_MAX_BYTES = 64 * 1024


def _readdressed(issues: list[dict], was: str, now: str) -> list[dict]:
    if was == now:
        return [dict(i) for i in issues]
    out = []
    for i in issues:
        expr = i["expression"][0]
        if expr == was or expr.startswith(was + ".") or expr.startswith(was + "["):
            expr = now + expr[len(was):]
        out.append({**i, "expression": [expr]})
    return out


class _Run:
    def __init__(self, root: dict, prefer: str | None, parent: "_Run | None" = None, *, targets: bool = True):
        self.root = root
        self.prefer = prefer
        self.issues: list[dict] = []
        self.ext_owner: list[str] = []
        # Whether references are checked against their target profiles. A run that asks whether a
        # referenced resource conforms checks that resource's own content only: its references are
        # checked where it is validated itself, so one fault is reported once, where it is, and not
        # again at every resource that leads to it.
        self.check_targets = targets and (parent.check_targets if parent is not None else True)
        if parent is not None:
            # A nested run (one candidate profile) shares the Bundle index and the caches.
            self.bundle_index, self.conforms, self.invariants = parent.bundle_index, parent.conforms, parent.invariants
            self.walked, self.outside = parent.walked, parent.outside
            return
        self.bundle_index: dict[str, dict] = {}
        self.conforms: dict[tuple[int, str], bool] = {}
        self.invariants: dict[tuple[str, int], Any] = {}
        # One resource against one profile gives the same issues wherever the walk meets it (a
        # Bundle entry is met by the Bundle's profile, by its own meta.profile, by slice matching and
        # by the references that point at it): it is walked once, and its issues re-addressed.
        self.walked: dict[tuple[int, int, bool], tuple[str, list[dict]]] = {}
        # How many times a walk read something outside the resource walked (see _SEEN).
        self.outside = [0]
        if root.get("resourceType") == "Bundle":
            entries = root.get("entry")
            for entry in entries if isinstance(entries, list) else []:
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict):
                    if isinstance(entry.get("fullUrl"), str):
                        self.bundle_index[entry["fullUrl"]] = res
                    if res.get("resourceType") and res.get("id"):
                        self.bundle_index[f"{res['resourceType']}/{res['id']}"] = res

    def add(self, *args) -> None:
        self.issues.append(_issue(*args))

    # one profile against one resource
    def resource(self, res: dict, profile: Profile, loc: str, container: dict) -> None:
        rtype = res.get("resourceType")
        if rtype != profile.type:
            self.add("error", "structure", "type", loc, f"expected a {profile.type} resource for {profile.url}, got {rtype}")
            return
        key = (id(res), id(profile), self.check_targets)  # both alive for the whole run
        hit = self.walked.get(key)
        if hit is not None:
            self.issues.extend(_readdressed(hit[1], hit[0], loc))
            return
        try:
            content = orjson.dumps(res)
        except (orjson.JSONEncodeError, TypeError):  # e.g. an integer past 64 bits: walked, not kept
            content = b""
        seen_key = (content, profile.url, profile.package, self.check_targets, self.prefer) if 0 < len(content) <= SEEN_MAX_BYTES else None
        if seen_key is not None:
            with _SEEN_LOCK:
                seen = _SEEN.get(seen_key)
            if seen is not None and seen[0] is profile:  # the same compiled profile, not another of that name
                self.walked[key] = seen[1]
                self.issues.extend(_readdressed(seen[1][1], seen[1][0], loc))
                return
        start, outside = len(self.issues), self.outside[0]
        self.element(res, profile.root, profile, loc, res, rtype)
        self.walked[key] = (loc, [dict(i) for i in self.issues[start:]])
        if seen_key is not None and self.outside[0] == outside:
            with _SEEN_LOCK:
                _SEEN[seen_key] = (profile, self.walked[key])

    def element(self, value: Any, node: Node, profile: Profile, loc: str, resource: dict, type_path: str,
                primitive_type: str | None = None, owner_type: str | None = None) -> None:
        if node.content_ref:
            target = profile.by_id.get(node.content_ref)
            if target is not None:
                node = Node(path=target.path, name=node.name, min=node.min, max=node.max, types=target.types,
                            children=target.children, constraints=node.constraints + target.constraints,
                            binding=target.binding, slicing=node.slicing, slices=node.slices)
        if node.fixed is not None and value != node.fixed:
            self.add("error", "value", "fixed", loc, f"value must be exactly {json.dumps(node.fixed)}")
        if node.pattern is not None and not _matches_pattern(value, node.pattern):
            self.add("error", "value", "pattern", loc, f"value must match pattern {json.dumps(node.pattern)}")
        if node.binding and primitive_type in (None, "code", "string", "uri") and node.binding.get("valueSet"):
            self.binding(value, node, loc, primitive_type)
        for key, severity, expr, human in node.constraints:
            fn = _compiled_expr(expr, node.path if "." in node.path else "")
            if fn is None or expr in _UNEVALUABLE:
                continue
            if "%rootResource" in expr or "resolve()" in expr:
                self.outside[0] += 1
            native = COMPILED_INVARIANTS.get(expr)
            if native is not None:
                ok = native(value, resource, self.root)
                if ok is not None:  # None: input only FHIRPath can judge
                    if not ok:
                        self.add("error" if severity == "error" else "warning", "invariant", key, loc, f"{key}: {human}")
                    continue
            ck = (expr, id(value))
            if ck in self.invariants:
                result = self.invariants[ck]
            else:
                try:
                    result = fn(value, {"resource": resource, "rootResource": self.root})
                except Exception as exc:
                    if str(exc).startswith("Not implemented"):
                        _UNEVALUABLE.add(expr)  # a function fhirpathpy lacks (htmlChecks): never evaluated again
                    result = None
                self.invariants[ck] = result
            if result is None:
                continue
            if result == [False]:
                self.add("error" if severity == "error" else "warning", "invariant", key, loc, f"{key}: {human}")
        if primitive_type is not None or not isinstance(value, dict):
            return
        children = node.children
        merged = False
        if not children:
            children = self._type_children(node, owner_type)
        elif len(node.types) > 1:
            # A choice element constrained in a profile lists only the children its types share (id,
            # extension); the chosen type's own elements come from that type.
            children = {**self._type_children(node, owner_type), **children}
            merged = True
        seen_names: set[str] = set()
        for cname in _children_to_visit(children, value, cache=not merged):
            child = children[cname]
            items: list[tuple[str, Any, str | None]]
            if child.choice:
                present = self._present(value, cname, child)
                seen_names.update(k for k, _ in present)
                items = []
                for key, raw in present:
                    ptype = self._choice_type(key, cname, child)
                    if child.types and ptype not in [t["code"] for t in child.types] and \
                            not any(t["code"][0].lower() + t["code"][1:] == ptype for t in child.types):
                        self.add("error", "structure", "type", f"{loc}.{key}", f"{key} is not an allowed type for {cname}[x]")
                    items.extend((key, item, ptype) for item in _as_list(raw))
            elif cname in value:  # the common case, inline: one name, one type
                raw = value[cname]
                present = [(cname, raw)]
                seen_names.add(cname)
                ptype = child.types[0]["code"] if len(child.types) == 1 else None
                items = [(cname, item, ptype) for item in raw] if isinstance(raw, list) else [(cname, raw, ptype)]
            else:
                present, items = [], []
            n = len(items)
            if n < child.min:
                self.add("error", "required", "cardinality", f"{loc}.{cname}",
                         f"{cname}: minimum required = {child.min}, found {n}")
            if child.max != "*" and n > int(child.max):
                self.add("error", "structure", "cardinality", f"{loc}.{cname}",
                         f"{cname}: maximum allowed = {child.max}, found {n}")
            for key, raw in present:
                if isinstance(raw, list) and not child.is_array:
                    self.add("error", "structure", "type", f"{loc}.{key}", f"{key} must not be an array")
                if not isinstance(raw, list) and child.is_array:
                    self.add("error", "structure", "type", f"{loc}.{key}", f"{key} must be an array")
            self._items(items, child, profile, loc, resource, type_path, cname, owner_type)
        extras = [k for k in value if k not in seen_names and k not in ("resourceType",) and not k.startswith("_")
                  and k != "fhir_comments"]
        for k in extras:
            self.add("error", "structure", "unknown-element", f"{loc}.{k}", f"unknown element {k!r}")
        if not any(k for k in value if k not in ("id",)) and "resourceType" not in value:
            self.add("error", "invariant", "ele-1", loc, "ele-1: All FHIR elements must have a @value or children")

    def _present(self, value: dict, cname: str, child: Node) -> list[tuple[str, Any]]:
        if child.choice:
            return [(k, v) for k, v in value.items() if k.startswith(cname) and k[len(cname):][:1].isupper()]
        if cname in value:
            return [(cname, value[cname])]
        if f"_{cname}" in value:
            return []
        return []

    @staticmethod
    def _choice_type(key: str, cname: str, child: Node) -> str | None:
        if child.choice:
            suffix = key[len(cname):]
            for t in child.types:
                if t["code"].lower() == suffix.lower():
                    return t["code"]
            return suffix
        return child.types[0]["code"] if len(child.types) == 1 else None

    def _type_children(self, node: Node, owner_type: str | None) -> dict[str, Node]:
        if owner_type and owner_type in {t["code"] for t in node.types}:
            code = owner_type
        elif len(node.types) == 1:
            code = node.types[0]["code"]
        else:
            return {}
        if code in PRIMITIVES or code in ("Resource", "DomainResource", "BackboneElement", "Element"):
            return {}
        try:
            return compile_profile(code).root.children
        except UnknownProfile:
            return {}

    def _items(self, items, child: Node, profile: Profile, loc: str, resource: dict, type_path: str, cname: str,
               owner_type: str | None = None):
        if not items and not any(s.min for s in child.slices):
            return
        assigned: dict[int, Node] = {}
        if child.slices and child.slicing:
            self._slice(items, child, profile, loc, assigned, cname)
        elif child.slices and cname in ("extension", "modifierExtension"):
            self._slice(items, child, profile, loc, assigned, cname)
        for i, (key, item, ptype) in enumerate(items):
            iloc = f"{loc}.{key}[{i}]" if child.is_array else f"{loc}.{key}"
            node = assigned.get(i, child)
            self._one(item, node, profile, iloc, resource, child.path, ptype, owner_type, parent_path=type_path)

    def _one(self, item, node: Node, profile: Profile, loc: str, resource: dict, type_path: str, ptype,
             owner_type: str | None = None, parent_path: str = ""):
        if ptype in PRIMITIVES:
            if not isinstance(item, PRIMITIVES[ptype]) or (ptype != "boolean" and isinstance(item, bool)):
                self.add("error", "structure", "type", loc, f"expected a {ptype}")
                return
            rx = PRIMITIVE_RE.get(ptype)
            if rx and isinstance(item, str) and not rx.match(item):
                self.add("error", "value", "type", loc, f"{item!r} is not a valid {ptype}")
            if ptype in ("positiveInt",) and item < 1 or ptype == "unsignedInt" and item < 0:
                self.add("error", "value", "type", loc, f"{item} is not a valid {ptype}")
            self._limits(item, node, ptype, loc)
            # Most primitives carry nothing more to check: no call for them (most elements are primitives).
            if node.content_ref or node.fixed is not None or node.pattern is not None or node.binding or node.constraints:
                self.element(item, node, profile, loc, resource, type_path, primitive_type=ptype)
            return
        if not isinstance(item, dict):
            self.add("error", "structure", "type", loc, f"expected an object ({ptype or 'element'})")
            return
        if "resourceType" in item or ptype in ("Resource", "DomainResource"):
            self._contained(item, node, loc)
            return
        url_node = node.children.get("url") if ptype == "Extension" else None
        if ptype == "Extension" and (url_node is None or not url_node.fixed):
            self._extension(item, node, profile, loc, resource, parent_path, owner_type)
            return
        if ptype == "Reference":
            self._reference(item, node, loc)
        if ptype == "Quantity" and (node.min_value is not None or node.max_value is not None):
            self._limits(item.get("value"), node, "decimal", f"{loc}.value", quantity=item)
        if node.types and len(node.types) == 1 and node.types[0].get("profile") and not node.children \
                and ptype not in ("Extension",):
            for purl in node.types[0]["profile"]:
                try:
                    sub = compile_profile(purl, self.prefer)
                except UnknownProfile:
                    self.add("warning", "not-supported", "profile-unknown", loc, f"profile {purl} is not known")
                    continue
                self.element(item, sub.root, sub, loc, resource, type_path, owner_type=sub.type)
                return
        self.element(item, node, profile, loc, resource, type_path, owner_type=ptype)

    def _limits(self, item: Any, node: Node, ptype: str, loc: str, quantity: dict | None = None) -> None:
        """maxLength, and minValue/maxValue: numbers by value; dates, times and instants by their
        ISO 8601 text over the precision both have (time zones are not normalized); a Quantity
        bound by its value when the units agree (or either has none)."""
        limit = node.max_length or _primitive_max_length(ptype)
        if limit and isinstance(item, str) and len(item) > limit:
            self.add("error", "value", "max-length", loc, f"{len(item)} characters exceed the maximum length of {limit}")
        for bound, key in ((node.min_value, "min-value"), (node.max_value, "max-value")):
            if bound is None or isinstance(item, bool) or item is None:
                continue
            if isinstance(bound, dict):  # a Quantity bound
                unit = lambda q: q.get("code") or q.get("unit")  # noqa: E731
                if quantity is None or (unit(bound) and unit(quantity) and unit(bound) != unit(quantity)):
                    continue
                bound = bound.get("value")
            if isinstance(bound, (int, float)) and isinstance(item, (int, float)):
                below, above = item < bound, item > bound
            elif isinstance(bound, str) and isinstance(item, str):
                n = min(len(bound), len(item))
                below, above = item[:n] < bound[:n], item[:n] > bound[:n]
            else:
                continue
            if key == "min-value" and below:
                self.add("error", "value", key, loc, f"{item} is below the minimum value {bound}")
            elif key == "max-value" and above:
                self.add("error", "value", key, loc, f"{item} is above the maximum value {bound}")

    def _contained(self, item: dict, node: Node, loc: str) -> None:
        rtype = item.get("resourceType")
        if not isinstance(rtype, str):
            self.add("error", "structure", "type", loc, "a resource needs a resourceType")
            return
        urls = [p for t in node.types for p in t.get("profile", [])]
        claimed: list[Profile] = []
        for purl in claimed_profiles(item):
            if purl in urls:
                continue
            try:
                claimed.append(compile_profile(purl, self.prefer))
            except UnknownProfile:
                self.add("warning", "not-supported", "profile-unknown", f"{loc}.meta.profile", f"profile {purl} is not known")
        if not urls and not any(p.type == rtype for p in claimed):
            urls = [rtype]  # no profile of its own, whose rules would include its base type's
        # Several profiles on one type mean "any of these" (ElementDefinition.type.profile).
        best: list[dict] | None = None
        for purl in urls:
            try:
                prof = compile_profile(purl, self.prefer)
            except UnknownProfile:
                self.add("warning", "not-supported", "profile-unknown", loc, f"profile {purl} is not known")
                if registry().structure(rtype) is None:
                    self.add("error", "structure", "type", loc, f"unknown resource type {rtype}")
                    return
                prof = compile_profile(rtype)
            sub = _Run(self.root, self.prefer, self)
            sub.resource(item, prof, loc, item)
            n = sum(1 for i in sub.issues if i["severity"] == "error")
            if best is None or n < sum(1 for i in best if i["severity"] == "error"):
                best = sub.issues
            if n == 0:
                break
        self.issues.extend(best or [])
        for prof in claimed:
            self.resource(item, prof, loc, item)

    def _extension(self, item: dict, node: Node, profile: Profile, loc: str, resource: dict, type_path: str,
                   owner_type: str | None = None):
        url = item.get("url")
        ext_sd = registry().structure(url, self.prefer) if isinstance(url, str) else None
        if ext_sd is None:
            self.add("warning", "not-supported", "extension-unknown", loc, f"extension {url} is not known")
            self.element(item, compile_profile("Extension").root, compile_profile("Extension"), loc, resource, "Extension")
            return
        ext_prof = compile_profile(url, self.prefer)
        contexts = ext_sd.get("context", [])
        owner = type_path
        if owner == "Extension" and self.ext_owner:
            owner = self.ext_owner[-1]
        # A profile that slices the extension in by name has placed it there itself: some published
        # IGs (PAS's communicatedDiagnosis on ClaimResponse.item) declare contexts their own profiles
        # contradict, and the profile is the more specific statement.
        here = (owner, url.split("|")[0])
        # Inside another extension, that extension's own definition slicing this one in places it.
        nested = owner.endswith(".extension") and ("Extension", here[1]) in _declared_extensions(profile)
        declared = nested or here in _declared_extensions(profile) or self._claimed_declares(resource, here)
        if contexts and not declared and not self._context_ok(contexts, owner, owner_type):
            placed = _placed_by_some_profile(here)
            self.add("warning" if placed else "error", "structure", "extension-context", loc,
                     f"extension {url} is not allowed on {owner} (contexts: {', '.join(c.get('expression', '') for c in contexts)})"
                     + ("; another profile of the IG places it here" if placed else ""))
        self.ext_owner.append(f"{owner}.extension")
        try:
            self.element(item, ext_prof.root, ext_prof, loc, resource, "Extension", owner_type="Extension")
        finally:
            self.ext_owner.pop()

    def _claimed_declares(self, resource: dict, here: tuple[str, str]) -> bool:
        """Whether a profile the resource claims (meta.profile) slices this extension in."""
        for purl in claimed_profiles(resource):
            try:
                if here in _declared_extensions(compile_profile(purl, self.prefer)):
                    return True
            except UnknownProfile:
                continue
        return False

    @staticmethod
    def _context_ok(contexts: list[dict], owner: str, owner_type: str | None) -> bool:
        parts = owner.split(".")
        candidates = {owner, parts[0], "Element", "Resource", "DomainResource", "Base"}
        if owner_type:
            candidates.add(owner_type)
        for i in range(1, len(parts) + 1):
            candidates.add(".".join(parts[:i]))
        for c in contexts:
            expr = c.get("expression", "")
            if c.get("type") in ("fhirpath", "extension"):
                return True
            if expr in candidates or owner.endswith("." + expr):
                return True
            # "Dosage.timing" also holds where a profile unfolded a Dosage inside a resource.
            head, _, rest = expr.partition(".")
            if rest and head[:1].isupper() and registry().structure(head) is not None \
                    and registry().structure(head).get("kind") == "complex-type" and owner.endswith("." + rest):
                return True
        return False

    def _reference(self, item: dict, node: Node, loc: str) -> None:
        if not self.check_targets:
            return
        targets = [p for t in node.types if t["code"] == "Reference" for p in t.get("targetProfile", [])]
        ref = item.get("reference")
        if not targets or not isinstance(ref, str):
            return
        self.outside[0] += 1  # whether and what it resolves to in this Bundle decides the check
        if ref not in self.bundle_index:
            return
        target = self.bundle_index[ref]
        rtype = target.get("resourceType")
        ok_types, profiled = set(), []
        for t in targets:
            if t.startswith("http://hl7.org/fhir/StructureDefinition/"):
                ok_types.add(t.rsplit("/", 1)[1].split("|")[0])
            else:
                sd = registry().structure(t, self.prefer)
                if sd is None:
                    ok_types.add("*")
                else:
                    profiled.append((t, sd["type"]))
        if "*" in ok_types or "Resource" in ok_types or rtype in ok_types:
            return
        for url, base in profiled:
            if base != rtype:
                continue
            ck = (id(target), url)
            if ck not in self.conforms:
                # The target's own walk (shared with its entry's, whichever comes first), less what it
                # says of its own references; a reference back to a resource being walked conforms.
                self.conforms[ck] = True
                sub = _Run(self.root, self.prefer, self)
                sub.resource(target, compile_profile(url, self.prefer), rtype, target)
                self.conforms[ck] = not any(i["severity"] == "error" and i["details"]["coding"][0]["code"] != "reference-target"
                                            for i in sub.issues)
            if self.conforms[ck]:
                return
        self.add("error", "structure", "reference-target", f"{loc}.reference",
                 f"{ref} ({rtype}) does not conform to any target profile: {', '.join(targets)}")

    def binding(self, value: Any, node: Node, loc: str, primitive_type: str | None) -> None:
        strength = node.binding.get("strength")
        if strength not in ("required", "extensible"):
            return
        members = expand(node.binding["valueSet"])
        if members is None:
            return
        codes = {c for _, c in members}
        if primitive_type is not None:
            if isinstance(value, str) and value not in codes:
                self._binding_issue(strength, loc, f"code {value!r}", node)
            return
        if not isinstance(value, dict):
            return
        codings = value.get("coding") if "coding" in value or "text" in value else [value]
        codings = [c for c in (codings if isinstance(codings, list) else []) if isinstance(c, dict) and isinstance(c.get("code"), str)
                   and isinstance(c.get("system"), (str, type(None)))]
        if not codings:
            return
        if not any((c.get("system"), c["code"]) in members for c in codings):
            shown = ", ".join(f"{c.get('system')}#{c['code']}" for c in codings)
            self._binding_issue(strength, loc, shown, node)

    def _binding_issue(self, strength: str, loc: str, shown: str, node: Node) -> None:
        vs = node.binding["valueSet"]
        self.add("error" if strength == "required" else "warning", "code-invalid", "binding", loc,
                 f"{shown} is not in the {strength} value set {vs}")

    # slicing
    def _slice(self, items, child: Node, profile: Profile, loc: str, assigned: dict, cname: str) -> None:
        slicing = child.slicing or {"discriminator": [{"type": "value", "path": "url"}], "rules": "open"}
        discs = slicing.get("discriminator", [])
        order: list[int] = []
        for i, (key, item, ptype) in enumerate(items):
            for s_index, s in enumerate(child.slices):
                if self._in_slice(item, ptype, s, discs):
                    assigned[i] = s
                    order.append(s_index)
                    break
            else:
                order.append(len(child.slices))
                if slicing.get("rules") == "closed":
                    self.add("error", "structure", "slice-closed", f"{loc}.{key}[{i}]",
                             f"{cname}[{i}] matches none of the slices of a closed slicing ({', '.join(s.slice_name or '' for s in child.slices)})")
        if slicing.get("ordered") and order != sorted(order):
            self.add("error", "structure", "slice-order", f"{loc}.{cname}", f"{cname} slices are out of order")
        for s_index, s in enumerate(child.slices):
            n = sum(1 for v in assigned.values() if v is s)
            if n < s.min:
                self.add("error", "required", "slice-cardinality", f"{loc}.{cname}",
                         f"slice {cname}:{s.slice_name}: minimum required = {s.min}, found {n}")
            if s.max != "*" and n > int(s.max):
                self.add("error", "structure", "slice-cardinality", f"{loc}.{cname}",
                         f"slice {cname}:{s.slice_name}: maximum allowed = {s.max}, found {n}")

    def _in_slice(self, item, ptype, s: Node, discs: list[dict]) -> bool:
        if not discs:
            return False
        for d in discs:
            dtype, path = d.get("type"), d.get("path", "$this")
            if dtype == "type":
                target = self._disc_node(s, path)
                want = {t["code"] for t in (target.types if target else [])}
                if path in ("$this", ""):
                    got = ptype
                else:
                    walked = self._walk(item, path)
                    got = walked[0].get("resourceType") if walked and isinstance(walked[0], dict) else None
                if not want or got not in want:
                    return False
            elif dtype in ("value", "pattern"):
                expected = self._disc_value(s, path)
                if expected is None:
                    return False
                got = self._walk(item, path)
                if not any(_matches_pattern(g, expected) if dtype == "pattern" or isinstance(expected, dict) else g == expected
                           for g in got):
                    return False
            elif dtype == "exists":
                want = self._disc_node(s, path)
                has = bool(self._walk(item, path))
                if want is not None and (want.min >= 1) != has:
                    return False
            elif dtype == "profile":
                target = self._disc_node(s, path)
                if target is None:
                    return False
                purls = [p for t in target.types for p in t.get("profile", [])]
                values = self._walk(item, path)
                if not purls or not values:
                    return False
                ok = False
                for purl in purls:
                    try:
                        prof = compile_profile(purl, self.prefer)
                    except UnknownProfile:
                        continue
                    for v in values:
                        if not isinstance(v, dict) or v.get("resourceType", prof.type) != prof.type:
                            continue
                        ck = (id(v), purl)
                        if ck not in self.conforms:
                            sub = _Run(self.root, self.prefer, self)
                            if "resourceType" in v:
                                sub.resource(v, prof, "x", v)
                            else:
                                sub.element(v, prof.root, prof, "x", v, prof.type)
                            self.conforms[ck] = not any(i["severity"] == "error" for i in sub.issues)
                        ok = ok or self.conforms[ck]
                if not ok:
                    return False
            else:
                return False
        return True

    @staticmethod
    def _disc_node(s: Node, path: str) -> Node | None:
        """The element a discriminator path names under slice ``s``; once per (slice, path), since
        every item of a sliced element is tried against every slice."""
        hit = _disc_nodes.get((id(s), path))
        if hit is not None and hit[0] is s:
            return hit[1]
        found = _Run._find_disc_node(s, path)
        _disc_nodes[(id(s), path)] = (s, found)
        return found

    @staticmethod
    def _find_disc_node(s: Node, path: str) -> Node | None:
        node = s
        path = path.replace("resolve()", "").strip(".")
        if path in ("", "$this"):
            return node
        for part in path.split("."):
            part = part.replace("ofType(", "").rstrip(")")
            nxt = node.children.get(part)
            if nxt is None:
                try:
                    code = node.types[0].get("profile", [node.types[0]["code"]])[0] if node.types else None
                    nxt = compile_profile(code).root.children.get(part) if code else None
                except UnknownProfile:
                    nxt = None
            if nxt is None:
                return None
            node = nxt
        return node

    def _disc_value(self, s: Node, path: str) -> Any:
        if path == "url" and "url" not in s.children and s.types and s.types[0].get("profile"):
            return s.types[0]["profile"][0].split("|")[0]
        node = self._disc_node(s, path)
        if node is None:
            return None
        if node.fixed is not None:
            return node.fixed
        if node.pattern is not None:
            return node.pattern
        if node.binding and node.binding.get("strength") == "required":
            return None
        return None

    @staticmethod
    def _walk(item: Any, path: str) -> list:
        values = [item]
        if path in ("$this", ""):
            return values
        for part in path.split("."):
            if part == "resolve()":
                continue
            nxt = []
            for v in values:
                if isinstance(v, dict) and part in v:
                    nxt.extend(_as_list(v[part]))
            values = nxt
        return values


def validate(resource: Any, profile: str | None = None, package: str | None = None) -> dict:
    """Validate ``resource`` against ``profile`` (or its ``meta.profile`` and base type).

    Returns an OperationOutcome; raises :class:`UnknownProfile` for a profile no package defines and
    :class:`TooCostly` for a resource beyond :data:`MAX_VALUES` or :data:`MAX_DEPTH`.
    Without ``package``, an unversioned canonical that several shipped versions define (PAS 2.0.1 and
    2.2.1) is met when any one version is met: the outcome is that of the best-matching version.
    """
    check_cost(resource)
    if package is None and isinstance(resource, dict):
        claimed = [profile] if profile else claimed_profiles(resource)
        packages = []
        for url in claimed:
            if isinstance(url, str) and "|" not in url:
                packages = [pkg for pkg, res in registry().resources.get(url, []) if res.get("resourceType") == "StructureDefinition"]
                if len(packages) > 1:
                    break
        if len(packages) > 1:
            outcomes = []
            for pkg in dict.fromkeys(packages):
                outcomes.append(_validate(resource, profile, pkg))
                if not errors(outcomes[-1]):
                    break  # met: no other version can do better
            return min(outcomes, key=lambda o: len(errors(o)))
    return _validate(resource, profile, package)


def _validate(resource: Any, profile: str | None, package: str | None) -> dict:
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return {"resourceType": "OperationOutcome", "issue": [
            _issue("error", "structure", "type", "$this", "not a FHIR resource (no resourceType)")]}
    rtype = resource["resourceType"]
    run = _Run(resource, package)
    try:
        base = compile_profile(rtype)
    except UnknownProfile:
        return {"resourceType": "OperationOutcome", "issue": [
            _issue("error", "structure", "type", rtype, f"unknown resource type {rtype}")]}
    urls: list[str] = []
    if profile:
        compile_profile(profile, package)
        urls.append(profile)
    else:
        for purl in claimed_profiles(resource):
            if registry().structure(purl, package) is None:
                run.add("warning", "not-supported", "profile-unknown", f"{rtype}.meta.profile", f"profile {purl} is not known")
            else:
                urls.append(purl)
    try:
        chosen = [compile_profile(purl, package) for purl in urls]
        # A profile's snapshot holds every rule of the base type it constrains: walking the base
        # too would only find the same issues again.
        if not any(p.type == rtype for p in chosen):
            run.resource(resource, base, rtype, resource)
        for prof in chosen:
            run.resource(resource, prof, rtype, resource)
    except RecursionError:
        raise TooCostly("the resource nests too deeply to validate") from None
    seen, unique = set(), []
    for i in run.issues:
        k = (i["severity"], i["details"]["coding"][0]["code"], i["expression"][0], i["diagnostics"])
        if k not in seen:
            seen.add(k)
            unique.append(i)
    if not unique:
        unique = [{"severity": "information", "code": "informational", "diagnostics": "no issues"}]
    return {"resourceType": "OperationOutcome", "issue": unique}


def errors(outcome: dict) -> list[dict]:
    return [i for i in outcome.get("issue", []) if i["severity"] in ("error", "fatal")]


def issue_keys(outcome: dict) -> set[str]:
    return {c["code"] for i in errors(outcome) for c in i.get("details", {}).get("coding", [])}
