"""CRD discovery, and the prefetch template dialects Precert renders when it fetches data itself."""

from __future__ import annotations

import json
import re

import pytest

from cds_hooks.prefetch import TemplateError, evaluate_path, render
from tests.support import CRD_FIXTURES
from tests.test_crd_conformance import collection, service_request

HOOKS = {"order-sign", "order-select", "order-dispatch", "appointment-book", "encounter-start", "encounter-discharge"}
CARD_TYPES = {"coverage-info", "guideline", "limits", "network", "therapy-alternatives-opt", "therapy-alternatives-req", "insurance"}


@pytest.fixture(scope="module")
def services(client):
    r = client.get("/cds-services", headers={"Accept": "application/json"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    return r.json()["services"]


def test_one_service_per_hook(services):
    assert sorted(s["hook"] for s in services) == sorted(HOOKS)
    assert all(s["id"] == f"{s['hook']}-crd" and s["title"] and s["description"] for s in services)


def test_prefetch_templates_are_the_crd_standard_ones(services):
    ig = {s["hook"]: s["prefetch"] for s in json.loads((CRD_FIXTURES / "CRDServices.json").read_text())["services"]}
    for s in services:
        assert s["prefetch"] == ig[s["hook"]], s["hook"]


def test_version_extension(services):
    for s in services:
        versions = s["extension"]["davinci-crd.version"]
        assert versions and all(re.match(r"^[1-9]\d*\.[1-9]\d*$", v) for v in versions)  # crdver-1


def test_configuration_options(services):
    for s in services:
        options = s["extension"]["davinci-crd.configuration-options"]
        for key in ("code", "name", "description"):
            values = [o[key] for o in options]
            assert len(values) == len(set(values)), (s["hook"], key)  # dev-8
        for o in options:
            assert o["type"] in ("boolean", "integer") and "default" in o
            assert isinstance(o["default"], bool) == (o["type"] == "boolean")
        codes = {o["code"] for o in options}
        assert "max-cards" in codes and codes - {"max-cards"} <= CARD_TYPES
        assert "coverage-info" in codes


def test_secondary_hooks_offer_no_alternatives_where_they_cannot_give_them(services):
    by_hook = {s["hook"]: {o["code"] for o in s["extension"]["davinci-crd.configuration-options"]} for s in services}
    assert "therapy-alternatives-opt" not in by_hook["order-dispatch"]
    assert "therapy-alternatives-opt" in by_hook["order-sign"]


# ----------------------------------------------------------------------------- template rendering
CONTEXT = {"patientId": "p1", "encounterId": "e1", "userId": "Practitioner/u1",
           "draftOrders": collection(service_request("sr1", "70551"), service_request("sr2", "99213"),
                                     {"resourceType": "MedicationRequest", "id": "mr1", "medicationReference": {"reference": "Medication/m1"},
                                      "requester": {"reference": "https://ehr/fhir/PractitionerRole/r1"}})}


@pytest.mark.parametrize("template,expected", [
    ("Patient/{{context.patientId}}", "Patient/p1"),
    ("Coverage?patient={{context.patientId}}&status=active", "Coverage?patient=p1&status=active"),
    # CDS Hooks 2.0 / CRD 2.0.1 style, with _include
    ("ServiceRequest?_id={{context.draftOrders.ServiceRequest.id}}&_include=ServiceRequest:performer", "ServiceRequest?_id=sr1,sr2&_include=ServiceRequest:performer"),
    ("Encounter?_id={{context.encounterId}}&_include=Encounter:location", "Encounter?_id=e1&_include=Encounter:location"),
    # CRD 2.2 simpler FHIRPath
    ("Medication?_id={{context.draftOrders.entry.resource.ofType(MedicationRequest).medication.resolve().id}}", "Medication?_id=m1"),
    ("PractitionerRole?_id={{context.draftOrders.entry.resource.requester.resolve().ofType(PractitionerRole).id}}", "PractitionerRole?_id=r1"),
    ("Practitioner?_id={{context.draftOrders.entry.resource.requester.resolve().ofType(Practitioner).id|%roles.entry.resource.practitioner.resolve().id}}",
     "Practitioner?_id=prac-001,x9"),
    ("Device?_id={{context.draftOrders.entry.resource.ofType(DeviceRequest).code.resolve().id}}", None),
])
def test_both_template_dialects_render(template, expected):
    results = {"roles": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "PractitionerRole", "id": "r1",
                                                                          "practitioner": {"reference": "Practitioner/x9"}}}]}}
    assert render(template, CONTEXT, results) == expected


def test_extension_and_value_steps():
    ctx = {"appointments": collection({"resourceType": "Appointment", "id": "a1", "basedOn": [{"extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/alternate-reference", "valueReference": {"reference": "DeviceRequest/d1"}}]}]})}
    expr = ("context.appointments.entry.resource.basedOn.extension('http://hl7.org/fhir/StructureDefinition/alternate-reference')"
            ".value.resolve().ofType(DeviceRequest).id")
    assert evaluate_path(expr, ctx, {}) == ["d1"]


def test_unsupported_template_functions_are_refused():
    with pytest.raises(TemplateError):
        render("X?_id={{context.draftOrders.entry.resource.where(id='x').id}}", CONTEXT, {})
    with pytest.raises(TemplateError):
        render("X?_id={{patientId}}", CONTEXT, {})


def test_the_capability_statement_claims_crd_server(client):
    cs = client.get("/fhir/metadata").json()
    assert "http://hl7.org/fhir/us/davinci-crd/CapabilityStatement/crd-server" in cs["instantiates"]
