"""Adaptive DTR forms: a package with an adaptive search Questionnaire, then SDC $next-question
driven to completion, as Inferno's DTR payer tests do (bare QuestionnaireResponse in and out)."""

from __future__ import annotations

import copy
import json

import pytest
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse

from questionnaires.catalog import EXT_ADAPTIVE, EXT_CQF_LIBRARY, EXT_INITIAL, answer_value, get_catalog
from server.dtr.examples import FHIR_JSON, device_request, package_request

CATALOG = get_catalog()
ADAPTIVE = sorted(c for c, t in CATALOG.templates.items() if t.adaptive_questionnaire)
NEXT = "/fhir/Questionnaire/$next-question"


def post(client, body, path=NEXT):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, content=data, headers=FHIR_JSON)


def start(client, category: str, version: str | None = None) -> tuple[dict, dict]:
    t = CATALOG.templates[category]
    r = post(client, package_request(questionnaires=[t.adaptive_url], version=version), "/fhir/Questionnaire/$questionnaire-package")
    assert r.status_code == 200, r.text
    name = "packagebundle" if version else "PackageBundle"
    [bundle] = [p["resource"] for p in r.json()["parameter"] if p["name"] == name]
    search = bundle["entry"][0]["resource"]
    qr = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "QuestionnaireResponse")
    return search, qr


def answer_open_questions(qr: dict, category: str, answers: dict) -> int:
    t = CATALOG.templates[category]
    form = qr["contained"][0]
    done = {i["linkId"] for i in qr.get("item", [])}
    added = 0
    for item in form["item"]:
        if item["type"] == "display" or item["linkId"] in done or item["linkId"] not in answers:
            continue
        values = answers[item["linkId"]] if isinstance(answers[item["linkId"]], list) else [answers[item["linkId"]]]
        qr.setdefault("item", []).append({"linkId": item["linkId"], "text": item["text"],
                                          "answer": [answer_value(t.items[item["linkId"]], v, t, CATALOG) for v in values]})
        added += 1
    return added


def drive(client, category: str, kind: str = "met", version: str | None = None) -> tuple[dict, list[dict]]:
    search, qr = start(client, category, version)
    answers = CATALOG.templates[category].examples[kind]
    steps = []
    for _ in range(40):
        answer_open_questions(qr, category, answers)
        r = post(client, qr)
        assert r.status_code == 200, r.text
        qr = r.json()
        steps.append(copy.deepcopy(qr))
        if qr["status"] == "completed":
            return qr, steps
    raise AssertionError("the adaptive form never completed")


@pytest.mark.parametrize("category", ADAPTIVE)
def test_the_package_holds_an_adaptive_search_questionnaire_and_a_started_response(client, category):
    search, qr = start(client, category)
    assert search["url"].endswith(f"/{category}-adaptive")
    assert search["meta"]["profile"][0].endswith("dtr-questionnaire-adapt-search")
    assert {"url": EXT_ADAPTIVE, "valueBoolean": True} in search["extension"]
    assert any(e["url"] == EXT_INITIAL and e["valueExpression"]["language"] == "text/cql" for i in search["item"] for j in [i, *i.get("item", [])] for e in j.get("extension", []))
    form = qr["contained"][0]
    assert qr["questionnaire"] == "#" + form["id"]
    assert form["derivedFrom"] == [search["url"] + "|1.0.0"] and "url" not in form and form["title"] and form["text"]
    assert form["meta"]["profile"][0].endswith("dtr-questionnaire-adapt")
    assert any(e["url"] == EXT_CQF_LIBRARY for e in form["extension"])
    answered = {i["linkId"]: i["answer"][0] for i in qr["item"]}
    assert answered["member-id"]["valueString"] == "PCM000001"
    assert answered["member-id"]["extension"][0]["extension"] == [{"url": "source", "valueCode": "auto"}]


def test_the_started_response_carries_what_the_order_says(client):
    t = CATALOG.templates["dme-home-oxygen"]
    r = post(client, package_request(device_request(), questionnaires=[t.adaptive_url]), "/fhir/Questionnaire/$questionnaire-package")
    qr = next(e["resource"] for e in r.json()["parameter"][0]["resource"]["entry"] if e["resource"]["resourceType"] == "QuestionnaireResponse")
    answered = {i["linkId"]: i["answer"][0] for i in qr["item"]}
    assert answered["requested-service"]["valueString"].startswith("E0424")
    assert any(e["valueReference"]["reference"] == "DeviceRequest/devreq-e0424" for e in qr["extension"] if e["url"].endswith("qr-context"))


@pytest.mark.parametrize("category", ADAPTIVE)
def test_an_adaptive_session_runs_to_completion(client, category):
    final, steps = drive(client, category)
    assert len(steps) >= 3
    sizes = [len(s["contained"][0]["item"]) for s in steps]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # grown, never shrunk
    for step in steps:
        QuestionnaireResponse.model_validate(step)
        form = step["contained"][0]
        for item in form["item"]:
            assert "enableWhen" not in item and item["text"]  # DTR 2.0.1 dtr-questionnaire-adapt
    assert [s["status"] for s in steps[:-1]] == ["in-progress"] * (len(steps) - 1)
    assert final["status"] == "completed"
    closing = final["contained"][0]["item"][-1]
    assert closing["type"] == "display" and "meet Precert's coverage criteria" in closing["text"]
    # extensions from the package's draft response survive every step
    assert any(e["url"].endswith("qr-context") for e in final["extension"])


