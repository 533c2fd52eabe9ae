"""DTR in the whole prior-authorization flow: launched from a pended PAS request with its tracking
number as the context, and a package's draft response, once answered, accepted by $validate."""

from __future__ import annotations

import json

from questionnaires.catalog import get_catalog, response_items
from server.dtr.examples import FHIR_JSON, device_request, package_request
from tests.pas_support import HCPCS, actions, claim_response, pas_request, submit

CATALOG = get_catalog()
PKG = "/fhir/Questionnaire/$questionnaire-package"


def admin_reference(response_bundle: dict) -> str:
    """The pended item's tracking number (the review action's number, a string sub-extension)."""
    for item in claim_response(response_bundle)["item"]:
        for adj in item["adjudication"]:
            for ext in adj.get("extension", []):
                for sub in ext.get("extension", []):
                    if "valueString" in sub:
                        return sub["valueString"]
    raise AssertionError("no tracking number on the pended item")


def test_a_pas_tracking_number_launches_the_missing_form(client):
    body = submit(client, pas_request("2.2.1", code=(HCPCS, "E0424"))).json()
    assert actions(body) == {1: "A4"}
    reference = admin_reference(body)
    r = client.post(PKG, content=json.dumps(package_request(context=reference)), headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    [bundle] = [p["resource"] for p in r.json()["parameter"] if p["name"] == "PackageBundle"]
    assert bundle["entry"][0]["resource"]["url"].endswith("/dme-home-oxygen")
    case = reference.rsplit("-", 1)[0]
    r = client.post(PKG, content=json.dumps(package_request(context=case)), headers=FHIR_JSON)
    assert r.status_code == 200


def test_the_draft_response_once_answered_meets_the_criteria(client):
    r = client.post(PKG, content=json.dumps(package_request(device_request())), headers=FHIR_JSON)
    bundle = r.json()["parameter"][0]["resource"]
    draft = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "QuestionnaireResponse")
    t = CATALOG.templates["dme-home-oxygen"]
    prefilled = {i["linkId"] for g in draft["item"] for i in g["item"]}
    answers = {k: v for k, v in t.examples["met"].items() if k not in prefilled}
    items = response_items(t, answers, CATALOG)
    header = next(i for i in items if i["linkId"] == "patient")
    header["item"] = draft["item"][0]["item"] + header["item"]
    completed = {**draft, "status": "completed", "item": items}
    r = client.post("/fhir/QuestionnaireResponse/$validate", content=json.dumps(completed), headers=FHIR_JSON)
    assert r.status_code == 200
    [only] = r.json()["issue"]
    assert only["severity"] == "information" and "meet" in only["diagnostics"]


def test_a_crd_coverage_assertion_id_launches_the_forms_crd_named(client):
    from tests.test_crd_conformance import call, one, order_sign, service_request

    body = order_sign(service_request("sr-dtr-mri", "70551"))
    r = call(client, body)
    assert r.status_code == 200, r.text
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    reps = [a["resource"] for a in r.json().get("systemActions", []) if a.get("resource", {}).get("id") == "sr-dtr-mri"]
    rep = next(e for e in reps[0]["extension"] if e["url"].endswith("ext-coverage-information"))
    assertion = one(rep, "coverage-assertion-id")
    assert assertion
    r = client.post(PKG, content=json.dumps(package_request(context=assertion)), headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    [bundle] = [p["resource"] for p in r.json()["parameter"] if p["name"] == "PackageBundle"]
    assert bundle["entry"][0]["resource"]["url"].endswith("/advanced-imaging")
    # with the order too (DTR launched after CRD): still one form, tied to the order
    r = client.post(PKG, content=json.dumps(package_request(draft, context=assertion)), headers=FHIR_JSON)
    [bundle] = [p["resource"] for p in r.json()["parameter"] if p["name"] == "PackageBundle"]
    qr = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "QuestionnaireResponse")
    assert any(e["valueReference"]["reference"] == "ServiceRequest/sr-dtr-mri" for e in qr["extension"] if e["url"].endswith("qr-context"))
