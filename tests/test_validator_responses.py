"""Precert's own answers checked against the profiles the IGs say they must meet.

``conformance_errors`` is the helper other suites can call on any response: zero errors is the bar.
"""

from __future__ import annotations

import pytest

from server.fhir import profiles
from tests.pas_support import CPT, pas_request, submit

PAS_RESPONSE_BUNDLE = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-pas-response-bundle"


def conformance_errors(resource: dict, profile: str, package: str | None = None) -> list[str]:
    """Every error the validator finds, as ``location [key] message`` lines."""
    outcome = profiles.validate(resource, profile=profile, package=package)
    return [f"{i['expression'][0]} [{i['details']['coding'][0]['code']}] {i['diagnostics']}" for i in profiles.errors(outcome)]


OUTCOMES = {
    "approved": dict(),
    "pended": dict(name="Bundle-SurgicalRequestBundleExample.json"),
    "denied": dict(code=(CPT, "15830")),
}


@pytest.mark.parametrize("version", ["2.0.1", "2.2.1"])
@pytest.mark.parametrize("outcome", sorted(OUTCOMES))
def test_pas_response_bundle_meets_the_response_bundle_profile(client, version, outcome):
    body = submit(client, pas_request(version, **OUTCOMES[outcome])).json()
    errors = conformance_errors(body, PAS_RESPONSE_BUNDLE, f"hl7.fhir.us.davinci-pas-{version}")
    print("\n".join(errors))
    assert errors == []


CRD = "hl7.fhir.us.davinci-crd-2.0.1"
COVERAGE_INFORMATION = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"


def test_crd_system_action_resources_meet_their_crd_profile_and_coverage_information(client):
    from tests.test_crd_conformance import call, order_sign, service_request

    body = order_sign(service_request("sr-mri", "70551"), service_request("sr-visit", "99213"))
    out = call(client, body).json()
    resources = [a["resource"] for a in out.get("systemActions", []) if "resource" in a]
    assert resources
    for resource in resources:
        exts = [e for e in resource.get("extension", []) if e["url"] == COVERAGE_INFORMATION]
        assert exts
        profile = f"http://hl7.org/fhir/us/davinci-crd/StructureDefinition/profile-{resource['resourceType'].lower()}"
        assert conformance_errors(resource, profile, CRD) == []


def test_a_broken_coverage_information_is_caught():
    resource = {"resourceType": "ServiceRequest", "status": "draft", "intent": "order", "subject": {"reference": "Patient/p"},
                "extension": [{"url": COVERAGE_INFORMATION, "extension": [{"url": "covered", "valueCode": "maybe"}]}]}
    errors = conformance_errors(resource, "http://hl7.org/fhir/StructureDefinition/ServiceRequest", CRD)
    assert any(e.startswith("ServiceRequest.extension[0].extension[0].valueCode [binding]") for e in errors)
    assert any("[slice-cardinality] slice extension:coverage-assertion-id" in e for e in errors)