def link_ids(items):
    for item in items:
        yield item["linkId"]
        yield from link_ids(item.get("item", []))


@pytest.mark.parametrize("category", ADAPTIVE)
@pytest.mark.parametrize("kind", ["met", "not_met"])
def test_no_step_of_an_adaptive_form_repeats_a_link_id(client, category, kind):
    _, steps = drive(client, category, kind)
    for step in steps:
        ids = list(link_ids(step["contained"][0]["item"]))
        assert len(ids) == len(set(ids)), f"que-2: {sorted(i for i in ids if ids.count(i) > 1)}"
        QuestionnaireResponse.model_validate(step)


COVERAGE_INFORMATION = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"


def coverage_information(qr: dict) -> list[dict]:
    found = [e for e in qr.get("extension", []) if e["url"] == COVERAGE_INFORMATION]
    return [{sub["url"]: next(v for k, v in sub.items() if k.startswith("value")) for sub in e["extension"]} for e in found]


@pytest.mark.parametrize("kind, covered", [("met", "covered"), ("not_met", "conditional")])
def test_a_completed_dtr_2_2_adaptive_response_carries_coverage_information(client, kind, covered):
    final, steps = drive(client, "dme-home-oxygen", kind, version="2.2.0")
    [info] = coverage_information(final)
    coverage = next(e["valueReference"]["reference"] for e in final["extension"] if e["url"].endswith("qr-coverage"))
    assert info["coverage"] == {"reference": coverage}
    assert info["covered"] == covered and info["pa-needed"] == "auth-needed"
    assert "satisfied-pa-id" not in info and info["date"] and info["coverage-assertion-id"] and info["reason"]["text"]
    assert all(coverage_information(s) == [] for s in steps[:-1])


def test_dtr_2_0_1_adaptive_responses_keep_their_shape_without_coverage_information(client):
    final, _ = drive(client, "dme-home-oxygen")
    assert coverage_information(final) == []


def test_questions_disabled_by_earlier_answers_are_never_asked(client):
    final, _ = drive(client, "dme-home-oxygen")
    asked = {i["linkId"] for i in final["contained"][0]["item"]}
    assert "spo2" in asked and "pao2" not in asked and "group2-findings" not in asked


def test_an_adaptive_session_that_fails_the_criteria_says_so(client):
    final, _ = drive(client, "behavioral-iop", "not_met")
    assert final["status"] == "completed"
    assert "Criteria not met" in final["contained"][0]["item"][-1]["text"]


def test_dtr_2_2_adaptive_forms_point_at_the_payer(client):
    search, qr = start(client, "advanced-imaging", "2.2.0")
    ext = next(e for e in search["extension"] if e["url"] == EXT_ADAPTIVE)
    assert ext["valueUrl"].endswith("/fhir")
    final, _ = drive(client, "advanced-imaging", version="2.2.0")
    assert next(e for e in final["contained"][0]["extension"] if e["url"] == EXT_ADAPTIVE)["valueUrl"].endswith("/fhir")


def test_parameters_input_and_the_system_level_alias(client):
    _, qr = start(client, "dme-home-oxygen")
    answer_open_questions(qr, "dme-home-oxygen", CATALOG.templates["dme-home-oxygen"].examples["met"])
    body = {"resourceType": "Parameters", "parameter": [{"name": "questionnaire-response", "resource": qr}]}
    r = post(client, body, "/fhir/$next-question")
    assert r.status_code == 200 and r.json()["resourceType"] == "QuestionnaireResponse"


def test_unanswered_required_questions_and_bad_answers_are_400(client):
    _, qr = start(client, "dme-home-oxygen")
    r = post(client, qr)  # names and birth date are required and unanswered
    assert r.status_code == 400 and r.json()["issue"][0]["code"] == "required"
    answer_open_questions(qr, "dme-home-oxygen", CATALOG.templates["dme-home-oxygen"].examples["met"])
    qr["item"][-1]["answer"] = [{"valueBoolean": True}]
    r = post(client, qr)
    assert r.status_code == 400 and r.json()["issue"][0]["code"] == "value"


def test_questions_the_form_does_not_have_are_400(client):
    _, qr = start(client, "dme-home-oxygen")
    qr["contained"][0]["item"].append({"linkId": "<img src=x onerror=alert(1)>", "text": "x", "type": "string"})
    r = post(client, qr)
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"


def test_foreign_adaptive_forms_are_422(client):
    _, qr = start(client, "dme-home-oxygen")
    qr["contained"][0]["derivedFrom"] = ["http://elsewhere.example/Questionnaire/x"]
    assert post(client, qr).status_code == 422


@pytest.mark.parametrize("body", [
    b"{not json",
    {"resourceType": "Patient"},
    {"resourceType": "QuestionnaireResponse", "status": "in-progress"},
    {"resourceType": "QuestionnaireResponse", "questionnaire": "#a", "contained": "x", "status": "in-progress"},
    {"resourceType": "QuestionnaireResponse", "questionnaire": "#a", "contained": [{"resourceType": "Questionnaire", "id": "b"}]},
    {"resourceType": "Parameters", "parameter": [{"name": "questionnaire-response", "valueString": "x"}]},
])
def test_malformed_next_question_requests_are_400(client, body):
    r = post(client, body)
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
