"""``$validate`` at the system and type level, answered by the profile validator (server.fhir.profiles)."""

from __future__ import annotations

import threading

from fastapi import FastAPI
from fhirpathpy.models import models as _fhirpath_models
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from server.fhir import profiles
from server.fhir.errors import FHIRError, bad_request
from server.fhir.operations import SAME_TYPE, OperationCall, operation
from server.fhir.responses import fhir_response


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
    "instance": False,
    "parameter": [
        {"name": "resource", "use": "in", "min": 0, "max": "1", "type": "Resource"},
        {"name": "mode", "use": "in", "min": 0, "max": "1", "type": "code"},
        {"name": "profile", "use": "in", "min": 0, "max": "1", "type": "uri"},
        {"name": "return", "use": "out", "min": 1, "max": "1", "type": "OperationOutcome"},
    ],
}


def _inputs(call: OperationCall) -> tuple[dict, str | None]:
    body = call.body
    profile = next((v for k, v in call.query if k == "profile"), None)
    if isinstance(body, dict) and body.get("resourceType") == "Parameters" and call.resource_type != "Parameters":
        resource = None
        for p in body.get("parameter") or []:
            if not isinstance(p, dict):
                continue
            if p.get("name") == "resource":
                resource = p.get("resource")
            elif p.get("name") == "profile":
                profile = p.get("valueUri") or p.get("valueCanonical") or p.get("valueString") or profile
            elif p.get("name") == "mode" and p.get("valueCode") not in (None, "create", "update", "no-action"):
                raise bad_request(f"mode {p.get('valueCode')!r} is not supported (create, update or no-action)", "mode")
        if resource is None:
            raise bad_request("the Parameters have no 'resource' parameter to validate", "Parameters.parameter")
        body = resource
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise bad_request("the body is not a FHIR resource (a JSON object with a resourceType)")
    if call.resource_type and body["resourceType"] != call.resource_type:
        raise bad_request(f"a {body['resourceType'][:64]} was posted to {call.resource_type}/$validate", "resourceType")
    if body["resourceType"] not in RESOURCE_TYPES:
        raise bad_request(f"'{body['resourceType'][:64]}' is not a FHIR R4 resource type", "resourceType")
    if profile is not None and (not isinstance(profile, str) or not profile.strip()):
        raise bad_request("profile must be a canonical URL", "profile")
    return body, profile


async def _validate(call: OperationCall) -> Response:
    resource, profile = _inputs(call)
    try:
        outcome = await run_in_threadpool(profiles.validate, resource, profile)
    except profiles.UnknownProfile:
        raise FHIRError.single(400, "not-supported", f"profile {profile[:200]} is not known to this server", "profile") from None
    except profiles.TooCostly as exc:
        raise FHIRError.single(400, "too-costly", str(exc)) from None
    return fhir_response(outcome, 200)


operation("validate", (), VALIDATE_DEFINITION, scopes=((SAME_TYPE, "c"),))(_validate)
operation("validate", RESOURCE_TYPES, VALIDATE_DEFINITION, scopes=((SAME_TYPE, "c"),))(_validate)


def install(app: FastAPI) -> None:
    """Load and index the packages at start-up, in the background; the first validation waits for it."""

    async def start(state) -> None:
        threading.Thread(target=profiles.registry, name="fhir-packages", daemon=True).start()

    app.state.startup_steps.append(start)
