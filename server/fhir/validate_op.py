"""``$validate`` at the system, type and instance level, answered by the profile validator
(server.fhir.profiles), as FHIR's OperationDefinition ``Resource-validate`` describes it.

At the instance level (``/fhir/{type}/{id}/$validate``) the resource validated is the one supplied,
or, when none is, the stored one (read through the caller's repository, so isolation and scopes
apply). ``mode`` says what the check is for: ``create`` (type level: a new resource), ``update``
(the resource as it would replace ``{type}/{id}``: its id must be that id), ``delete`` (instance
level: whether ``{type}/{id}`` may be deleted; Precert keeps no referential constraints, so an
existing resource may) and ``profile`` (only conformance to the profile). Validation problems are
issues of a ``200`` OperationOutcome; a request that cannot be validated at all is a 4xx.
"""

from __future__ import annotations

import threading

from fastapi import FastAPI
from fhirpathpy.models import models as _fhirpath_models
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from server.fhir import profiles
from server.fhir.errors import FHIRError, bad_request, gone, not_found
from server.fhir.operations import SAME_TYPE, OperationCall, operation
from server.fhir.repository import Repository
from server.fhir.responses import fhir_response

MODES = ("create", "update", "delete", "profile", "no-action")


def _resource_types() -> tuple[str, ...]:
    parents = _fhirpath_models["r4"]["type2Parent"]

    def is_resource(name: str) -> bool:
        while name in parents:
            name = parents[name]
            if name in ("Resource", "DomainResource"):
                return True
        return False
    return tuple(sorted(t for t in parents if is_resource(t)))


RESOURCE_TYPES = _resource_types()

VALIDATE_DEFINITION = {
    "resourceType": "OperationDefinition",
    "id": "Resource-validate",
    "url": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    "name": "Validate",
    "status": "active",
    "kind": "operation",
    "code": "validate",
    "resource": ["Resource"],
    "system": True,
    "type": True,
    "instance": True,
    "parameter": [
        {"name": "resource", "use": "in", "min": 0, "max": "1", "type": "Resource"},
        {"name": "mode", "use": "in", "min": 0, "max": "1", "type": "code"},
        {"name": "profile", "use": "in", "min": 0, "max": "1", "type": "uri"},
        {"name": "return", "use": "out", "min": 1, "max": "1", "type": "OperationOutcome"},
    ],
}


def _inputs(call: OperationCall) -> tuple[dict | None, str | None, str | None]:
    """(resource or None, profile, mode) from the body and the query."""
    body = call.body
    query = dict(call.query)
    profile, mode = query.get("profile"), query.get("mode")
    if isinstance(body, dict) and body.get("resourceType") == "Parameters" and call.resource_type != "Parameters":
        resource = None
        for p in body.get("parameter") or []:
            if not isinstance(p, dict):
                continue
            if p.get("name") == "resource":
                resource = p.get("resource")
            elif p.get("name") == "profile":
                profile = p.get("valueUri") or p.get("valueCanonical") or p.get("valueString") or profile
            elif p.get("name") == "mode":
                mode = p.get("valueCode")
        if resource is None and call.resource_id is None:
            raise bad_request("the Parameters have no 'resource' parameter to validate", "Parameters.parameter")
        body = resource
    if mode is not None and mode not in MODES:
        raise bad_request(f"mode {str(mode)[:40]!r} is not supported ({', '.join(MODES[:4])})", "mode")
    if body is not None:
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise bad_request("the body is not a FHIR resource (a JSON object with a resourceType)")
        if call.resource_type and body["resourceType"] != call.resource_type:
            raise bad_request(f"a {body['resourceType'][:64]} was posted to {call.resource_type}/$validate", "resourceType")
        if body["resourceType"] not in RESOURCE_TYPES:
            raise bad_request(f"'{body['resourceType'][:64]}' is not a FHIR R4 resource type", "resourceType")
    elif call.resource_id is None:
        raise bad_request("nothing to validate: send the resource, or call {type}/{id}/$validate for a stored one")
    if profile is not None and (not isinstance(profile, str) or not profile.strip()):
        raise bad_request("profile must be a canonical URL", "profile")
    return body, profile, mode


def _mode_issues(call: OperationCall, resource: dict, mode: str | None) -> list[dict]:
    """What ``mode`` adds to the profile check."""
    out: list[dict] = []
    rid = resource.get("id")
    if mode == "update":
        if call.resource_id is not None and rid != call.resource_id:
            out.append(profiles._issue("error", "invariant", "id-mismatch", f"{resource['resourceType']}.id",
                                       f"an update of {call.resource_type}/{call.resource_id} must carry id {call.resource_id!r}, not {rid!r}"))
        elif call.resource_id is None and not rid:
            out.append(profiles._issue("error", "required", "cardinality", f"{resource['resourceType']}.id",
                                       "a resource validated for update needs its id"))
    return out


async def _stored(call: OperationCall) -> dict:
    stored = await Repository.of(call.request).read(call.resource_type, call.resource_id)
    if stored is None:
        raise not_found(f"{call.resource_type}/{call.resource_id} is not known")
    if stored.deleted:
        raise gone(f"{call.resource_type}/{call.resource_id} was deleted")
    return stored.resource


async def _validate(call: OperationCall) -> Response:
    resource, profile, mode = _inputs(call)
    if mode == "delete":
        if call.resource_id is None:
            raise bad_request("mode delete asks whether a stored resource may be deleted: call {type}/{id}/$validate", "mode")
        await _stored(call)
        return fhir_response({"resourceType": "OperationOutcome", "issue": [{
            "severity": "information", "code": "informational",
            "diagnostics": f"{call.resource_type}/{call.resource_id} may be deleted: nothing in this server depends on it being kept"}]}, 200)
    if mode == "create" and call.resource_id is not None:
        raise bad_request("mode create validates a new resource: call {type}/$validate", "mode")
    if resource is None:
        resource = await _stored(call)
    try:
        outcome = await run_in_threadpool(profiles.validate, resource, profile)
    except profiles.UnknownProfile:
        raise FHIRError.single(400, "not-supported", f"profile {profile[:200]} is not known to this server", "profile") from None
    except profiles.TooCostly as exc:
        raise FHIRError.single(400, "too-costly", str(exc)) from None
    extra = _mode_issues(call, resource, mode or ("update" if call.resource_id is not None else None))
    if extra:
        kept = [i for i in outcome["issue"] if i.get("severity") != "information" or i.get("diagnostics") != "no issues"]
        outcome = {**outcome, "issue": extra + kept}
    return fhir_response(outcome, 200)


operation("validate", (), VALIDATE_DEFINITION, scopes=((SAME_TYPE, "c"),))(_validate)
operation("validate", RESOURCE_TYPES, VALIDATE_DEFINITION, instance_level=True, methods=("GET", "POST"),
          scopes=((SAME_TYPE, "c"),))(_validate)


def install(app: FastAPI) -> None:
    """Load and index the packages at start-up, in the background; the first validation waits for it."""

    async def start(state) -> None:
        threading.Thread(target=profiles.registry, name="fhir-packages", daemon=True).start()

    app.state.startup_steps.append(start)
