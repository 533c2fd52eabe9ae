"""``Questionnaire/$questionnaire-package``: the forms a DTR client needs for an order, with
everything to render and pre-populate them.

Which forms apply is decided by the payer rules (the same :class:`~server.rules.RuleSet` CRD and
PAS use), unless the caller names Questionnaire canonicals. Each form comes back as one
``collection`` Bundle: the Questionnaire first, then a draft QuestionnaireResponse (DTR context and
coverage extensions, and the answers Precert itself knows, marked ``information-origin``
auto / auto-server), every Library it needs (``cqf-library`` plus the ``depends-on`` closure, CQL and
ELM) and every ValueSet, expanded. Output parameter names follow the caller's DTR version
(``PackageBundle``/``operationOutcome`` for 2.0.1, ``packagebundle``/``outcome`` for 2.2).

The forms, libraries and value sets are immutable, so their JSON is serialized once per DTR version
and base URL and reused: a request costs one rules evaluation and a small QuestionnaireResponse.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import orjson

from questionnaires.catalog import (
    EXT_ADAPTIVE, EXT_CQF_LIBRARY, Template, expansion_contains, get_catalog, response_items,
)
from server.dtr import adaptive
from server.dtr.common import (
    DOC_REASON_DISPLAY, DOC_REASON_SYSTEM, DTR_SD, EXT_INTENDED_USE, EXT_QR_CONTEXT, EXT_QR_COVERAGE,
    OUTCOME_PARAM, PACKAGE_PARAM, V22, canonical_value, origin_extension, parse_parameters, requested_version,
)
from server.dtr.context import resolve_context
from server.dtr.orders import ORDER_TYPES, order_codes, order_date, order_quantity, provider_npis, reason_codes, subject_reference
from server.fhir.errors import FHIRError, bad_request, issue
from server.fhir.operations import OperationCall, operation
from server.fhir.responses import base_url, fhir_response
from server.fhir.validation import validate_resource
from server.rules import get_rules
from server.rules.model import EvaluationInput
from server.storage import fhir_instant, utcnow

OD_URL = "http://hl7.org/fhir/us/davinci-dtr/OperationDefinition/questionnaire-package"
KNOWN_PARAMS = ("coverage", "order", "referenced", "questionnaire", "context", "changedsince")

DEFINITION = {
    "resourceType": "OperationDefinition",
    "id": "questionnaire-package",
    "url": OD_URL,
    "version": "2.0.1",
    "name": "QuestionnairePackage",
    "title": "Retrieve the Questionnaire package for orders, a CRD/PAS context or named Questionnaires",
    "status": "active",
    "kind": "operation",
    "code": "questionnaire-package",
    "resource": ["Questionnaire"],
    "system": False,
    "type": True,
    "instance": False,
    "inputProfile": DTR_SD + "dtr-qpackage-input-parameters",
    "outputProfile": DTR_SD + "dtr-qpackage-output-parameters",
    "parameter": [
        {"name": "coverage", "use": "in", "min": 1, "max": "*", "type": "Coverage"},
        {"name": "order", "use": "in", "min": 0, "max": "*", "type": "Resource"},
        {"name": "referenced", "use": "in", "min": 0, "max": "*", "type": "Resource"},
        {"name": "questionnaire", "use": "in", "min": 0, "max": "*", "type": "canonical"},
        {"name": "context", "use": "in", "min": 0, "max": "1", "type": "string"},
        {"name": "changedsince", "use": "in", "min": 0, "max": "1", "type": "instant"},
        {"name": "PackageBundle", "use": "out", "min": 0, "max": "*", "type": "Bundle",
         "documentation": "One per Questionnaire (DTR 2.0.1 name; 2.2 callers get 'packagebundle')"},
        {"name": "operationOutcome", "use": "out", "min": 0, "max": "1", "type": "OperationOutcome",
         "documentation": "Warnings and information (DTR 2.0.1 name; 2.2 callers get 'outcome')"},
    ],
}


@dataclass
class Selected:
    template: Template
    adaptive: bool
    orders: list[dict] = field(default_factory=list)
    doc_purpose: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------ static parts, serialized once
_STATIC: dict[tuple, tuple] = {}


def _static_entries(template: Template, adaptive_form: bool, version: str, base: str) -> tuple:
    """(Questionnaire entry bytes, [(fullUrl, Library or ValueSet entry bytes)]) for one form."""
    key = (template.category, adaptive_form, version, base, date.today())
    hit = _STATIC.get(key)
    if hit is not None:
        return hit
    if len(_STATIC) > 256:
        _STATIC.clear()
    form = copy.deepcopy(template.adaptive_questionnaire if adaptive_form else template.questionnaire)
    if version == V22:
        # 2.2 (oper-16): references among package artifacts are version-specific. 2.0.1 clients get
        # the plain canonical, which is what the Inferno DTR 2.0.1 kit compares with Library.url.
        for ext in form["extension"]:
            if ext["url"] == EXT_CQF_LIBRARY:
                ext["valueCanonical"] += f"|{template.library.header.version}"
            if ext["url"] == EXT_ADAPTIVE:
                ext.pop("valueBoolean", None)
                ext["valueUrl"] = base
    q_entry = orjson.Fragment(orjson.dumps({"fullUrl": f"{base}/Questionnaire/{form['id']}", "resource": form}))
    now = fhir_instant(utcnow())
    rest = [(f"{base}/Library/{lib['id']}", orjson.Fragment(orjson.dumps({"fullUrl": f"{base}/Library/{lib['id']}", "resource": lib})))
            for lib in template.libraries]
    for vs in template.valuesets:
        contains = expansion_contains(vs)
        expanded = {**vs, "expansion": {"identifier": f"urn:uuid:{uuid.uuid4()}", "timestamp": now, "total": len(contains), "contains": contains}}
        rest.append((f"{base}/ValueSet/{vs['id']}", orjson.Fragment(orjson.dumps({"fullUrl": f"{base}/ValueSet/{vs['id']}", "resource": expanded}))))
    _STATIC[key] = (q_entry, rest)
    return q_entry, rest


# ------------------------------------------------------------------------ inbound validation
_VALID: dict[bytes, bool] = {}


def validate_once(resource: dict, rtype: str) -> None:
    """validate_resource, remembering resources already found valid: EHRs send the same Coverage
    and order again and again while a clinician works, and model validation is the largest cost of
    a package request (about 0.2 ms for a Coverage and an order)."""
    key = rtype.encode() + orjson.dumps(resource)
    if key in _VALID:
        return
    validate_resource(resource, rtype)
    if len(_VALID) >= 4096:
        _VALID.clear()
    _VALID[key] = True


# ------------------------------------------------------------------------ the draft response
def _reference(resource: dict) -> dict:
    if resource.get("id"):
        return {"reference": f"{resource['resourceType']}/{resource['id']}"}
    idents = [i for i in resource.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
    if idents:
        return {"type": resource["resourceType"], "identifier": {k: idents[0][k] for k in ("system", "value") if k in idents[0]}}
    return {"display": resource["resourceType"]}


def member_id(coverage: dict) -> str | None:
    if isinstance(coverage.get("subscriberId"), str):
        return coverage["subscriberId"]
    for ident in coverage.get("identifier") or []:
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            return ident["value"]
    return None


def requested_service(orders: list[dict], referenced: dict) -> str | None:
    for order in orders:
        for coding in order_codes(order, referenced):
            display = coding.get("display") or ""
            return f"{coding['code']} {display}".strip()
    return None


def draft_response(sel: Selected, coverage: dict, referenced: dict, version: str, base: str) -> dict:
    template = sel.template
    ext = [{"url": EXT_QR_COVERAGE if version == V22 else EXT_QR_CONTEXT, "valueReference": _reference(coverage)}]
    ext += [{"url": EXT_QR_CONTEXT, "valueReference": _reference(o)} for o in sel.orders]
    purposes = [p for p in sel.doc_purpose if p in DOC_REASON_DISPLAY] or ["withpa"]
    for purpose in purposes:
        ext.append({"url": EXT_INTENDED_USE, "valueCodeableConcept": {"coding": [
            {"system": DOC_REASON_SYSTEM[version], "code": purpose, "display": DOC_REASON_DISPLAY[purpose]}]}})
    prefill = {}
    for link_id, kind in template.prefill.items():
        value = member_id(coverage) if kind == "member-id" else requested_service(sel.orders, referenced) if kind == "requested-service" else None
        if value:
            prefill[link_id] = value
    origin = origin_extension(version)
    qr: dict = {"resourceType": "QuestionnaireResponse", "id": str(uuid.uuid4())}
    subject = None
    if isinstance(coverage.get("beneficiary"), dict) and coverage["beneficiary"].get("reference"):
        subject = {"reference": coverage["beneficiary"]["reference"]}
    elif sel.orders and subject_reference(sel.orders[0]):
        subject = {"reference": subject_reference(sel.orders[0])}
    if sel.adaptive:
        contained, items = adaptive.first_step(template, prefill, version, base, origin)
        qr["contained"] = [contained]
        questionnaire = f"#{contained['id']}"
    else:
        # Precert's own answers all sit in the form's first (header) group.
        groups = _prefill_groups(template)
        items = response_items(template, prefill, get_catalog(), groups, origin) if groups else []
        questionnaire = template.canonical
    if items and subject and len(ext) >= 2:  # what dtr-questionnaireresponse requires
        qr["meta"] = {"profile": [DTR_SD + "dtr-questionnaireresponse"]}
    qr["extension"] = ext
    qr["questionnaire"] = questionnaire
    qr["status"] = "in-progress"
    if subject:
        qr["subject"] = subject
    qr["authored"] = fhir_instant(utcnow())
    if items:
        qr["item"] = items
    return qr


def _link_ids(item: dict) -> list[str]:
    return [item["linkId"], *(lid for child in item.get("item", []) for lid in _link_ids(child))]


_PREFILL_GROUPS: dict[str, list[dict]] = {}


def _prefill_groups(template: Template) -> list[dict]:
    """The top-level items holding answers Precert fills in (the header group)."""
    groups = _PREFILL_GROUPS.get(template.category)
    if groups is None:
        groups = _PREFILL_GROUPS[template.category] = [
            i for i in template.questionnaire["item"] if any(lid in template.prefill for lid in _link_ids(i))]
    return groups


# ------------------------------------------------------------------------ selection
_DETERMINATIONS: dict[tuple, tuple] = {}


def determine(rules, order: dict | None, coverage: dict, referenced: dict):
    """``rules.evaluate`` for one order, remembered for identical inputs on the same day and the same
    rule set (evaluation is pure; a hot reload makes a new RuleSet, which misses the cache)."""
    key = (date.today(), orjson.dumps(order), orjson.dumps(coverage), orjson.dumps(referenced) if referenced else b"")
    hit = _DETERMINATIONS.get(key)
    if hit is not None and hit[0] is rules:
        return hit[1]
    det = rules.evaluate(_evaluation_input(order, coverage, referenced))
    if len(_DETERMINATIONS) >= 4096:
        _DETERMINATIONS.clear()
    _DETERMINATIONS[key] = (rules, det)
    return det


def _evaluation_input(order: dict | None, coverage: dict, referenced: dict):
    if order is None:
        return EvaluationInput(codes=[], coverage=coverage)
    return EvaluationInput(
        codes=order_codes(order, referenced),
        coverage=coverage,
        order=order,
        encounter=order if order.get("resourceType") == "Encounter" else None,
        provider_ids=provider_npis(order, referenced),
        diagnoses=reason_codes(order),
        quantity=order_quantity(order),
        service_date=order_date(order),
    )


def _rules(state):
    return get_rules(state)


def _parse_instant(p) -> datetime:
    if p.value_key not in ("valueInstant", "valueDateTime", "valueDate") or not isinstance(p.value, str):
        raise bad_request("changedsince needs a valueInstant", f"Parameters.parameter[{p.index}]")
    text = p.value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00")) if "T" in text else datetime.fromisoformat(text + "T00:00:00+00:00")
    except ValueError:
        raise bad_request(f"changedsince '{text[:40]}' is not an instant", f"Parameters.parameter[{p.index}]") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


async def questionnaire_package(call: OperationCall):
    params = parse_parameters(call.body, "questionnaire-package")
    version = requested_version(params.raw, call.query)
    state = call.request.app.state.precert
    catalog = get_catalog()
    notes: list[dict] = []

    coverages, orders, referenced, canonicals = [], [], {}, []
    for p in params.params:
        where = f"Parameters.parameter[{p.index}]"
        if p.name == "coverage":
            if not p.resource or p.resource.get("resourceType") != "Coverage":
                raise bad_request("the coverage parameter must hold a Coverage resource", where)
            validate_once(p.resource, "Coverage")
            coverages.append(p.resource)
        elif p.name == "order":
            rtype = (p.resource or {}).get("resourceType")
            if rtype not in ORDER_TYPES:
                raise bad_request(f"the order parameter must hold one of {', '.join(ORDER_TYPES)}, not {str(rtype)[:40] if rtype else 'a value'}", where)
            validate_once(p.resource, rtype)
            orders.append(p.resource)
        elif p.name == "referenced":
            if not p.resource:
                raise bad_request("the referenced parameter must hold a resource", where)
            if p.resource.get("id"):
                referenced[f"{p.resource['resourceType']}/{p.resource['id']}"] = p.resource
        elif p.name == "questionnaire":
            canonicals.append(canonical_value(p))
        elif p.name not in ("context", "changedsince"):
            notes.append(issue("not-supported", f"parameter '{p.name[:40]}' is not part of $questionnaire-package and was ignored", where, "warning"))
    contexts = params.named("context")
    since_params = params.named("changedsince")
    if len(contexts) > 1 or len(since_params) > 1:
        raise bad_request("context and changedsince may each be given at most once")
    context = None
    if contexts:
        c = contexts[0]
        if c.value_key not in ("valueString", "valueId", "valueCode") or not isinstance(c.value, str) or not c.value.strip() or len(c.value) > 256:
            raise bad_request("context needs a valueString (a CRD coverage-assertion-id or a PAS tracking number)", f"Parameters.parameter[{c.index}]")
        context = c.value.strip()
    since = _parse_instant(since_params[0]) if since_params else None
    if not orders and not canonicals and context is None:
        raise FHIRError.single(400, "required", "at least one of 'order', 'questionnaire' and 'context' is required (dtr-1)", "Parameters.parameter")
    if not coverages:
        raise FHIRError.single(400, "required", "a 'coverage' parameter is required: the Coverage the documentation is for", "Parameters.parameter")
    if len(coverages) > 1:
        if version == V22:  # DTR 2.2 (FHIR-51736): coverage 1..1
            raise bad_request(f"DTR 2.2 takes exactly one 'coverage' parameter, not {len(coverages)}", "Parameters.parameter.where(name='coverage')")
        notes.append(issue("not-supported", f"{len(coverages)} coverages were given; the documentation is collected for the first", "Parameters.parameter.where(name='coverage')", "warning"))
    coverage = coverages[0]

    rules = _rules(state)
    determinations = []
    if rules is not None:
        for order in orders or [None]:
            det = determine(rules, order, coverage, referenced)
            if not det.payer_match:
                raise FHIRError.single(422, "not-found", (det.reason or {}).get("display") or "the Coverage is not with this payer", "Parameters.parameter.where(name='coverage')")
            if not det.coverage_active:
                raise FHIRError.single(422, "business-rule", (det.reason or {}).get("display") or "the Coverage is not active", "Parameters.parameter.where(name='coverage')")
            if order is not None:
                determinations.append((order, det))

    resolved = await resolve_context(state, context) if context else None
    if context and resolved is None:
        if not orders:
            raise FHIRError.single(404, "not-found", f"context '{context[:64]}' is not a coverage assertion or prior-authorization tracking number Precert knows")
        notes.append(issue("not-found", f"context '{context[:64]}' could not be matched to an earlier coverage assertion; the forms were chosen from the orders", None, "warning"))

    selected: dict[tuple, Selected] = {}

    def add(template: Template, adaptive_form: bool, order: dict | None, purposes=()) -> Selected:
        sel = selected.setdefault((template.category, adaptive_form), Selected(template, adaptive_form))
        if order is not None and order not in sel.orders:
            sel.orders.append(order)
        sel.doc_purpose += [p for p in purposes if p not in sel.doc_purpose]
        return sel

    if canonicals:
        for canonical in canonicals:
            template = catalog.template_for(canonical)
            if template is None:
                notes.append(issue("not-found", f"Questionnaire {canonical[:200]} is not known to Precert", None, "warning"))
                continue
            adaptive_form = canonical.split("|")[0] == template.adaptive_url
            related = [o for o, det in determinations if any(q.split("|")[0] == template.url for q in det.questionnaires)]
            sel = add(template, adaptive_form, None)
            for order in related or orders:
                add(template, adaptive_form, order)
            for o, det in determinations:
                if o in sel.orders:
                    add(template, adaptive_form, None, det.doc_purpose)
    else:
        for order, det in determinations:
            names = ", ".join(c.get("code", "") for c in order_codes(order, referenced)) or order.get("resourceType")
            if not det.questionnaires:
                why = (det.reason or {}).get("display")
                text = f"no documentation is required for {names}" + (f": {why}" if why else "")
                notes.append(issue("informational", text[:500], None, "information"))
                continue
            for q in det.questionnaires:
                template = catalog.template_for(q)
                if template is None:
                    notes.append(issue("not-found", f"the payer rules name Questionnaire {q[:200]}, which is not installed", None, "warning"))
                    continue
                add(template, False, order, det.doc_purpose)
        for q in (resolved or {}).get("questionnaires", []):
            template = catalog.template_for(q)
            if template is not None:
                add(template, False, None)

    chosen = list(selected.values())
    if since is not None:
        unchanged = [s for s in chosen if datetime.fromisoformat(s.template.questionnaire["date"] + "T23:59:59+00:00") <= since]
        chosen = [s for s in chosen if s not in unchanged]
        if unchanged and not chosen:
            notes.append(issue("informational", f"none of the {len(unchanged)} applicable Questionnaire(s) changed since {since.isoformat()}", None, "information"))

    base = base_url(call.request)
    bundles = []
    # Each Library once per response (DTR clients and the DTR test kit key libraries by name across
    # every Bundle): a later Bundle relies on the copy an earlier one carries.
    carried: set[str] = set()
    for sel in chosen:
        q_entry, static = _static_entries(sel.template, sel.adaptive, version, base)
        rest = [entry for url, entry in static if url not in carried]
        carried.update(url for url, _ in static if "/Library/" in url)
        qr = draft_response(sel, coverage, referenced, version, base)
        bundle_id = str(uuid.uuid4())
        bundles.append({
            "resourceType": "Bundle",
            "id": bundle_id,
            "meta": {"profile": [DTR_SD + "DTR-QPackageBundle"]},
            "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{bundle_id}"},
            "type": "collection",
            "timestamp": fhir_instant(utcnow()),
            "entry": [q_entry, {"fullUrl": f"urn:uuid:{qr['id']}", "resource": qr}, *rest],
        })
    outcome = {"resourceType": "OperationOutcome", "issue": notes} if notes else None
    if not bundles:
        if outcome is None:
            outcome = {"resourceType": "OperationOutcome", "issue": [issue("informational", "no documentation templates apply", None, "information")]}
        if version == V22:
            return fhir_response({"resourceType": "Parameters", "parameter": [{"name": OUTCOME_PARAM[version], "resource": outcome}]})
        return fhir_response(outcome)
    parameters = [{"name": PACKAGE_PARAM[version], "resource": b} for b in bundles]
    if outcome:
        parameters.append({"name": OUTCOME_PARAM[version], "resource": outcome})
    return fhir_response(orjson.dumps({"resourceType": "Parameters", "parameter": parameters}))


operation("questionnaire-package", ("Questionnaire",), DEFINITION, scopes=(("Questionnaire", "r"),))(questionnaire_package)
# The DTR specification's prose example posts to [base]/$questionnaire-package.
operation("questionnaire-package", (), DEFINITION, scopes=(("Questionnaire", "r"),))(questionnaire_package)
