"""Questionnaire/$questionnaire-package as DTR 2.0.1 and 2.2 clients (and the Inferno DTR payer
tests) call it, against the real server."""

from __future__ import annotations

import base64
import json

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.parameters import Parameters

from server.dtr.examples import (
    FHIR_JSON, device_request, home_oxygen_request, package_request, sandbox_coverage, service_request,
)
from tests.support import example

DTR = "hl7.fhir.us.davinci-dtr-2.0.1"
PKG = "/fhir/Questionnaire/$questionnaire-package"
Q = "http://precert.example.org/fhir/Questionnaire/"
EXT = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/"


def post(client, body, path=PKG, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, content=data, headers={**FHIR_JSON, **kw.pop("headers", {})}, **kw)


def bundles(body: dict, name: str = "PackageBundle") -> list[dict]:
    assert body["resourceType"] == "Parameters"
    return [p["resource"] for p in body["parameter"] if p["name"] == name]


def outcome(body: dict, name: str = "operationOutcome") -> dict | None:
    found = [p["resource"] for p in body.get("parameter", []) if p["name"] == name]
    return found[0] if found else None


def entries(bundle: dict, rtype: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def test_home_oxygen_order_gets_the_home_oxygen_package(client):
    r = post(client, home_oxygen_request())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    Parameters.model_validate(body)
    [bundle] = bundles(body)
    Bundle.model_validate(bundle)
    assert bundle["type"] == "collection"
    assert bundle["meta"]["profile"] == [EXT + "DTR-QPackageBundle"]
    assert all(e["fullUrl"] for e in bundle["entry"])
    first = bundle["entry"][0]["resource"]
    assert first["resourceType"] == "Questionnaire" and first["url"] == Q + "dme-home-oxygen"
    libraries = entries(bundle, "Library")
    assert {lib["name"] for lib in libraries} == {"HomeOxygen", "PrecertCommon"}
    for lib in libraries:
        types = {c["contentType"]: c["data"] for c in lib["content"]}
        assert "library HomeOxygen" in base64.b64decode(types["text/cql"]).decode() or lib["name"] == "PrecertCommon"
        json.loads(base64.b64decode(types["application/elm+json"]))
    # Inferno: every cqf-library canonical equals a Library.url in the package.
    lib_urls = {lib["url"] for lib in libraries}
    cqf = [e["valueCanonical"] for e in first["extension"] if e["url"].endswith("cqf-library")]
    assert cqf and set(cqf) <= lib_urls
    valuesets = entries(bundle, "ValueSet")
    assert {vs["id"] for vs in valuesets} >= {"home-oxygen-qualifying-conditions", "oxygen-saturation-tests"}
    assert all(vs["expansion"]["contains"] and vs["expansion"]["timestamp"] for vs in valuesets)
    [qr] = entries(bundle, "QuestionnaireResponse")
    assert qr["questionnaire"] == Q + "dme-home-oxygen|1.0.0" and qr["status"] == "in-progress"
    assert qr["subject"] == {"reference": "Patient/pat-001"}
    contexts = [e["valueReference"]["reference"] for e in qr["extension"] if e["url"] == EXT + "qr-context"]
    assert contexts == ["Coverage/cov-001", "DeviceRequest/devreq-e0424"]
    intended = [e for e in qr["extension"] if e["url"] == EXT + "intendedUse"]
    assert intended[0]["valueCodeableConcept"]["coding"][0]["code"] == "withpa"
    answers = {i["linkId"]: i["answer"][0] for g in qr["item"] for i in g["item"]}
    assert answers["member-id"]["valueString"] == "PCM000001"
    assert answers["requested-service"]["valueString"].startswith("E0424")
    origin = answers["member-id"]["extension"][0]
    assert origin == {"url": EXT + "information-origin", "extension": [{"url": "source", "valueCode": "auto"}]}


def test_dtr_2_2_callers_get_the_2_2_names_and_extensions(client):
    r = post(client, home_oxygen_request(version="2.2.0"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert bundles(body, "PackageBundle") == []
    [bundle] = bundles(body, "packagebundle")
    q = bundle["entry"][0]["resource"]
    cqf = [e["valueCanonical"] for e in q["extension"] if e["url"].endswith("cqf-library")]
    assert all(c.endswith("|1.0.0") for c in cqf)
    [qr] = entries(bundle, "QuestionnaireResponse")
    assert [e["valueReference"]["reference"] for e in qr["extension"] if e["url"] == EXT + "qr-coverage"] == ["Coverage/cov-001"]
    assert [e["valueReference"]["reference"] for e in qr["extension"] if e["url"] == EXT + "qr-context"] == ["DeviceRequest/devreq-e0424"]
    origin = qr["item"][0]["item"][0]["answer"][0]["extension"][0]
    assert origin["extension"] == [{"url": "source", "valueCode": "auto-server"}]
    # the query parameter overrides, too
    r = post(client, home_oxygen_request(), path=PKG + "?dtr-version=2.2")
    assert bundles(r.json(), "packagebundle")


def test_the_system_level_url_is_an_alias(client):
    r = post(client, home_oxygen_request(), path="/fhir/$questionnaire-package")
    assert r.status_code == 200 and bundles(r.json())


@pytest.mark.parametrize("order, category", [
    (service_request("72148", "MRI lumbar spine"), "advanced-imaging"),
    (service_request("27447", "Total knee arthroplasty"), "inpatient-surgery"),
    (device_request("K0001", "Standard wheelchair"), "dme-wheelchair"),
    (device_request("L5301", "Below knee prosthesis"), "dme-prosthetic"),
    (service_request("S9480", "Intensive outpatient psychiatric", "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"), "behavioral-iop"),
    (service_request("H0019", "Residential", "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"), "behavioral-residential"),
])
def test_the_payer_rules_choose_the_form(client, order, category):
    r = post(client, package_request(order))
    assert r.status_code == 200, r.text
    [bundle] = bundles(r.json())
    assert bundle["entry"][0]["resource"]["url"] == Q + category


def test_specialty_drug_medication_request(client):
    order = {"resourceType": "MedicationRequest", "id": "mr-1", "status": "draft", "intent": "order",
             "medicationCodeableConcept": {"coding": [{"system": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "code": "J1745"}]},
             "subject": {"reference": "Patient/pat-003"}}
    r = post(client, package_request(order, coverage=sandbox_coverage("003")))
    [bundle] = bundles(r.json())
    assert bundle["entry"][0]["resource"]["url"] == Q + "specialty-drugs"


def test_two_orders_get_one_bundle_per_form(client):
    r = post(client, package_request(device_request(), service_request("72148"), device_request("E1390", "Oxygen concentrator")))
    found = bundles(r.json())
    assert sorted(b["entry"][0]["resource"]["id"] for b in found) == ["advanced-imaging", "dme-home-oxygen"]
    oxygen = next(b for b in found if b["entry"][0]["resource"]["id"] == "dme-home-oxygen")
    [qr] = entries(oxygen, "QuestionnaireResponse")
    refs = [e["valueReference"]["reference"] for e in qr["extension"] if e["url"] == EXT + "qr-context"]
    assert refs == ["Coverage/cov-001", "DeviceRequest/devreq-e0424", "DeviceRequest/devreq-e1390"]


def test_two_forms_carry_each_library_once_and_every_include_resolves_in_the_response(client):
    r = post(client, package_request(device_request(), service_request("72148")))
    assert r.status_code == 200, r.text
    found = bundles(r.json())
    assert len(found) == 2
    libraries = [lib for b in found for lib in entries(b, "Library")]
    names = [lib["name"] for lib in libraries]
    assert sorted(names) == ["AdvancedImaging", "HomeOxygen", "PrecertCommon"]
    by_name = {lib["name"]: lib for lib in libraries}
    for lib in libraries:
        elm = json.loads(base64.b64decode(next(c["data"] for c in lib["content"] if c["contentType"] == "application/elm+json")))
        for include in elm["library"].get("includes", {}).get("def", []):
            assert elm_identifier(by_name[include["path"]]) == (include["path"], include["version"])
    for b in found:
        form = b["entry"][0]["resource"]
        cqf = [e["valueCanonical"] for e in form["extension"] if e["url"].endswith("cqf-library")]
        assert len(cqf) == 1 and cqf[0].split("|")[0] in {lib["url"] for lib in libraries}


def elm_identifier(library: dict) -> tuple[str, str]:
    elm = json.loads(base64.b64decode(next(c["data"] for c in library["content"] if c["contentType"] == "application/elm+json")))
    return elm["library"]["identifier"]["id"], elm["library"]["identifier"]["version"]


def with_two_coverages(body: dict) -> dict:
    second = {**sandbox_coverage(), "id": "cov-other"}
    body["parameter"].insert(1, {"name": "coverage", "resource": second})
    return body


def test_dtr_2_2_refuses_a_package_request_with_two_coverages(client):
    r = post(client, with_two_coverages(package_request(device_request(), version="2.2.0")))
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome" and "exactly one 'coverage'" in body["issue"][0]["diagnostics"]


def test_dtr_2_0_1_uses_the_first_of_two_coverages_and_says_so(client):
    r = post(client, with_two_coverages(package_request(device_request())))
    assert r.status_code == 200, r.text
    [bundle] = bundles(r.json())
    [qr] = entries(bundle, "QuestionnaireResponse")
    refs = [e["valueReference"]["reference"] for e in qr["extension"] if e["url"] == EXT + "qr-context"]
    assert refs[0] == "Coverage/cov-001"
    assert any("first" in i["diagnostics"] for i in outcome(r.json())["issue"])


def test_an_order_without_documentation_needs_gets_an_informational_outcome(client):
    r = post(client, package_request(service_request("99213", "Office visit")))
    assert r.status_code == 200
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "information"
    r = post(client, package_request(service_request("99213")), path=PKG + "?dtr-version=2.2")
    assert r.json()["resourceType"] == "Parameters" and outcome(r.json(), "outcome")


def test_named_questionnaires_are_returned_and_unknown_ones_warned_about(client):
    body = package_request(questionnaires=[Q + "dme-wheelchair|1.0.0", "http://elsewhere.example/Questionnaire/x"])
    r = post(client, body)
    assert r.status_code == 200
    result = r.json()
    [bundle] = bundles(result)
    assert bundle["entry"][0]["resource"]["id"] == "dme-wheelchair"
    warning = outcome(result)["issue"][0]
    assert warning["severity"] == "warning" and "elsewhere.example" in warning["diagnostics"]
    r = post(client, package_request(questionnaires=["http://elsewhere.example/Questionnaire/x"]))
    assert r.status_code == 200 and r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["severity"] == "warning"


def test_the_dtr_example_request_is_refused_for_another_payers_coverage(client):
    body = example(DTR, "Parameters-QuestionnairePackageInputParamsExample.json")
    r = post(client, body)
    assert r.status_code == 422
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome" and oo["issue"][0]["code"] == "not-found"


def test_the_dtr_example_request_with_a_precert_coverage(client):
    body = example(DTR, "Parameters-QuestionnairePackageInputParamsExample.json")
    body["parameter"][0]["resource"] = sandbox_coverage()
    r = post(client, body)
    assert r.status_code == 422  # the example's service date (2019) is before the coverage starts
    assert "2019" in r.json()["issue"][0]["diagnostics"]
    body["parameter"][1]["resource"].pop("occurrenceDateTime", None)
    body["parameter"][1]["resource"].pop("occurrencePeriod", None)
    r = post(client, body)
    assert r.status_code == 200, r.text  # LOINC 24338-6 needs no documentation
    body["parameter"].append({"name": "questionnaire", "valueCanonical": Q + "dme-home-oxygen"})
    r = post(client, body)
    [bundle] = bundles(r.json())
    [qr] = entries(bundle, "QuestionnaireResponse")
    refs = [e["valueReference"]["reference"] for e in qr["extension"] if e["url"] == EXT + "qr-context"]
    assert "ServiceRequest/ServiceRequestExample" in refs


def test_cancelled_coverage_is_refused(client):
    r = post(client, package_request(device_request(member="010"), coverage=sandbox_coverage("010", status="cancelled")))
    assert r.status_code == 422 and r.json()["issue"][0]["code"] == "business-rule"


def test_unknown_context_alone_is_not_found_and_with_orders_is_a_warning(client):
    r = post(client, package_request(context="no-such-assertion"))
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
    r = post(client, package_request(device_request(), context="no-such-assertion"))
    assert r.status_code == 200
    assert any("no-such-assertion" in i["diagnostics"] for i in outcome(r.json())["issue"])


def test_registered_context_resolvers_are_used(server, client):
    from server.dtr.context import register_context_resolver

    async def resolver(state, context_id):
        return {"questionnaires": [Q + "behavioral-iop|1.0.0"]} if context_id == "crd-assertion-42" else None

    register_context_resolver(server.app.state.precert, resolver)
    r = post(client, package_request(context="crd-assertion-42"))
    assert r.status_code == 200, r.text
    [bundle] = bundles(r.json())
    assert bundle["entry"][0]["resource"]["id"] == "behavioral-iop"


def test_changedsince(client):
    r = post(client, package_request(device_request(), changedsince="2099-01-01T00:00:00Z"))
    assert r.status_code == 200 and r.json()["resourceType"] == "OperationOutcome"
    assert "changed since" in r.json()["issue"][0]["diagnostics"]
    r = post(client, package_request(device_request(), changedsince="2020-01-01T00:00:00Z"))
    assert bundles(r.json())
    bad = package_request(device_request())
    bad["parameter"].append({"name": "changedsince", "valueInstant": "yesterday"})
    assert post(client, bad).status_code == 400


def test_the_templates_are_searchable_resources(client):
    r = client.get("/fhir/Questionnaire", params={"url": Q + "dme-home-oxygen"})
    assert r.status_code == 200 and r.json()["total"] == 1
    assert client.get("/fhir/Library/dme-home-oxygen").json()["name"] == "HomeOxygen"
    assert client.get("/fhir/Library/precert-common").status_code == 200
    assert client.get("/fhir/ValueSet/behavioral-health-diagnoses").status_code == 200
    assert client.get("/fhir/Questionnaire/behavioral-iop-adaptive").json()["meta"]["profile"][0].endswith("dtr-questionnaire-adapt-search")


def test_the_capability_statement_lists_the_dtr_operations(client):
    cs = client.get("/fhir/metadata").json()
    assert "http://hl7.org/fhir/us/davinci-dtr/CapabilityStatement/dtr-payer-service" in cs["instantiates"]
    ops = {r["type"]: {o["name"] for o in r.get("operation", [])} for r in cs["rest"][0]["resource"]}
    assert {"questionnaire-package", "next-question", "log-questionnaire-errors"} <= ops["Questionnaire"]
    assert "expand" in ops["ValueSet"] and "validate" in ops["QuestionnaireResponse"]


# ------------------------------------------------------------------------------------ errors
def test_malformed_json_is_a_400(client):
    r = post(client, b'{"resourceType": "Parameters", "parameter": [')
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("body", [
    {"resourceType": "Patient"},
    [],
    "text",
    {"resourceType": "Parameters", "parameter": {}},
    {"resourceType": "Parameters", "parameter": [{"value": 1}]},
    {"resourceType": "Parameters", "parameter": [{"name": "coverage", "resource": {"no": "type"}}]},
])
def test_wrong_shapes_are_400(client, body):
    r = post(client, body)
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"


def test_missing_parts_are_400(client):
    r = post(client, {"resourceType": "Parameters", "parameter": [{"name": "coverage", "resource": sandbox_coverage()}]})
    assert r.status_code == 400 and "dtr-1" in r.json()["issue"][0]["diagnostics"]
    r = post(client, {"resourceType": "Parameters", "parameter": [{"name": "order", "resource": device_request()}]})
    assert r.status_code == 400 and r.json()["issue"][0]["code"] == "required"


def test_wrong_resource_types_in_parameters_are_400(client):
    r = post(client, package_request(sandbox_coverage()))  # a Coverage as the order
    assert r.status_code == 400 and "order parameter" in r.json()["issue"][0]["diagnostics"]
    body = package_request(device_request())
    body["parameter"][0]["resource"] = {"resourceType": "Patient", "id": "x"}
    assert post(client, body).status_code == 400
    body = package_request(device_request())
    body["parameter"][1]["resource"]["status"] = 42  # invalid DeviceRequest
    assert post(client, body).status_code in (400, 422)


def test_oversized_bodies_are_413(client, settings):
    big = package_request(device_request())
    big["parameter"][1]["resource"]["note"] = [{"text": "x" * (settings.max_body_bytes + 10)}]
    r = post(client, big)
    assert r.status_code == 413 and r.json()["resourceType"] == "OperationOutcome"
    many = {"resourceType": "Parameters", "parameter": [{"name": "questionnaire", "valueCanonical": f"http://x/{i}"} for i in range(500)]}
    assert post(client, many).status_code == 413


def test_hostile_strings_are_refused_or_echoed_safely(client):
    hostile = ['<script>alert(1)</script>', "http://x/Q?$where=1;drop", "\u0000\ud7ff" * 3, "http://x/" + "a" * 5000]
    for value in hostile:
        r = post(client, package_request(device_request(), questionnaires=[value]))
        assert r.status_code in (200, 400), value
        if r.status_code == 200:
            text = json.dumps(r.json())
            assert len(text) < 200_000
    r = post(client, package_request(context="x" * 1000))
    assert r.status_code == 400
    r = post(client, package_request(device_request(), coverage=sandbox_coverage() | {"id": "../../etc"}))
    assert r.status_code in (400, 422)


def test_get_and_xml_are_refused(client):
    assert client.get(PKG).status_code == 405
    r = client.post(PKG, content=b"<Parameters/>", headers={"Content-Type": "application/fhir+xml"})
    assert r.status_code == 415

