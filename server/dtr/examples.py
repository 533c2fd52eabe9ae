"""Ready-made DTR requests against the sandbox payer, for documentation, tests and the benchmark."""

from __future__ import annotations

HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CPT = "http://www.ama-assn.org/go/cpt"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
CRD_SD = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/"


def sandbox_coverage(member: str = "001", status: str = "active") -> dict:
    """The sandbox Coverage of member ``pat-<member>`` as an EHR would send it."""
    return {
        "resourceType": "Coverage",
        "id": f"cov-{member}",
        "meta": {"profile": [CRD_SD + "profile-coverage"]},
        "identifier": [{"system": "http://precert.example.org/sid/member-id", "value": f"PCM000{member}"}],
        "status": status,
        "subscriberId": f"PCM000{member}",
        "beneficiary": {"reference": f"Patient/pat-{member}"},
        "relationship": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "code": "self"}]},
        "period": {"start": "2024-01-01"},
        "payor": [{"reference": "Organization/precert-demo-payer", "display": "Precert Demo Health Plan"}],
        "class": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan"}]}, "value": "GOLD-PPO", "name": "Precert Gold PPO"}],
    }


def device_request(code: str = "E0424", display: str = "Stationary compressed gaseous oxygen system, rental", member: str = "001") -> dict:
    return {
        "resourceType": "DeviceRequest",
        "id": f"devreq-{code.lower()}",
        "meta": {"profile": [CRD_SD + "profile-devicerequest"]},
        "status": "draft",
        "intent": "original-order",
        "codeCodeableConcept": {"coding": [{"system": HCPCS, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/pat-{member}"},
        "authoredOn": "2026-11-20",
        "requester": {"reference": "Practitioner/prac-003"},
    }


def service_request(code: str, display: str = "", system: str = CPT, member: str = "001") -> dict:
    return {
        "resourceType": "ServiceRequest",
        "id": f"sr-{code.lower()}",
        "meta": {"profile": [CRD_SD + "profile-servicerequest"]},
        "status": "draft",
        "intent": "original-order",
        "code": {"coding": [{"system": system, "code": code, **({"display": display} if display else {})}]},
        "subject": {"reference": f"Patient/pat-{member}"},
        "authoredOn": "2026-11-20",
        "requester": {"reference": "Practitioner/prac-001"},
    }


def package_request(*orders: dict, coverage: dict | None = None, questionnaires=(), context: str | None = None,
                    changedsince: str | None = None, version: str | None = None) -> dict:
    params = [{"name": "coverage", "resource": coverage or sandbox_coverage()}]
    params += [{"name": "order", "resource": o} for o in orders]
    params += [{"name": "questionnaire", "valueCanonical": q} for q in questionnaires]
    if context:
        params.append({"name": "context", "valueString": context})
    if changedsince:
        params.append({"name": "changedsince", "valueInstant": changedsince})
    body: dict = {"resourceType": "Parameters"}
    if version:
        body["meta"] = {"profile": [f"http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/dtr-qpackage-input-parameters|{version}"]}
    body["parameter"] = params
    return body


def home_oxygen_request(version: str | None = None) -> dict:
    """The benchmark's request: home oxygen (E0424) for sandbox member pat-001."""
    return package_request(device_request(), version=version)
