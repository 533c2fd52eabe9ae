"""The DTR payer's supporting operations: ValueSet/$expand, $log-questionnaire-errors (with the
staff view) and QuestionnaireResponse/$validate feedback."""

from __future__ import annotations

import json

import pytest

from questionnaires.catalog import get_catalog, response_items
from server.dtr.examples import FHIR_JSON
from tests.support import example

VS = "http://precert.example.org/fhir/ValueSet/"
DTR = "hl7.fhir.us.davinci-dtr-2.0.1"
LOG = "/fhir/Questionnaire/$log-questionnaire-errors"
VALIDATE = "/fhir/QuestionnaireResponse/$validate"
CATALOG = get_catalog()


def post(client, path, body):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, content=data, headers=FHIR_JSON)


# ------------------------------------------------------------------------------ $expand
def test_expand_by_url_returns_current_active_codes(client):
    r = client.get("/fhir/ValueSet/$expand", params={"url": VS + "behavioral-health-diagnoses"})
    assert r.status_code == 200
    vs = r.json()
    assert vs["resourceType"] == "ValueSet" and vs["version"] == "1.0.0"
    exp = vs["expansion"]
    assert exp["timestamp"] and exp["total"] == len(exp["contains"]) == 10
    assert {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F10.20", "display": "Alcohol dependence, uncomplicated"} in exp["contains"]


def test_expand_filters_and_pages(client):
    r = client.get("/fhir/ValueSet/$expand", params={"url": VS + "behavioral-health-diagnoses", "filter": "depress"})
    assert {c["code"] for c in r.json()["expansion"]["contains"]} == {"F32.2", "F33.2"}
    r = client.get("/fhir/ValueSet/$expand", params={"url": VS + "behavioral-health-diagnoses|1.0.0", "count": "3", "offset": "2"})
    exp = r.json()["expansion"]
    assert exp["total"] == 10 and len(exp["contains"]) == 3 and exp["offset"] == 2


def test_expand_by_instance_and_by_post(client):
    r = client.get("/fhir/ValueSet/home-oxygen-qualifying-conditions/$expand")
    assert r.status_code == 200 and r.json()["expansion"]["contains"]
    r = post(client, "/fhir/ValueSet/$expand", {"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": VS + "prosthetic-functional-levels"}, {"name": "filter", "valueString": "K3"}]})
    assert r.status_code == 200 and [c["code"] for c in r.json()["expansion"]["contains"]] == ["K3"]


@pytest.mark.parametrize("params, status", [
    ({}, 400),
    ({"url": VS + "no-such"}, 404),
    ({"url": VS + "behavioral-health-diagnoses|9.9.9"}, 404),
    ({"url": VS + "behavioral-health-diagnoses", "count": "-1"}, 400),
    ({"url": VS + "behavioral-health-diagnoses", "offset": "x"}, 400),
    ({"url": "<script>alert(1)</script>"}, 404),
    ({"url": "http://x/" + "a" * 2000}, 400),
])
def test_expand_errors(client, params, status):
    r = client.get("/fhir/ValueSet/$expand", params=params)
    assert r.status_code == status and r.json()["resourceType"] == "OperationOutcome"


def test_expand_refuses_non_enumerated_value_sets(client, unique):
    vs = {"resourceType": "ValueSet", "url": f"http://example.org/ValueSet/{unique}", "status": "active",
          "compose": {"include": [{"system": "http://loinc.org"}]}}
    assert client.post("/fhir/ValueSet", json=vs, headers=FHIR_JSON).status_code == 201
    r = client.get("/fhir/ValueSet/$expand", params={"url": vs["url"]})
    assert r.status_code == 422
    assert client.get("/fhir/ValueSet/nope-nope/$expand").status_code == 404


# ------------------------------------------------------------------------------ $log-questionnaire-errors
def test_the_dtr_example_error_report_is_logged_and_visible_to_staff(client, unique):
    body = example(DTR, "Parameters-LogQuestionnaireErrorsInputParamsExample.json")
    body["parameter"][1]["resource"]["issue"][0]["diagnostics"] = f"report {unique}"
    r = post(client, LOG, body)
    assert r.status_code == 200
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome" and oo["issue"][0]["severity"] == "information"
    assert oo["issue"][1]["severity"] == "warning"  # the example names a form that is not Precert's
    r = client.get("/admin/dtr/questionnaire-errors", params={"questionnaire": body["parameter"][0]["valueCanonical"]})
    assert r.status_code == 200
    reports = r.json()["reports"]
    mine = [rep for rep in reports if rep["issues"][0].get("diagnostics") == f"report {unique}"]
    assert mine and mine[0]["known"] == [False] and mine[0]["received"].endswith("Z")


