"""The DTR template catalog: one folder per service category, compiled into FHIR resources.

Each folder holds what a clinician and a reviewer would read, in the form easiest to review:

- ``questionnaire.yaml``: the form (FHIR Questionnaire items with a few shorthands, see
  :func:`_item`), with the public coverage criteria it follows cited in comments;
- ``library.cql`` and ``library.elm.json``: the pre-population logic the DTR client runs (CQL text
  and the ELM the official translator compiles from it, ``questionnaires/tools/build-libraries.mjs``;
  both shipped in the Library);
- ``valuesets.yaml``: the value sets the items and the library bind (all enumerated, so Precert can
  expand them itself);
- ``criteria.yaml``: the payer's decision criteria over the answers, plus a met and a not-met
  example answer set.

``common/`` holds the header group every form starts with, the PrecertCommon library and shared
value sets. The catalog is built once per process (:func:`get_catalog`) and is immutable; the DTR
operations serve resources from it without touching the database.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
BASE = "http://precert.example.org/fhir"
VERSION = "1.0.0"
# When the templates last changed (Questionnaire.date; ``changedsince`` compares against it).
CATALOG_DATE = "2026-11-24"
ANSWER_SYSTEM = f"{BASE}/CodeSystem/dtr-answers"

# The service categories are the payer rules' (one folder per category here).
from server.rules.model import CATEGORIES  # noqa: E402

DTR_SD = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/"
SDC_SD = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
CORE_SD = "http://hl7.org/fhir/StructureDefinition/"
EXT_CQF_LIBRARY = CORE_SD + "cqf-library"
EXT_LAUNCH_CONTEXT = SDC_SD + "sdc-questionnaire-launchContext"
EXT_VARIABLE = CORE_SD + "variable"
EXT_INITIAL = SDC_SD + "sdc-questionnaire-initialExpression"
EXT_CALCULATED = SDC_SD + "sdc-questionnaire-calculatedExpression"
EXT_ADAPTIVE = SDC_SD + "sdc-questionnaire-questionnaireAdaptive"
EXT_MIN = CORE_SD + "minValue"
EXT_MAX = CORE_SD + "maxValue"
EXT_UNIT = CORE_SD + "questionnaire-unit"

# CQL library name -> catalog key of its folder.
COMMON_KEY = "common"
COMMON_LIBRARY_ID = "precert-common"

_VALUE_KEY = {"decimal": "valueDecimal", "integer": "valueInteger", "date": "valueDate", "dateTime": "valueDateTime"}


class TemplateError(ValueError):
    """A template folder is inconsistent; the message names the file and the element."""


def _camel(slug: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", slug) if part)


def canonical_split(canonical: str) -> tuple[str, str | None]:
    url, _, version = canonical.partition("|")
    return url, (version or None)


def _div(title: str, lines: list[str]) -> dict:
    body = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    div = f'<div xmlns="http://www.w3.org/1999/xhtml"><p><b>{html.escape(title)}</b></p><ul>{body}</ul></div>'
    return {"status": "generated", "div": div}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


# ---------------------------------------------------------------------------------- value sets
def _valueset(spec: dict, where: str) -> dict:
    slug = spec.get("id")
    if not slug or not isinstance(spec.get("include"), list):
        raise TemplateError(f"{where}: each value set needs 'id' and 'include'")
    includes = []
    lines = []
    for inc in spec["include"]:
        concepts = [{"code": str(code), "display": str(display)} for code, display in (inc.get("concepts") or {}).items()]
        if not inc.get("system") or not concepts:
            raise TemplateError(f"{where}: value set {slug} include needs 'system' and enumerated 'concepts'")
        includes.append({"system": inc["system"], "concept": concepts})
        # The codes themselves are in compose (and in every expansion); the narrative summarises.
        lines.append(f"{len(concepts)} codes from {inc['system']}: " + ", ".join(c["code"] for c in concepts))
    title = spec.get("title", slug)
    vs = {
        "resourceType": "ValueSet",
        "id": slug,
        "text": _div(title, lines),
        "url": f"{BASE}/ValueSet/{slug}",
        "version": VERSION,
        "name": _camel(slug),
        "title": title,
        "status": "active",
        "date": CATALOG_DATE,
        "publisher": "Precert",
    }
    if spec.get("description"):
        vs["description"] = spec["description"]
    vs["compose"] = {"include": includes}
    return vs


def expansion_contains(valueset: dict) -> list[dict]:
    return [
        {"system": inc["system"], "code": c["code"], "display": c.get("display", c["code"])}
        for inc in valueset.get("compose", {}).get("include", [])
        for c in inc.get("concept", [])
        if not c.get("inactive")
    ]


# ---------------------------------------------------------------------------------- libraries
_CQL_LIBRARY = re.compile(r"^library\s+(\w+)\s+version\s+'([^']+)'", re.M)
_CQL_INCLUDE = re.compile(r"^include\s+(\w+)\s+version\s+'([^']+)'(?:\s+called\s+(\w+))?", re.M)
_CQL_VALUESET = re.compile(r"^valueset\s+\"([^\"]+)\":\s+'([^']+)'(?:\s+version\s+'([^']+)')?", re.M)
_CQL_DEFINE = re.compile(r"^define\s+(?:\"([^\"]+)\"|(\w+))\s*:", re.M)


@dataclass(frozen=True)
class CqlHeader:
    name: str
    version: str
    includes: tuple[tuple[str, str, str], ...]  # (library, version, alias)
    valuesets: tuple[tuple[str, str, str | None], ...]  # (name, url, version)
    defines: tuple[str, ...]


def parse_cql_header(cql: str) -> CqlHeader:
    """The declarations of a CQL library (enough to check it against its ELM and the form)."""
    m = _CQL_LIBRARY.search(cql)
    if not m:
        raise TemplateError("library.cql has no 'library Name version' declaration")
    includes = tuple((i.group(1), i.group(2), i.group(3) or i.group(1)) for i in _CQL_INCLUDE.finditer(cql))
    valuesets = tuple((v.group(1), v.group(2), v.group(3)) for v in _CQL_VALUESET.finditer(cql))
    defines = tuple(d.group(1) or d.group(2) for d in _CQL_DEFINE.finditer(cql))
    return CqlHeader(m.group(1), m.group(2), includes, valuesets, defines)


def elm_defines(elm: dict) -> list[str]:
    return [s["name"] for s in elm.get("library", {}).get("statements", {}).get("def", [])]


def _elm_retrieves(node, found: list) -> None:
    if isinstance(node, dict):
        if node.get("type") == "Retrieve":
            found.append(node)
        for value in node.values():
            _elm_retrieves(value, found)
    elif isinstance(node, list):
        for value in node:
            _elm_retrieves(value, found)


@dataclass
class LibrarySource:
    key: str  # folder
    id: str  # Library.id
    cql: str
    elm: dict
    header: CqlHeader
    resource: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{BASE}/Library/{self.id}"


def _load_library(folder: Path, key: str, lib_id: str, library_ids: dict[str, str]) -> LibrarySource:
    where = f"questionnaires/{key}"
    try:
        cql = (folder / "library.cql").read_text()
        elm = json.loads((folder / "library.elm.json").read_text())
    except (OSError, ValueError) as exc:
        raise TemplateError(f"{where}: cannot read the library: {exc}") from None
    header = parse_cql_header(cql)
    elm_vs = {v["name"]: (v["id"], v.get("version")) for v in elm["library"].get("valueSets", {}).get("def", [])}
    valuesets_by_name = {name: (url, version) for name, url, version in header.valuesets}
    retrieves: list = []
    _elm_retrieves(elm, retrieves)
    requirements = []
    seen = set()
    for r in retrieves:
        rtype = r["dataType"].split("}")[-1]
        vs_name = (r.get("codes") or {}).get("name")
        key_ = (rtype, vs_name)
        if key_ in seen:
            continue
        seen.add(key_)
        req: dict = {"type": rtype, "profile": [f"http://hl7.org/fhir/StructureDefinition/{rtype}"]}
        if vs_name:
            url, version = valuesets_by_name.get(vs_name) or elm_vs.get(vs_name) or (None, None)
            if url is None:
                raise TemplateError(f"{where}/library.elm.json: retrieve uses value set '{vs_name}' that the library does not declare")
            req["codeFilter"] = [{"path": "code", "valueSet": f"{url}|{version}" if version else url}]
        requirements.append(req)
    related = []
    for lib_name, version, _alias in header.includes:
        dep_id = library_ids.get(lib_name)
        if dep_id is None:
            raise TemplateError(f"{where}/library.cql: includes unknown library {lib_name}")
        related.append({"type": "depends-on", "display": lib_name, "resource": f"{BASE}/Library/{dep_id}|{version}"})
    resource = {
        "resourceType": "Library",
        "id": lib_id,
        "text": _div(f"CQL library {header.name} {header.version}", [f"define {d}" for d in header.defines]),
        "url": f"{BASE}/Library/{lib_id}",
        "version": header.version,
        "name": header.name,
        "title": f"{header.name} pre-population logic",
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/library-type", "code": "logic-library"}]},
        "date": CATALOG_DATE,
        "publisher": "Precert",
        "description": (cql.split("*/", 1)[0].replace("/*", "").replace("*", " ").split("\n", 2)[-1].strip() or header.name)[:1000],
    }
    if related:
        resource["relatedArtifact"] = related
    if requirements:
        resource["dataRequirement"] = requirements
    resource["content"] = [
        {"contentType": "text/cql", "data": _b64(cql)},
        {"contentType": "application/elm+json", "data": _b64(json.dumps(elm, separators=(",", ":")))},
    ]
    return LibrarySource(key, lib_id, cql, elm, header, resource)


# ---------------------------------------------------------------------------------- templates
@dataclass
class Template:
    category: str
    title: str
    questionnaire: dict
    adaptive_questionnaire: dict | None
    library: LibrarySource
    libraries: list[dict]  # the closure: this library first, then its dependencies
    valuesets: list[dict]  # every value set the form or its libraries bind
    criteria: list[dict]
    examples: dict
    codes: list[dict]
    items: dict[str, dict]  # linkId -> Questionnaire item (the FHIR dict)
    order: list[str]  # linkIds in document order
    prefill: dict[str, str]  # linkId -> what Precert fills in ("member-id", "requested-service")
    parents: dict[str, str | None] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.questionnaire["url"]

    @property
    def canonical(self) -> str:
        return f"{self.url}|{self.questionnaire['version']}"

    @property
    def adaptive_url(self) -> str | None:
        return self.adaptive_questionnaire["url"] if self.adaptive_questionnaire else None

    def coding_for(self, link_id: str, code: str, valuesets: dict[str, dict]) -> dict:
        """The answer Coding an item offers for ``code`` (from its answerOption or its value set)."""
        item = self.items[link_id]
        for opt in item.get("answerOption", []):
            coding = opt.get("valueCoding")
            if coding and coding["code"] == code:
                return dict(coding)
        if item.get("answerValueSet"):
            vs = valuesets.get(canonical_split(item["answerValueSet"])[0])
            for c in expansion_contains(vs or {}):
                if c["code"] == code:
                    return c
        raise TemplateError(f"questionnaires/{self.category}: item '{link_id}' has no answer '{code}'")


def _expression(language: str, expression: str, name: str | None = None) -> dict:
    expr = {"language": language, "expression": expression}
    if name:
        expr = {"name": name, **expr}
    return expr


def _cql_ref(ref: str, where: str) -> str:
    lib, _, define = ref.partition(".")
    if not define:
        raise TemplateError(f"{where}: expression '{ref}' must be Library.Define")
    return f'"{lib}".{define}'


def _item(spec: dict, where: str, options_for: dict, prefill: dict) -> dict:
    """A FHIR Questionnaire item from its YAML form. Shorthands: ``options`` (code: display ->
    answerOption), ``valueSet`` (slug -> versioned answerValueSet), ``initial`` (Library.Define ->
    CQL initialExpression), ``calculated`` (FHIRPath calculatedExpression), ``min``/``max``,
    ``unit``, ``prefill`` (answered by Precert), ``answerCoding: code`` in enableWhen."""
    link_id = spec.get("linkId")
    itype = spec.get("type")
    if not link_id or not itype or not spec.get("text"):
        raise TemplateError(f"{where}: every item needs linkId, text and type ({spec!r:.80})")
    ext = []
    if "initial" in spec:
        ext.append({"url": EXT_INITIAL, "valueExpression": _expression("text/cql", _cql_ref(spec["initial"], where))})
    if "calculated" in spec:
        ext.append({"url": EXT_CALCULATED, "valueExpression": _expression("text/fhirpath", spec["calculated"])})
    for key, url in (("min", EXT_MIN), ("max", EXT_MAX)):
        if key in spec:
            vkey = _VALUE_KEY.get(itype)
            if vkey is None:
                raise TemplateError(f"{where}: item '{link_id}' of type {itype} cannot have {key}")
            value = spec[key]
            ext.append({"url": url, vkey: int(value) if itype == "integer" else value})
    if "unit" in spec:
        ext.append({"url": EXT_UNIT, "valueCoding": {"system": "http://unitsofmeasure.org", **spec["unit"]}})
    item: dict = {}
    if ext:
        item["extension"] = ext
    item["linkId"] = link_id
    item["text"] = spec["text"]
    item["type"] = itype
    if spec.get("enableWhen"):
        conds = []
        for cond in spec["enableWhen"]:
            cond = dict(cond)
            if isinstance(cond.get("answerCoding"), str):
                target = options_for.get(cond["question"])
                if target is None or cond["answerCoding"] not in target:
                    raise TemplateError(f"{where}: enableWhen of '{link_id}' compares '{cond['question']}' with unknown answer '{cond['answerCoding']}'")
                cond["answerCoding"] = target[cond["answerCoding"]]
            conds.append(cond)
        item["enableWhen"] = conds
        if len(conds) > 1:
            item["enableBehavior"] = spec.get("enableBehavior", "all")
    for key in ("required", "repeats", "readOnly"):
        if spec.get(key):
            item[key] = True
    if "options" in spec:
        item["answerOption"] = [
            {"valueCoding": {"system": ANSWER_SYSTEM, "code": str(code), "display": str(display)}}
            for code, display in spec["options"].items()
        ]
    if "valueSet" in spec:
        item["answerValueSet"] = f"{BASE}/ValueSet/{spec['valueSet']}|{VERSION}"
    if spec.get("prefill"):
        prefill[link_id] = spec["prefill"]
    if spec.get("item"):
        item["item"] = [_item(child, where, options_for, prefill) for child in spec["item"]]
    return item


def _collect_options(specs: list, valuesets: dict[str, dict], out: dict) -> None:
    """linkId -> {code: Coding} for choice items, so enableWhen can name answers by code."""
    for spec in specs:
        if "options" in spec:
            out[spec["linkId"]] = {
                str(code): {"system": ANSWER_SYSTEM, "code": str(code), "display": str(display)}
                for code, display in spec["options"].items()
            }
        elif "valueSet" in spec:
            vs = valuesets.get(f"{BASE}/ValueSet/{spec['valueSet']}")
            if vs is not None:
                out[spec["linkId"]] = {c["code"]: c for c in expansion_contains(vs)}
        _collect_options(spec.get("item") or [], valuesets, out)


def _index(items: list, parent: str | None, index: dict, order: list, parents: dict) -> None:
    for item in items:
        if item["linkId"] in index:
            raise TemplateError(f"duplicate linkId '{item['linkId']}'")
        index[item["linkId"]] = item
        order.append(item["linkId"])
        parents[item["linkId"]] = parent
        _index(item.get("item", []), item["linkId"], index, order, parents)


def _launch_context(name: str, rtype: str, description: str) -> dict:
    return {"url": EXT_LAUNCH_CONTEXT, "extension": [
        {"url": "name", "valueCoding": {"system": "http://hl7.org/fhir/uv/sdc/CodeSystem/launchContext", "code": name}},
        {"url": "type", "valueCode": rtype},
        {"url": "description", "valueString": description},
    ]}


def _reexported(specs: list, library_name: str) -> list:
    """The header items with their ``PrecertCommon.X`` expressions renamed to the form library, which
    re-exports ``X``."""
    out = []
    for spec in specs:
        spec = dict(spec)
        initial = spec.get("initial")
        if isinstance(initial, str) and initial.startswith("PrecertCommon."):
            spec["initial"] = library_name + initial[len("PrecertCommon"):]
        if spec.get("item"):
            spec["item"] = _reexported(spec["item"], library_name)
        out.append(spec)
    return out


def _form_extensions(library_urls: list[str], variables: list[dict]) -> list[dict]:
    ext = [{"url": EXT_CQF_LIBRARY, "valueCanonical": url} for url in library_urls]
    ext.append(_launch_context("patient", "Patient", "The patient the documentation is about"))
    ext.append(_launch_context("user", "Practitioner", "The clinician completing the form"))
    for var in variables:
        ext.append({"url": EXT_VARIABLE, "valueExpression": _expression("text/cql", var["expression"], var["name"])})
    return ext


def _narrative_lines(items: list, depth: int = 0) -> list[str]:
    lines = []
    for item in items:
        flags = " (required)" if item.get("required") else ""
        lines.append(f"{'  ' * depth}{item['linkId']}: {item['text']} [{item['type']}]{flags}")
        lines += _narrative_lines(item.get("item", []), depth + 1)
    return lines


class Catalog:
    """Every template, and every Questionnaire, Library and ValueSet they ship, by canonical."""

    def __init__(self, root: Path = ROOT):
        self.root = root
        self.templates: dict[str, Template] = {}
        self._by_url: dict[str, dict[str, dict]] = {}  # url -> version -> resource
        self._template_by_url: dict[str, Template] = {}
        self.libraries: dict[str, LibrarySource] = {}
        self._load()

    # -------------------------------------------------------------- loading
    def _yaml(self, path: Path):
        try:
            return yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise TemplateError(f"{path.relative_to(self.root.parent)}: {exc}") from None

    def _load(self) -> None:
        common = self.root / COMMON_KEY
        header_items = self._yaml(common / "header.yaml")
        valuesets: dict[str, dict] = {}
        for vs_spec in self._yaml(common / "valuesets.yaml") or []:
            vs = _valueset(vs_spec, "questionnaires/common/valuesets.yaml")
            valuesets[vs["url"]] = vs
        folder_specs = {}
        library_ids = {"PrecertCommon": COMMON_LIBRARY_ID}
        for category in CATEGORIES:
            folder = self.root / category
            spec = self._yaml(folder / "questionnaire.yaml")
            if not isinstance(spec, dict) or not spec.get("library"):
                raise TemplateError(f"questionnaires/{category}/questionnaire.yaml: needs 'library' and 'items'")
            folder_specs[category] = spec
            library_ids[spec["library"]] = category
            for vs_spec in self._yaml(folder / "valuesets.yaml") or []:
                vs = _valueset(vs_spec, f"questionnaires/{category}/valuesets.yaml")
                if vs["url"] in valuesets:
                    raise TemplateError(f"questionnaires/{category}/valuesets.yaml: value set {vs['id']} is defined twice")
                valuesets[vs["url"]] = vs
        self.valuesets = valuesets
        self.libraries[COMMON_LIBRARY_ID] = _load_library(common, COMMON_KEY, COMMON_LIBRARY_ID, library_ids)
        for category, spec in folder_specs.items():
            lib = _load_library(self.root / category, category, category, library_ids)
            if lib.header.name != spec["library"]:
                raise TemplateError(f"questionnaires/{category}: questionnaire.yaml names library {spec['library']} but library.cql declares {lib.header.name}")
            self.libraries[category] = lib
        for category, spec in folder_specs.items():
            self.templates[category] = self._template(category, spec, header_items)
        for lib in self.libraries.values():
            self._register(lib.resource)
        for vs in valuesets.values():
            self._register(vs)
        for t in self.templates.values():
            self._register(t.questionnaire)
            self._template_by_url[t.url] = t
            if t.adaptive_questionnaire:
                self._register(t.adaptive_questionnaire)
                self._template_by_url[t.adaptive_url] = t

    def _library_closure(self, lib: LibrarySource) -> list[LibrarySource]:
        out: list[LibrarySource] = []

        def visit(source: LibrarySource) -> None:
            if source in out:
                return
            out.append(source)
            for rel in source.resource.get("relatedArtifact", []):
                if rel.get("type") == "depends-on":
                    dep_id = canonical_split(rel["resource"])[0].rsplit("/", 1)[1]
                    visit(self.libraries[dep_id])

        visit(lib)
        return out

    def _template(self, category: str, spec: dict, header_items: list) -> Template:
        where = f"questionnaires/{category}/questionnaire.yaml"
        lib = self.libraries[category]
        specs = _reexported(header_items, lib.header.name) + list(spec.get("items") or [])
        options_for: dict = {}
        _collect_options(specs, self.valuesets, options_for)
        prefill: dict = {}
        items = [_item(s, where, options_for, prefill) for s in specs]
        index: dict = {}
        order: list = []
        parents: dict = {}
        try:
            _index(items, None, index, order, parents)
        except TemplateError as exc:
            raise TemplateError(f"{where}: {exc}") from None
        closure = self._library_closure(lib)
        # One cqf-library per form (DTR clients treat every listed library as a root and every include
        # as a dependency: listing PrecertCommon as both breaks their lookup). The form library
        # re-exports the common defines the header items use.
        library_urls = [lib.url]
        url = f"{BASE}/Questionnaire/{category}"
        title = spec.get("title", category)
        questionnaire = {
            "resourceType": "Questionnaire",
            "id": category,
            "meta": {"profile": [DTR_SD + "dtr-std-questionnaire"]},
            "text": _div(title, _narrative_lines(items)),
            "extension": _form_extensions(library_urls, spec.get("variables") or []),
            "url": url,
            "version": VERSION,
            "name": spec.get("name", _camel(category)),
            "title": title,
            "status": "active",
            "subjectType": ["Patient"],
            "date": spec.get("date", CATALOG_DATE),
            "publisher": "Precert",
            "description": spec.get("description", title),
            "effectivePeriod": {"start": "2026-01-01", "end": "2027-12-31"},
            "item": items,
        }
        adaptive = None
        if spec.get("adaptive"):
            seed = [dict(items[0])]  # the header group: pre-populated by CQL and by Precert
            adaptive = {
                "resourceType": "Questionnaire",
                "id": f"{category}-adaptive",
                "meta": {"profile": [DTR_SD + "dtr-questionnaire-adapt-search"]},
                "text": _div(f"{title} (adaptive)", ["Questions are served one step at a time by $next-question."]),
                "extension": [{"url": EXT_ADAPTIVE, "valueBoolean": True}, *_form_extensions(library_urls, spec.get("variables") or [])],
                "url": f"{url}-adaptive",
                "version": VERSION,
                "name": spec.get("name", _camel(category)) + "Adaptive",
                "title": f"{title} (adaptive)",
                "status": "active",
                "subjectType": ["Patient"],
                "date": spec.get("date", CATALOG_DATE),
                "publisher": "Precert",
                "description": f"Adaptive form: {spec.get('description', title)}",
                "effectivePeriod": {"start": "2026-01-01", "end": "2027-12-31"},
                "derivedFrom": [f"{url}|{VERSION}"],
                "item": seed,
            }
        # Every value set the form binds or its libraries retrieve with.
        bound: list[str] = []
        for link_id in order:
            avs = index[link_id].get("answerValueSet")
            if avs:
                bound.append(canonical_split(avs)[0])
        for source in closure:
            for req in source.resource.get("dataRequirement", []):
                for cf in req.get("codeFilter", []):
                    bound.append(canonical_split(cf["valueSet"])[0])
        vs_list = []
        for vs_url in dict.fromkeys(bound):
            if vs_url not in self.valuesets:
                raise TemplateError(f"questionnaires/{category}: binds value set {vs_url}, which no valuesets.yaml defines")
            vs_list.append(self.valuesets[vs_url])
        crit = self._yaml(self.root / category / "criteria.yaml") or {}
        return Template(
            category=category,
            title=title,
            questionnaire=questionnaire,
            adaptive_questionnaire=adaptive,
            library=lib,
            libraries=[s.resource for s in closure],
            valuesets=vs_list,
            criteria=list(crit.get("criteria") or []),
            examples=dict(crit.get("examples") or {}),
            codes=list(spec.get("codes") or []),
            items=index,
            order=order,
            prefill=prefill,
            parents=parents,
        )

    def _register(self, resource: dict) -> None:
        self._by_url.setdefault(resource["url"], {})[resource["version"]] = resource

    # -------------------------------------------------------------- lookup
    def resolve(self, canonical: str, rtype: str | None = None) -> dict | None:
        """The resource a canonical (``url`` or ``url|version``) names; the current version when
        unversioned."""
        url, version = canonical_split(canonical)
        versions = self._by_url.get(url)
        if not versions:
            return None
        resource = versions.get(version) if version else versions[max(versions)]
        if resource is not None and rtype and resource["resourceType"] != rtype:
            return None
        return resource

    def questionnaire(self, url: str, version: str | None = None) -> dict | None:
        return self.resolve(f"{url}|{version}" if version else url, "Questionnaire")

    def valueset(self, canonical: str) -> dict | None:
        return self.resolve(canonical, "ValueSet")

    def template_for(self, canonical: str) -> Template | None:
        """The template whose standard or adaptive Questionnaire the canonical names."""
        url, version = canonical_split(canonical)
        template = self._template_by_url.get(url)
        if template is None or (version and version != VERSION):
            return None
        return template

    def resources(self) -> list[dict]:
        """Every Questionnaire, Library and ValueSet, for loading into the FHIR store."""
        out = []
        for versions in self._by_url.values():
            out.extend(versions.values())
        return out

    def template_for_code(self, system: str | None, code: str | None) -> Template | None:
        """Fallback selection by the codes a template lists (used only when the payer rules engine
        is not installed)."""
        for t in self.templates.values():
            for c in t.codes:
                if str(c.get("code")) == str(code):
                    return t
        return None


@lru_cache(maxsize=1)
def get_catalog() -> Catalog:
    return Catalog()


# ---------------------------------------------------------------------------------- answers
def answer_value(item: dict, value, template: Template, catalog: Catalog, today: date | None = None) -> dict:
    """One QuestionnaireResponse answer (``value[x]``) for a plain Python value, as the item's type
    expects. Choice answers are given by code; dates may be ``@today-N``."""
    itype = item["type"]
    if itype in ("choice", "open-choice"):
        return {"valueCoding": template.coding_for(item["linkId"], str(value), catalog.valuesets)}
    if itype == "boolean":
        return {"valueBoolean": bool(value)}
    if itype == "decimal":
        return {"valueDecimal": value}
    if itype == "integer":
        return {"valueInteger": int(value)}
    if itype in ("date", "dateTime"):
        text = str(value)
        if text.startswith("@today"):
            days = int(text[6:] or 0)
            text = ((today or date.today()) + timedelta(days=days)).isoformat()
        return {"valueDate" if itype == "date" else "valueDateTime": text}
    if itype == "quantity":
        return {"valueQuantity": value}
    return {"valueString": str(value)}


def response_items(template: Template, answers: dict, catalog: Catalog, items: list | None = None, origin: dict | None = None) -> list[dict]:
    """QuestionnaireResponse.item for ``answers`` (linkId -> value or list), nested like the form;
    groups with nothing answered are left out."""
    out = []
    for item in template.questionnaire["item"] if items is None else items:
        link_id = item["linkId"]
        if item["type"] == "group":
            children = response_items(template, answers, catalog, item.get("item", []), origin)
            if children:
                out.append({"linkId": link_id, "text": item["text"], "item": children})
            continue
        if link_id not in answers or answers[link_id] is None:
            continue
        values = answers[link_id] if isinstance(answers[link_id], list) else [answers[link_id]]
        answer_list = []
        for v in values:
            answer = answer_value(item, v, template, catalog)
            if origin is not None:
                answer = {"extension": [origin], **answer}
            answer_list.append(answer)
        out.append({"linkId": link_id, "text": item["text"], "answer": answer_list})
    return out
