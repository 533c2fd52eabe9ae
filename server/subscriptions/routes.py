"""Installs topic-based subscriptions: checks on /fhir/Subscription writes, the notification worker
and ``$status``."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

from capability.statement import add_resource_extension
from server.fhir.errors import not_found
from server.fhir.operations import OperationCall, operation
from server.fhir.repository import Repository
from server.fhir.responses import base_url, fhir_response
from server.storage import fhir_instant, utcnow
from server.subscriptions.model import PAS_TOPIC
from server.subscriptions.service import SubscriptionService

STATUS_DEFINITION = {
    "resourceType": "OperationDefinition",
    "url": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status",
    "name": "SubscriptionStatus",
    "status": "active",
    "kind": "operation",
    "code": "status",
    "resource": ["Subscription"],
    "system": False,
    "type": True,
    "instance": True,
    "parameter": [
        {"name": "id", "use": "in", "min": 0, "max": "*", "type": "id"},
        {"name": "return", "use": "out", "min": 1, "max": "1", "type": "Bundle"},
    ],
}


async def _status(call: OperationCall) -> Response:
    state = call.request.app.state.precert
    service = state.services["subscriptions"]
    ids = [call.resource_id] if call.resource_id else [v for k, v in call.query if k == "id"]
    if isinstance(call.body, dict) and call.body.get("resourceType") == "Parameters":
        ids += [p.get("valueId") or p.get("valueString") for p in call.body.get("parameter") or [] if p.get("name") == "id"]
    base = base_url(call.request)
    entries = []
    repo = Repository.of(call.request)
    if not ids:
        found, _ = await repo.search("Subscription", None, scoped=False, count=100, with_total=False)
    else:
        found = await repo.read_many((f"Subscription/{i}" for i in ids if i), scoped=False)
    for stored in found:
        params = await service.status(stored.id, stored.resource, stored.owner, base)
        entries.append({"fullUrl": f"urn:uuid:{stored.id}-status", "resource": params, "search": {"mode": "match"}})
    if call.resource_id and not entries:
        raise not_found(f"Subscription/{call.resource_id} is not known")
    return fhir_response({"resourceType": "Bundle", "type": "searchset", "timestamp": fhir_instant(utcnow()), "total": len(entries), "entry": entries})


def install(app: FastAPI) -> None:

    add_resource_extension("Subscription", {
        "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical",
        "valueCanonical": PAS_TOPIC,
    })

    operation("status", ["Subscription"], STATUS_DEFINITION, instance_level=True, methods=("GET", "POST"),
              scopes=(("Subscription", "r"),))(_status)

    async def start(state) -> None:
        service = SubscriptionService(state)
        await service.ensure_indexes()
        state.services["subscriptions"] = service
        state.before_write_hooks.append(service.before_write)
        service.listen(state.events)
        service.start()

    async def stop(state) -> None:
        service = state.services.get("subscriptions")
        if service:
            await service.stop()

    app.state.startup_steps.append(start)
    app.state.shutdown_steps.append(stop)