def test_error_reports_accept_the_2_0_1_operation_definition_spellings(client, unique):
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "Questionnaire", "valueCanonical": "http://precert.example.org/fhir/Questionnaire/dme-home-oxygen|1.0.0"},
        {"name": "OperationOutcome", "resource": {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "processing", "details": {"text": "MSG_BAD_SYNTAX"}, "diagnostics": unique}]}}]}
    r = post(client, LOG, body)
    assert r.status_code == 200 and len(r.json()["issue"]) == 1
    reports = client.get("/admin/dtr/questionnaire-errors").json()["reports"]
    assert any(rep["issues"][0].get("diagnostics") == unique and rep["known"] == [True] for rep in reports)


@pytest.mark.parametrize("body", [
    {"resourceType": "Parameters", "parameter": [{"name": "questionnaire", "valueCanonical": "http://x/Q"}]},
    {"resourceType": "Parameters", "parameter": [{"name": "operationOutcome", "resource": {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "x"}]}}]},
    {"resourceType": "Parameters", "parameter": [{"name": "questionnaire", "valueCanonical": "http://x/Q"}, {"name": "operationOutcome", "resource": {"resourceType": "Patient"}}]},
    {"resourceType": "Parameters", "parameter": [{"name": "questionnaire", "valueCanonical": "http://x/Q"}, {"name": "operationOutcome", "resource": {"resourceType": "OperationOutcome", "issue": []}}]},
    {"resourceType": "Parameters", "parameter": [{"name": "questionnaire", "valueBoolean": True}]},
    {"resourceType": "OperationOutcome", "issue": []},
])
def test_error_reports_with_missing_or_wrong_parts_are_400(client, body):
    r = post(client, LOG, body)
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"


def test_error_reports_are_trimmed(client, unique):
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "questionnaire", "valueCanonical": "http://precert.example.org/fhir/Questionnaire/behavioral-iop"},
        {"name": "operationOutcome", "resource": {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "processing", "diagnostics": unique + "<script>" + "x" * 10000}] * 150}}]}
    assert post(client, LOG, body).status_code == 200
    reports = client.get("/admin/dtr/questionnaire-errors", params={"limit": 5}).json()["reports"]
    mine = next(rep for rep in reports if rep["issues"][0]["diagnostics"].startswith(unique))
    assert len(mine["issues"]) == 100 and len(mine["issues"][0]["diagnostics"]) == 2000
    assert client.get("/admin/dtr/questionnaire-errors", params={"limit": 0}).status_code in (400, 422)


def test_malformed_error_reports_are_400(client):
    r = client.post(LOG, content=b"{{", headers=FHIR_JSON)
    assert r.status_code == 400


# ------------------------------------------------------------------------------ $validate
def qr(category: str, kind: str = "met", drop: str | None = None) -> dict:
    t = CATALOG.templates[category]
    answers = {k: v for k, v in t.examples[kind].items() if k != drop}
    return {"resourceType": "QuestionnaireResponse", "questionnaire": t.canonical, "status": "completed",
            "item": response_items(t, answers, CATALOG)}


def test_validate_confirms_a_complete_response_that_meets_the_criteria(client):
    r = post(client, VALIDATE, qr("dme-wheelchair"))
    assert r.status_code == 200
    [only] = r.json()["issue"]
    assert only["severity"] == "information" and "meet Precert's criteria" in only["diagnostics"]


def test_validate_explains_unmet_criteria_and_missing_answers(client):
    r = post(client, VALIDATE, qr("dme-wheelchair", "not_met"))
    assert any("criterion not met" in i["diagnostics"] for i in r.json()["issue"])
    r = post(client, VALIDATE, {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": qr("dme-prosthetic", drop="motivated")}]})
    issues = r.json()["issue"]
    assert any(i["code"] == "required" and "motivated" in i["diagnostics"] for i in issues)
    assert any(i["code"] == "incomplete" for i in issues)


@pytest.mark.parametrize("body, status", [
    ({"resourceType": "Patient"}, 400),
    ({"resourceType": "QuestionnaireResponse", "questionnaire": "http://elsewhere.example/Q", "status": "completed"}, 422),
    ({"resourceType": "Parameters", "parameter": []}, 400),
    (b"[1,", 400),
])
def test_validate_errors(client, body, status):
    r = post(client, VALIDATE, body)
    assert r.status_code == status and r.json()["resourceType"] == "OperationOutcome"


def test_staff_can_list_the_templates(client):
    r = client.get("/admin/dtr/templates")
    assert r.status_code == 200
    cats = {t["category"]: t for t in r.json()["templates"]}
    assert len(cats) == 8 and cats["dme-home-oxygen"]["adaptive"].endswith("dme-home-oxygen-adaptive|1.0.0")
    assert any("NCD 240.2" in (c["source"] or "") for c in cats["dme-home-oxygen"]["criteria"])
