"""One CRD hook call: validate, gather the data, ask the payer rules, answer with actions and cards.

The steps, in the order they run:
1. :func:`validate_request`: CDS Hooks shape (400), hook context per hook (400), CRD constraints (422),
   the requested CRD version (400 when unsupported) and the client's configuration.
2. :func:`gather`: context and prefetch into one pool; what is still missing is fetched from the
   client's FHIR server; 412 only when essential data (the Coverage, the dispatched orders, the
   encounter) can be had neither way.
3. the orders in scope for the hook become :class:`EvaluationInput` s, one per order and Coverage,
   evaluated by the same rules PAS uses.
4. coverage-information goes on each order as an ``update`` systemAction; cards for what else the
   payer has to say (instructions, policy links, alternatives, forms where DTR is unavailable,
   coverage corrections), cut to ``max-cards``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import orjson
from cachetools import LRUCache

from cds_hooks import cards as cardlib
from cds_hooks.config import CRDConfig, parse_version
from cds_hooks.coverage_info import EXT_URL, CRDVersion, coverage_information, with_coverage_information
from cds_hooks.discovery import PRIMARY, option_defaults
from cds_hooks.ids import new_hex
from cds_hooks.prefetch import DataPool, Queries, reference_parts, resources_in
from cds_hooks.templates import PREFETCH
from server.fhir import profiles
from server.fhir.errors import FHIRError, issue
from server.rules.model import Determination, EvaluationInput

log = logging.getLogger("precert.crd")

ORDER_TYPES = ("CommunicationRequest", "DeviceRequest", "MedicationRequest", "NutritionOrder", "ServiceRequest", "VisionPrescription")
NPI = "http://hl7.org/fhir/sid/us-npi"
BILLING_OPTIONS = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-billing-options"

# Which resource type each standard prefetch key holds.
KEY_TYPES = {
    "patient": "Patient", "encounter": "Encounter", "coverage": "Coverage", "devices": "Device", "medications": "Medication",
    "practitionerRoles": "PractitionerRole", "practitioners": "Practitioner", "organizations": "Organization",
    "locations": "Location", "communicationRequests": "CommunicationRequest", "deviceRequests": "DeviceRequest",
    "medicationRequests": "MedicationRequest", "nutritionOrders": "NutritionOrder", "serviceRequests": "ServiceRequest",
    "visionPrescriptions": "VisionPrescription",
}


def bad(message: str, expression: str | None = None, status: int = 400, code: str = "invalid") -> FHIRError:
    return FHIRError(status, [issue(code, message, expression)])


# ----------------------------------------------------------------------------- request validation
@dataclass
class HookRequest:
    hook: str
    service_id: str
    body: dict
    hook_instance: str
    context: dict
    prefetch: dict
    fhir_server: str | None
    token: str | None
    version: CRDVersion
    options: dict
    ignored_options: list[str] = field(default_factory=list)

    @property
    def primary(self) -> bool:
        return self.hook in PRIMARY

    @property
    def patient_id(self) -> str:
        return self.context["patientId"]


def _bundle(value: Any, name: str, entry_type: str | tuple[str, ...] | None = None) -> list[dict]:
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        raise bad(f"context.{name} must be a FHIR Bundle", f"context.{name}")
    entries = value.get("entry")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise bad(f"context.{name}.entry must be a list", f"context.{name}.entry")
    out = []
    for i, e in enumerate(entries):
        res = e.get("resource") if isinstance(e, dict) else None
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            raise bad(f"context.{name}.entry[{i}] has no resource", f"context.{name}.entry[{i}].resource")
        if res.get("id") is not None and not isinstance(res.get("id"), str):
            raise bad(f"context.{name}.entry[{i}].resource.id must be a string", f"context.{name}.entry[{i}].resource.id")
        out.append(res)
    if value.get("type") not in (None, "collection"):
        raise bad(f"context.{name} must be a Bundle of type 'collection' (CRD profile-bundle-request)", f"context.{name}.type",
                  422, "business-rule")
    if entry_type:
        types = (entry_type,) if isinstance(entry_type, str) else entry_type
        if not any(r["resourceType"] in types for r in out):
            raise bad(f"context.{name} holds no {' or '.join(types)}", f"context.{name}", 422, "business-rule")
    return out


def _string(context: dict, key: str, required: bool = True) -> str | None:
    value = context.get(key)
    if value is None:
        if required:
            raise bad(f"context.{key} is required for this hook", f"context.{key}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise bad(f"context.{key} must be a non-empty string", f"context.{key}")
    return value


def _order_ref(value: str, where: str) -> None:
    parts = reference_parts(value)
    if not parts:
        raise bad(f"{where} must be a reference 'Type/id', not '{value[:80]}'", where)
    if parts[0] not in ORDER_TYPES:
        raise bad(f"{where} refers to a {parts[0][:40]}; orders are {', '.join(ORDER_TYPES)}", where, 422, "business-rule")


def validate_request(body: Any, service_hook: str, service_id: str, config: CRDConfig) -> HookRequest:
    if not isinstance(body, dict):
        raise bad("a CDS Hooks request is a JSON object")
    hook = body.get("hook")
    if not isinstance(hook, str) or not hook:
        raise bad("'hook' is required", "hook")
    if hook != service_hook:
        raise bad(f"this service ({service_id}) answers '{service_hook}', not '{hook[:60]}'", "hook")
    instance = body.get("hookInstance")
    if not isinstance(instance, str) or not instance.strip():
        raise bad("'hookInstance' is required", "hookInstance")
    if len(instance) > 200:
        raise bad("'hookInstance' is too long", "hookInstance")
    context = body.get("context")
    if not isinstance(context, dict):
        raise bad("'context' must be a JSON object", "context")
    fhir_server = body.get("fhirServer")
    if fhir_server is not None and (not isinstance(fhir_server, str) or not fhir_server.startswith(("http://", "https://"))):
        raise bad("'fhirServer' must be an http(s) URL", "fhirServer")
    auth = body.get("fhirAuthorization")
    token = None
    if auth is not None:
        if not isinstance(auth, dict) or not isinstance(auth.get("access_token"), str) or not auth["access_token"]:
            raise bad("'fhirAuthorization' must be an object with an 'access_token'", "fhirAuthorization")
        if fhir_server is None:
            raise bad("'fhirServer' is required when 'fhirAuthorization' is given (CDS Hooks cds-r-1)", "fhirServer")
        if auth.get("token_type") not in (None, "Bearer", "bearer"):
            raise bad("'fhirAuthorization.token_type' must be 'Bearer'", "fhirAuthorization.token_type")
        token = auth["access_token"]
    prefetch = body.get("prefetch")
    if prefetch is None:
        prefetch = {}
    if not isinstance(prefetch, dict):
        raise bad("'prefetch' must be a JSON object", "prefetch")
    for key, value in prefetch.items():
        if value is not None and not (isinstance(value, dict) and isinstance(value.get("resourceType"), str)):
            raise bad(f"prefetch.{key[:60]} must be a FHIR resource, a Bundle or null", f"prefetch.{key[:60]}")
    ext = body.get("extension")
    if ext is None:
        ext = {}
    if not isinstance(ext, dict):
        raise bad("'extension' must be a JSON object", "extension")

    requested = ext.get("davinci-crd.requestedVersion")
    if requested is None:
        version = config.default_version
    else:
        version = parse_version(requested)
        if version is None:
            raise bad(f"CRD version '{str(requested)[:20]}' is not supported; Precert answers 2.0 (CRD 2.0.1) and 2.2",
                      "extension.davinci-crd.requestedVersion", code="not-supported")

    options = option_defaults(hook)
    ignored: list[str] = []
    configuration = ext.get("davinci-crd.configuration")
    if configuration is not None and not isinstance(configuration, dict):
        raise bad("'davinci-crd.configuration' must be a JSON object", "extension.davinci-crd.configuration")
    for code, value in (configuration or {}).items():
        if code not in options:
            ignored.append(code)  # unknown options are ignored (CRD dev-14)
        elif code == "max-cards":
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                options[code] = value
            else:
                ignored.append(code)
        elif isinstance(value, bool):
            options[code] = value
        else:
            ignored.append(code)

    _validate_context(hook, context)
    _validate_fhir(context, prefetch)
    return HookRequest(hook, service_id, body, instance, context, prefetch, fhir_server, token, version, options, ignored)


def _validate_context(hook: str, context: dict) -> None:
    _string(context, "patientId")
    if hook != "order-dispatch":
        _string(context, "userId")
    if hook in ("order-sign", "order-select"):
        orders = _bundle(context.get("draftOrders"), "draftOrders", ORDER_TYPES)
        _string(context, "encounterId", required=False)
        if hook == "order-select":
            sel = context.get("selections")
            if not isinstance(sel, list) or not sel or not all(isinstance(s, str) and s for s in sel):
                raise bad("context.selections must be a non-empty list of 'Type/id' strings", "context.selections")
            present = {f"{r['resourceType']}/{r.get('id')}" for r in orders}
            for s in sel:
                parts = reference_parts(s)
                if not parts or f"{parts[0]}/{parts[1]}" not in present:
                    raise bad(f"context.selections names '{s[:80]}', which is not in draftOrders", "context.selections", 422, "business-rule")
    elif hook == "order-dispatch":
        _string(context, "performer", required=False)
        dispatched = context.get("dispatchedOrders")
        single = context.get("order")  # the CRD 2.0.1-era shape (Inferno, RI): one "Type/id"
        if dispatched is None and single is None:
            raise bad("context.dispatchedOrders is required for order-dispatch", "context.dispatchedOrders")
        if dispatched is not None:
            if not isinstance(dispatched, list) or not dispatched or not all(isinstance(d, str) for d in dispatched):
                raise bad("context.dispatchedOrders must be a non-empty list of 'Type/id' strings", "context.dispatchedOrders")
            for i, d in enumerate(dispatched):
                _order_ref(d, f"context.dispatchedOrders[{i}]")
        if single is not None:
            if not isinstance(single, str):
                raise bad("context.order must be a 'Type/id' string", "context.order")
            _order_ref(single, "context.order")
        tasks = context.get("fulfillmentTasks")
        if tasks is not None and (not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks)):
            raise bad("context.fulfillmentTasks must be a list of Task resources", "context.fulfillmentTasks")
    elif hook == "appointment-book":
        appts = _bundle(context.get("appointments"), "appointments", "Appointment")
        for i, a in enumerate(appts):
            if a["resourceType"] == "Appointment" and a.get("status") not in (None, "proposed"):
                raise bad(f"context.appointments entry {i} has status '{str(a.get('status'))[:20]}'; booked appointments are 'proposed'",
                          f"context.appointments.entry[{i}].resource.status", 422, "business-rule")
        _string(context, "encounterId", required=False)
    else:
        _string(context, "encounterId")


class ValidationCache:
    """Profile validation errors by resource content. An EHR sends the same Patient, Coverage and
    practitioners in the prefetch of call after call, and validating them (FHIRPath invariants
    included) was three quarters of an order-sign call's CPU; the result depends only on the
    resource's JSON and the IG packages, which are fixed for the life of the process. Bounded, least
    recently used dropped first; resources over ``MAX_BYTES`` are validated every time rather than held."""

    MAX_ENTRIES = 2048
    MAX_BYTES = 64 * 1024

    def __init__(self) -> None:
        self._found: LRUCache[bytes, list[dict]] = LRUCache(maxsize=self.MAX_ENTRIES)
        self._lock = threading.Lock()  # validation runs in worker threads

    def errors(self, resource: dict) -> list[dict]:
        try:
            key = orjson.dumps(resource)
        except orjson.JSONEncodeError:  # e.g. an integer past 64 bits: validated, not cached
            key = b""
        if not key or len(key) > self.MAX_BYTES:
            return list(profiles.errors(profiles.validate(resource)))
        with self._lock:
            found = self._found.get(key)
        if found is None:
            found = list(profiles.errors(profiles.validate(resource)))
            with self._lock:
                self._found[key] = found
        return found


_VALIDATED = ValidationCache()

# Context keys that hold FHIR resources (a Bundle, or a list of resources).
FHIR_CONTEXT_KEYS = ("draftOrders", "appointments", "fulfillmentTasks")


def _validate_fhir(context: dict, prefetch: dict) -> None:
    """Context resources and prefetch must be valid FHIR R4: every error the validator finds in them
    is listed in one 400, located from the request root (``context.draftOrders.entry[0].resource.status``).

    Each is checked against its base resource type and the profiles it claims in ``meta.profile`` (those
    the shipped packages define; others are only warnings), as the official validator would."""
    items: list[tuple[str, dict]] = []
    for key in FHIR_CONTEXT_KEYS:
        value = context.get(key)
        if isinstance(value, dict):
            items.append((f"context.{key}", value))
        elif isinstance(value, list):
            items += [(f"context.{key}[{i}]", v) for i, v in enumerate(value) if isinstance(v, dict)]
    items += [(f"prefetch.{key[:60]}", value) for key, value in prefetch.items() if isinstance(value, dict)]
    problems: list[dict] = []
    for where, resource in items:
        try:
            found_errors = _VALIDATED.errors(resource)
        except profiles.UnknownProfile:
            problems.append(issue("invalid", f"{where} is a '{str(resource.get('resourceType'))[:40]}', which is not an R4 resource type", where))
            continue
        except profiles.TooCostly as exc:
            raise bad(f"{where}: {exc}", where, code="too-costly") from None
        for found in found_errors:
            location = (found.get("expression") or [""])[0]
            location = where + location[location.find("."):] if "." in location else where
            key = found.get("details", {}).get("coding", [{}])[0].get("code")
            problems.append(issue(found.get("code", "invalid"), f"{location}: {found['diagnostics']}" + (f" [{key}]" if key else ""), location))
    if problems:
        raise FHIRError(400, problems)


# ----------------------------------------------------------------------------- gathering data
@dataclass
class Gathered:
    pool: DataPool
    coverages: list[dict]
    orders: list[dict]
    fetched: list[str]
    fetch_errors: dict[str, str]
    coverage_known: bool


def _norm_key(key: str) -> str:
    k = key.lower()
    return k[:-1] if k.endswith("s") else k


def _order_targets(req: HookRequest, pool: DataPool) -> list[str]:
    if req.hook == "order-dispatch":
        refs = list(req.context.get("dispatchedOrders") or [])
        if isinstance(req.context.get("order"), str):
            refs.append(req.context["order"])
        out = []
        for ref in refs:
            parts = reference_parts(ref)
            if parts and f"{parts[0]}/{parts[1]}" not in out:
                out.append(f"{parts[0]}/{parts[1]}")
        return out
    return []


async def gather(req: HookRequest, fetcher_factory) -> Gathered:
    pool = DataPool()
    ctx = req.context
    for name in ("draftOrders", "appointments"):
        pool.add_all(resources_in(ctx.get(name)))
    for task in ctx.get("fulfillmentTasks") or []:
        if isinstance(task, dict) and task.get("resourceType"):
            pool.add(task)
    satisfied: set[str] = set()
    coverage_null = False
    for key, value in req.prefetch.items():
        if isinstance(value, dict) and value.get("resourceType") == "OperationOutcome":
            continue  # the client could not get it: Precert will try
        satisfied.add(_norm_key(key))
        found = resources_in(value)
        pool.add_all(found)
        if "coverage" in key.lower() and (value is None or value.get("resourceType") == "Bundle"):
            coverage_null = True  # the client answered for the Coverage: null or an empty search means none
    present_types = set(pool.by_type)

    templates = PREFETCH[req.hook]
    missing = [k for k, t in KEY_TYPES.items() if k in templates and _norm_key(k) not in satisfied and t not in present_types]
    critical = set()
    if "Coverage" not in present_types and not coverage_null:
        critical.add("coverage")
    if req.hook in ("encounter-start", "encounter-discharge") and pool.resolve(f"Encounter/{ctx.get('encounterId')}") is None:
        critical.add("encounter")
    targets = _order_targets(req, pool)
    absent_orders = [t for t in targets if pool.resolve(t) is None]
    for t in absent_orders:
        key = {"CommunicationRequest": "communicationRequests", "DeviceRequest": "deviceRequests", "MedicationRequest": "medicationRequests",
               "NutritionOrder": "nutritionOrders", "ServiceRequest": "serviceRequests", "VisionPrescription": "visionPrescriptions"}[t.split("/")[0]]
        critical.add(key)
        if key not in missing:
            missing.append(key)

    fetched: list[str] = []
    errors: dict[str, str] = {}
    if missing:
        fetcher: Queries | None = fetcher_factory(req)  # None: nowhere to ask
        if fetcher is not None and not req.fhir_server and not critical:
            fetcher = None  # the sandbox's own records stand in only for data the call cannot do without
        if fetcher is None:
            if critical:
                raise bad(f"the request has no prefetch for {', '.join(sorted(critical))} and no fhirServer to query; "
                          "send the prefetch or fhirServer with fhirAuthorization", "prefetch", 412, "incomplete")
        else:
            # Results for %key tokens: prefetch values under Precert's key names, else Bundles built from the pool.
            results: dict = {}
            for key, t in KEY_TYPES.items():
                if key in req.prefetch and not (isinstance(req.prefetch[key], dict) and req.prefetch[key].get("resourceType") == "OperationOutcome"):
                    results[key] = req.prefetch[key]
                elif t in present_types:
                    results[key] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in pool.of_type(t)]}
            ctx_for_templates = dict(ctx)
            if req.hook == "order-dispatch" and "dispatchedOrders" not in ctx and isinstance(ctx.get("order"), str):
                ctx_for_templates["dispatchedOrders"] = [ctx["order"]]
            wanted = [k for k in missing if k in critical] + [k for k in missing if k not in critical]
            errors = await fetcher.run(templates, ctx_for_templates, results, wanted)
            for key in wanted:
                if key in results and key not in errors:
                    fetched.append(key)
                    pool.add_all(resources_in(results[key]))
            failed_critical = sorted(k for k in critical if k in errors)
            if failed_critical:
                raise bad("could not obtain " + "; ".join(f"{k}: {errors[k]}" for k in failed_critical), "prefetch", 412, "incomplete")
            if "coverage" in critical and "coverage" in results and results["coverage"] is None:
                pass  # the token had no value: no coverage
    if req.hook in ("encounter-start", "encounter-discharge") and pool.resolve(f"Encounter/{ctx['encounterId']}") is None:
        raise bad(f"Encounter/{ctx['encounterId'][:60]} could not be obtained from prefetch or the FHIR server", "context.encounterId", 412, "incomplete")
    for t in targets:
        if pool.resolve(t) is None:
            raise bad(f"the dispatched order {t[:80]} could not be obtained from prefetch or the FHIR server", "context.dispatchedOrders", 412, "incomplete")

    coverages = []
    for cov in pool.of_type("Coverage"):
        ben = reference_parts(cov.get("beneficiary"))
        if ben and ben[0] == "Patient" and ben[1] != req.patient_id:
            continue  # another patient's coverage
        if cov.get("status") not in (None, "active"):
            # Kept: the rules answer "no active coverage" for it, which is what the clinician needs to know.
            pass
        coverages.append(cov)
    orders = [pool.resolve(t) for t in targets]
    return Gathered(pool, coverages, [o for o in orders if o], fetched, errors, bool(coverages))


# ----------------------------------------------------------------------------- evaluation inputs
def _codings(cc: Any) -> list[dict]:
    if not isinstance(cc, dict):
        return []
    return [c for c in cc.get("coding") or [] if isinstance(c, dict) and c.get("code")]


def order_codes(resource: dict, pool: DataPool) -> tuple[list[dict], list[dict]]:
    """(codes to evaluate, billing-option codes) for an order or appointment."""
    rtype = resource.get("resourceType")
    codes: list[dict] = []
    billing: list[dict] = []
    if rtype == "ServiceRequest":
        code = resource.get("code") or {}
        codes = _codings(code)
        for e in code.get("extension") or [] if isinstance(code, dict) else []:
            if isinstance(e, dict) and e.get("url") == BILLING_OPTIONS:
                billing += _codings(e.get("valueCodeableConcept"))
    elif rtype == "DeviceRequest":
        codes = _codings(resource.get("codeCodeableConcept"))
        device = pool.resolve(resource.get("codeReference"))
        if device:
            codes += [c for t in ([device.get("type")] if isinstance(device.get("type"), dict) else []) for c in _codings(t)]
    elif rtype == "MedicationRequest":
        codes = _codings(resource.get("medicationCodeableConcept"))
        med = pool.resolve(resource.get("medicationReference"))
        if med:
            codes += _codings(med.get("code"))
    elif rtype == "NutritionOrder":
        codes = _codings((resource.get("oralDiet") or {}).get("type", [{}])[0] if isinstance((resource.get("oralDiet") or {}).get("type"), list) else None)
        codes += _codings((resource.get("enteralFormula") or {}).get("baseFormulaType"))
    elif rtype == "VisionPrescription":
        for spec in resource.get("lensSpecification") or []:
            codes += _codings((spec or {}).get("product"))
    elif rtype == "CommunicationRequest":
        for p in resource.get("payload") or []:
            codes += _codings((p or {}).get("contentCodeableConcept"))
    elif rtype == "Appointment":
        for based in resource.get("basedOn") or []:
            target = pool.resolve(based)
            if target and target.get("resourceType") in ORDER_TYPES:
                c, b = order_codes(target, pool)
                codes += c
                billing += b
        for key in ("serviceType", "reasonCode"):
            for cc in resource.get(key) or []:
                codes += _codings(cc)
        codes += _codings(resource.get("appointmentType"))
    elif rtype == "Encounter":
        for key in ("type",):
            for cc in resource.get(key) or []:
                codes += _codings(cc)
        codes += _codings(resource.get("serviceType"))
    return codes + billing, billing


def _npis(resource: dict | None) -> list[str]:
    if not resource:
        return []
    return [i["value"] for i in resource.get("identifier") or [] if isinstance(i, dict) and i.get("system") == NPI and isinstance(i.get("value"), str)]


def provider_info(refs: list[Any], pool: DataPool) -> tuple[list[str], list[str]]:
    npis: list[str] = []
    orgs: list[str] = []
    for ref in refs:
        res = pool.resolve(ref)
        parts = reference_parts(ref)
        if parts and parts[0] == "Organization":
            orgs.append(f"Organization/{parts[1]}")
        if not res:
            continue
        npis += _npis(res)
        if res.get("resourceType") == "PractitionerRole":
            npis += _npis(pool.resolve(res.get("practitioner")))
            org = res.get("organization")
            op = reference_parts(org)
            if op:
                orgs.append(f"Organization/{op[1]}")
            npis += _npis(pool.resolve(org))
    return list(dict.fromkeys(npis)), list(dict.fromkeys(orgs))


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def evaluation_input(resource: dict, coverage: dict | None, req: HookRequest, pool: DataPool) -> EvaluationInput:
    codes, _ = order_codes(resource, pool)
    refs: list[Any] = []
    for key in ("requester", "performer", "orderer", "prescriber", "sender", "recipient"):
        refs += _as_list(resource.get(key))
    if resource.get("resourceType") == "Appointment":
        refs += [p.get("actor") for p in resource.get("participant") or [] if isinstance(p, dict)]
        for based in resource.get("basedOn") or []:
            target = pool.resolve(based)
            if target:
                refs += _as_list(target.get("requester")) + _as_list(target.get("performer"))
    if resource.get("resourceType") == "Encounter":
        refs += [p.get("individual") for p in resource.get("participant") or [] if isinstance(p, dict)]
        refs += _as_list(resource.get("serviceProvider"))
    if isinstance(req.context.get("performer"), str):
        refs.append(req.context["performer"])
    if isinstance(req.context.get("userId"), str):
        refs.append(req.context["userId"])
    npis, orgs = provider_info(refs, pool)

    encounter = pool.resolve(resource.get("encounter")) if resource.get("resourceType") != "Encounter" else resource
    if encounter is None and isinstance(req.context.get("encounterId"), str):
        encounter = pool.resolve(f"Encounter/{req.context['encounterId']}")
    location = None
    for ref in _as_list(resource.get("locationReference")):
        location = location or pool.resolve(ref)
    if location is None and encounter:
        for loc in encounter.get("location") or []:
            location = location or pool.resolve((loc or {}).get("location"))
    diagnoses: list[dict] = []
    for cc in resource.get("reasonCode") or []:
        diagnoses += _codings(cc)
    for ref in resource.get("reasonReference") or []:
        cond = pool.resolve(ref)
        if cond:
            diagnoses += _codings(cond.get("code"))
    quantity = None
    q = resource.get("quantityQuantity") or (resource.get("dispenseRequest") or {}).get("quantity")
    if isinstance(q, dict) and isinstance(q.get("value"), (int, float)):
        quantity = float(q["value"])
    service_date = None
    for key in ("occurrenceDateTime", "start", "authoredOn"):
        if isinstance(resource.get(key), str):
            service_date = resource[key][:10]
            break
    if service_date is None and isinstance((resource.get("occurrencePeriod") or {}).get("start"), str):
        service_date = resource["occurrencePeriod"]["start"][:10]
    # The rules answer for today unless the order is for a later date.
    today = date.today().isoformat()
    if service_date is None or service_date < today:
        service_date = today
    patient = pool.resolve(f"Patient/{req.patient_id}")
    payer = None
    if coverage:
        for p in coverage.get("payor") or []:
            payer = payer or pool.resolve(p)
    return EvaluationInput(
        codes=codes, coverage=coverage, patient=patient, order=resource, encounter=encounter, provider_ids=npis,
        diagnoses=diagnoses, quantity=quantity, service_date=service_date, location=location, payer=payer, provider_orgs=orgs,
    )


# ----------------------------------------------------------------------------- the answer
@dataclass
class Decision:
    target: str               # "ServiceRequest/1357"
    coverage: str             # "Coverage/cov-001"
    determination: Determination
    assertion_id: str
    label: str                # plain-language name of the order


def in_scope(req: HookRequest, gathered: Gathered) -> list[dict]:
    ctx = req.context
    if req.hook == "order-sign":
        return [r for r in resources_in(ctx["draftOrders"]) if r["resourceType"] in ORDER_TYPES]
    if req.hook == "order-select":
        wanted = {f"{p[0]}/{p[1]}" for p in (reference_parts(s) for s in ctx["selections"]) if p}
        return [r for r in resources_in(ctx["draftOrders"]) if f"{r['resourceType']}/{r.get('id')}" in wanted]
    if req.hook == "order-dispatch":
        return gathered.orders
    if req.hook == "appointment-book":
        return [r for r in resources_in(ctx["appointments"]) if r["resourceType"] == "Appointment"]
    enc = gathered.pool.resolve(f"Encounter/{ctx['encounterId']}")
    return [enc] if enc else []


def label_for(resource: dict, det: Determination | None) -> str:
    ref = f"{resource.get('resourceType')}/{resource.get('id')}"
    code = (det.matched_code if det else None) or {}
    text = code.get("display") or code.get("code")
    return f"{text} ({ref})" if text else ref


def coverage_ref(cov: dict) -> str:
    return f"Coverage/{cov.get('id')}" if cov.get("id") else "Coverage"


async def answer(req: HookRequest, gathered: Gathered, rules, crd_state) -> tuple[dict, list[Decision]]:
    today = date.today().isoformat()
    opts = req.options
    cards: list[tuple[int, dict]] = []
    actions: list[dict] = []
    decisions: list[Decision] = []
    payer = rules.payer
    source_label = payer.name

    coverages = gathered.coverages
    if not coverages:
        if opts.get("coverage-info", True):
            cards.append(cardlib.instructions(
                req, "guideline", f"No active {payer.name} coverage was found for this patient",
                f"Precert found no active coverage for Patient/{req.patient_id} with {payer.name}. "
                "If the patient has coverage with this plan, update the patient's coverage record and try again.",
                source_label, [], priority=1))
        return cardlib.finish(cards, actions, opts), decisions

    if crd_state.config.require_payer_identifier and req.version.is22:
        if len(coverages) != 1:
            raise bad(f"exactly one (the primary) Coverage is expected, not {len(coverages)} (CRD hook-13)", "prefetch.coverage")
        idents = [p.get("identifier") for p in coverages[0].get("payor") or [] if isinstance(p, dict) and isinstance(p.get("identifier"), dict)]
        if not any((i.get("system"), i.get("value")) in {(s, v) for s, v in payer.identifiers} for i in idents):
            raise bad(f"the Coverage's payor.identifier does not name {payer.name} (CRD hook-13)", "Coverage.payor.identifier")

    # One assertion id (and one satisfied-pa-id) per Coverage in this response: CRD 2.0.1 requires
    # repetitions for one Coverage to share it, and distinct Coverages to differ.
    assertion_ids = {id(c): f"precert-{new_hex(20)}" for c in coverages}
    satisfied_ids = {id(c): f"GC-{new_hex(12).upper()}" for c in coverages}
    dtr_cache: dict[str, bool] = {}

    # The payer's own record of each member decides status, period and plan.
    records = {id(c): await crd_state.payer_record(c, rules) for c in coverages}
    effective = {}
    for cov in coverages:
        ours = records[id(cov)]
        effective[id(cov)] = ({**cov, **{k: ours[k] for k in ("status", "period", "class", "payor") if k in ours}}
                              if ours else cov)
        if ours and "period" not in ours:
            effective[id(cov)].pop("period", None)

    for resource in in_scope(req, gathered):
        target = f"{resource['resourceType']}/{resource.get('id')}"
        reps = []
        determinations: list[tuple[dict, Determination]] = []
        for cov in coverages:
            inp = evaluation_input(resource, effective[id(cov)], req, gathered.pool)
            det = rules.evaluate(inp)
            if not inp.codes and det.payer_match and det.coverage_active:
                det = unknown_service(det, resource)
            determinations.append((cov, det))
            indeterminate = None
            if not det.payer_match:
                indeterminate = det.reason["display"] if det.reason else f"This coverage is not with {payer.name}."
            billing = []
            if det.matched_code and det.matched_code in order_codes(resource, gathered.pool)[1]:
                billing = [det.matched_code]  # the assertion applies to this billing option
            billing += [c for c in det.billing_codes if c not in billing]
            reps.append(coverage_information(
                det, coverage_ref=coverage_ref(cov), assertion_id=assertion_ids[id(cov)], today=today, version=req.version,
                secondary=not req.primary, satisfied_pa_id=satisfied_ids[id(cov)], contact={"phone": payer.contact.get("phone"), "name": f"{payer.name} prior authorization"},
                billing_codes=billing, indeterminate=indeterminate,
            ))
            decisions.append(Decision(target, coverage_ref(cov), det, assertion_ids[id(cov)], label_for(resource, det)))

        existing = _unchanged(resource, reps)
        if existing is not None:
            # The order already carries this very coverage-information (an earlier call's answer): no
            # update is sent, and the decisions keep the assertion ids the order holds.
            for d in decisions:
                if d.target == target and d.coverage in existing:
                    d.assertion_id = existing[d.coverage]
        elif opts.get("coverage-info", True) and resource.get("id") and _may_carry(resource, req):
            actions.append({
                "type": "update",
                "description": f"Record {payer.name} coverage requirements on {label_for(resource, determinations[0][1] if determinations else None)}",
                "resource": with_coverage_information(resource, reps),
            })
        if resource.get("resourceType") == "Appointment" and opts.get("coverage-info", True):
            # An appointment based on a ServiceRequest: the ServiceRequest carries the coverage too.
            for based in resource.get("basedOn") or []:
                sr = gathered.pool.resolve(based)
                if sr and sr.get("resourceType") == "ServiceRequest" and sr.get("id") and _unchanged(sr, reps) is None:
                    actions.append({"type": "update", "description": f"Record {payer.name} coverage requirements on ServiceRequest/{sr['id']}",
                                    "resource": with_coverage_information(sr, reps)})

        for cov, det in determinations:
            if not det.payer_match or not det.coverage_active:
                continue
            cards += cardlib.for_determination(req, resource, det, source_label, gathered, crd_state, dtr_cache, payer=payer)
            break  # cards speak for the first (primary) Coverage this payer holds

    if opts.get("insurance", False):
        for cov in coverages:
            fix = crd_state.coverage_correction(cov, records[id(cov)])
            if fix:
                cards_or_action = cardlib.coverage_update(req, cov, fix, source_label)
                if isinstance(cards_or_action, tuple):
                    cards.append(cards_or_action)
                else:
                    actions.append(cards_or_action)
    return cardlib.finish(cards, actions, opts), decisions


def unknown_service(det: Determination, resource: dict) -> Determination:
    """Nothing says what will be done (no code on the order, the appointment or the encounter): the
    answer depends on it, so it is conditional on the detail rather than a guess."""

    what = resource.get("resourceType", "request")
    return replace(det, covered="conditional", pa_needed="conditional", info_needed=["detail"], doc_needed=[], doc_purpose=[],
                   questionnaires=[], reason={"code": None, "system": None,
                                              "display": f"The {what} names no service code, so coverage depends on the service to be performed."},
                   trace=det.trace + [f"No service code on the {what}: coverage is conditional on the service"])


# Sub-extensions that differ between two answers saying the same thing: when the assertion was made and
# the identifiers given to it.
VOLATILE = ("date", "coverage-assertion-id", "satisfied-pa-id")


def _essence(rep: Any) -> str:

    subs = rep.get("extension") if isinstance(rep, dict) else None
    subs = [e for e in subs if isinstance(e, dict) and e.get("url") not in VOLATILE] if isinstance(subs, list) else []
    return json.dumps(sorted(json.dumps(e, sort_keys=True) for e in subs))


def _unchanged(resource: dict, reps: list[dict]) -> dict[str, str] | None:
    """When ``resource`` already carries coverage-information equal to ``reps`` apart from dates and
    identifiers, the {coverage reference: assertion id} it holds; otherwise None (an update is due)."""
    current = [e for e in resource.get("extension") or [] if isinstance(e, dict) and e.get("url") == EXT_URL]
    if not current or sorted(map(_essence, current)) != sorted(map(_essence, reps)):
        return None
    ids: dict[str, str] = {}
    for rep in current:
        subs = {e.get("url"): e for e in rep.get("extension") or [] if isinstance(e, dict)}
        cov = ((subs.get("coverage") or {}).get("valueReference") or {}).get("reference")
        aid = (subs.get("coverage-assertion-id") or {}).get("valueString")
        if isinstance(cov, str) and isinstance(aid, str):
            ids[cov] = aid
    return ids


def _may_carry(resource: dict, req: HookRequest) -> bool:
    # CRD 2.0.1 does not allow coverage-information on VisionPrescription.
    return not (resource.get("resourceType") == "VisionPrescription" and not req.version.is22)


__all__ = ["validate_request", "gather", "answer", "HookRequest", "Decision", "time"]
