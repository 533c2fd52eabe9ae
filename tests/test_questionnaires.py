"""The DTR templates themselves: every form, library and value set consistent with the others, and
the payer criteria deciding met / not met for each template."""

from __future__ import annotations

import base64
import json
import re

import pytest
from fhir.resources.R4B.library import Library
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.valueset import ValueSet
from fhirpathpy import compile as fhirpath_compile

from questionnaires.catalog import (
    CATEGORIES, EXT_CALCULATED, EXT_CQF_LIBRARY, EXT_INITIAL, EXT_LAUNCH_CONTEXT, EXT_VARIABLE, ROOT,
    canonical_split, elm_defines, expansion_contains, get_catalog, parse_cql_header, response_items,
)
from questionnaires.checker import check_response
from questionnaires.criteria import assess, evaluate_rule

CATALOG = get_catalog()
TEMPLATES = sorted(CATALOG.templates)
EXPR = re.compile(r'^"([A-Za-z][A-Za-z0-9_]*)"\.("?)([A-Za-z][A-Za-z0-9_ ]*)\2$')


def walk(items):
    for item in items:
        yield item
        yield from walk(item.get("item", []))


def library_text(lib: dict, content_type: str) -> str:
    data = next(c["data"] for c in lib["content"] if c["contentType"] == content_type)
    return base64.b64decode(data).decode()


def qr_for(template, answers: dict) -> dict:
    return {"resourceType": "QuestionnaireResponse", "questionnaire": template.canonical, "status": "completed",
            "item": response_items(template, answers, CATALOG)}


def test_there_is_one_template_per_service_category():
    assert set(CATALOG.templates) == set(CATEGORIES)
    for category in CATEGORIES:
        assert (ROOT / category / "questionnaire.yaml").is_file()


@pytest.mark.parametrize("category", TEMPLATES)
def test_questionnaire_follows_the_dtr_standard_profile(category):
    q = CATALOG.templates[category].questionnaire
    Questionnaire.model_validate(q)
    assert q["url"] == f"http://precert.example.org/fhir/Questionnaire/{category}" and q["version"] == "1.0.0"
    assert q["meta"]["profile"] == ["http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/dtr-std-questionnaire"]
    assert q["subjectType"] == ["Patient"] and q["text"]["div"].startswith("<div xmlns=")
    urls = [e["url"] for e in q["extension"]]
    assert EXT_CQF_LIBRARY in urls and EXT_LAUNCH_CONTEXT in urls and EXT_VARIABLE in urls
    items = list(walk(q["item"]))
    link_ids = [i["linkId"] for i in items]
    assert len(link_ids) == len(set(link_ids))
    for item in items:
        assert item["text"] and item["type"]
        if item["type"] in ("choice", "open-choice"):
            assert ("answerOption" in item) != ("answerValueSet" in item), item["linkId"]
    assert any(i.get("required") for i in items) and any(i.get("repeats") for i in items) or category in (
        "specialty-drugs", "dme-prosthetic", "behavioral-iop", "behavioral-residential", "inpatient-surgery")
    assert any(i.get("enableWhen") for i in items)
    # Inferno's DTR 2.0.1 payer tests: CQL pre-population on at least one item.
    initial = [e for i in items for e in i.get("extension", []) if e["url"] == EXT_INITIAL]
    assert initial and all(e["valueExpression"]["language"] == "text/cql" for e in initial)


@pytest.mark.parametrize("category", TEMPLATES)
def test_every_expression_names_the_one_library_the_form_lists(category):
    t = CATALOG.templates[category]
    cqf = [e["valueCanonical"] for e in t.questionnaire["extension"] if e["url"] == EXT_CQF_LIBRARY]
    assert cqf == [t.libraries[0]["url"]]
    libraries = {t.libraries[0]["name"]: t.libraries[0]}
    expressions = [e["valueExpression"]["expression"] for e in t.questionnaire["extension"] if e["url"] == EXT_VARIABLE]
    expressions += [e["valueExpression"]["expression"] for i in walk(t.questionnaire["item"]) for e in i.get("extension", []) if e["url"] == EXT_INITIAL]
    assert expressions
    for expression in expressions:
        m = EXPR.match(expression)
        assert m, f"{expression} is not \"Library\".Define"
        lib = libraries.get(m.group(1))
        assert lib is not None, f"{expression}: library {m.group(1)} is not in the package"
        assert m.group(3) in parse_cql_header(library_text(lib, "text/cql")).defines, expression
        assert m.group(3) in elm_defines(json.loads(library_text(lib, "application/elm+json"))), expression


@pytest.mark.parametrize("category", TEMPLATES)
def test_fhirpath_expressions_compile(category):
    found = [e["valueExpression"] for i in walk(CATALOG.templates[category].questionnaire["item"]) for e in i.get("extension", []) if e["url"] == EXT_CALCULATED]
    for expr in found:
        assert expr["language"] == "text/fhirpath"
        fhirpath_compile(expr["expression"].replace("%resource", "%context"))


@pytest.mark.parametrize("category", TEMPLATES)
def test_every_bound_value_set_ships_and_expands(category):
    t = CATALOG.templates[category]
    shipped = {vs["url"]: vs for vs in t.valuesets}
    bound = [i["answerValueSet"] for i in walk(t.questionnaire["item"]) if "answerValueSet" in i]
    for canonical in bound:
        url, version = canonical_split(canonical)
        assert version == "1.0.0", f"{canonical} is not version-specific"
        assert url in shipped, f"{category} binds {url} but does not ship it"
    # CQL clients look value sets up by the bare canonical the library declares.
    retrieved = [cf["valueSet"] for lib in t.libraries for req in lib.get("dataRequirement", []) for cf in req.get("codeFilter", [])]
    for canonical in retrieved:
        assert "|" not in canonical and canonical in shipped, f"{category} retrieves by {canonical}, which no shipped value set answers"
    for vs in t.valuesets:
        ValueSet.model_validate(vs)
        assert 0 < len(expansion_contains(vs)) < 40


@pytest.mark.parametrize("category", TEMPLATES)
def test_enable_when_targets_exist_earlier_with_a_matching_answer(category):
    t = CATALOG.templates[category]
    for link_id in t.order:
        item = t.items[link_id]
        for cond in item.get("enableWhen", []):
            target = t.items.get(cond["question"])
            assert target is not None, f"{link_id} depends on unknown {cond['question']}"
            assert t.order.index(cond["question"]) < t.order.index(link_id)
            if "answerCoding" in cond:
                codes = [o["valueCoding"]["code"] for o in target.get("answerOption", [])] or [
                    c["code"] for c in expansion_contains(CATALOG.valueset(target["answerValueSet"]))]
                assert cond["answerCoding"]["code"] in codes
            if "answerBoolean" in cond:
                assert target["type"] == "boolean"
            if "answerDecimal" in cond:
                assert target["type"] == "decimal"


@pytest.mark.parametrize("key", ["common", *TEMPLATES])
def test_cql_and_elm_declare_the_same_library(key):
    lib = CATALOG.libraries["precert-common" if key == "common" else key]
    header = parse_cql_header(lib.cql)
    elm = lib.elm["library"]
    assert (elm["identifier"]["id"], elm["identifier"]["version"]) == (header.name, header.version)
    assert sorted(d for d in elm_defines(lib.elm) if d != "Patient") == sorted(header.defines)
    assert [(v["name"], v["id"], v.get("version")) for v in elm.get("valueSets", {}).get("def", [])] == list(header.valuesets)
    assert [(i["path"], i["version"], i["localIdentifier"]) for i in elm.get("includes", {}).get("def", [])] == list(header.includes)
    resource = lib.resource
    Library.model_validate(resource)
    assert [c["contentType"] for c in resource["content"]] == ["text/cql", "application/elm+json"]
    assert library_text(resource, "text/cql") == lib.cql
    assert json.loads(library_text(resource, "application/elm+json")) == lib.elm


def test_library_names_are_unique_and_dependencies_resolve():
    names = [lib.resource["name"] for lib in CATALOG.libraries.values()]
    assert len(names) == len(set(names))
    for lib in CATALOG.libraries.values():
        for rel in lib.resource.get("relatedArtifact", []):
            assert CATALOG.resolve(rel["resource"], "Library") is not None


@pytest.mark.parametrize("category", TEMPLATES)
def test_criteria_are_met_by_the_met_example(category):
    t = CATALOG.templates[category]
    qr = qr_for(t, t.examples["met"])
    assert [i for i in check_response(qr, t.questionnaire) if i["severity"] == "error"] == []
    result = assess(qr)
    assert result.category == category and result.complete and result.met is True, result.unmet
    assert result.unmet == [] and result.missing == []


@pytest.mark.parametrize("category", TEMPLATES)
def test_criteria_are_not_met_by_the_not_met_example(category):
    t = CATALOG.templates[category]
    qr = qr_for(t, t.examples["not_met"])
    assert [i for i in check_response(qr, t.questionnaire) if i["severity"] == "error"] == []
    result = assess(qr)
    assert result.complete and result.met is False
    assert result.unmet and all(isinstance(u, str) and u for u in result.unmet)
    assert {d["criterion"] for d in result.details if d["met"] is False}


@pytest.mark.parametrize("category", TEMPLATES)
def test_an_incomplete_response_is_not_decided(category):
    t = CATALOG.templates[category]
    answers = dict(t.examples["met"])
    dropped = next(k for k in answers if t.items[k].get("required") and not t.items[k].get("enableWhen"))
    answers.pop(dropped)
    qr = qr_for(t, answers)
    result = assess(qr)
    assert result.complete is False and result.met is None
    assert any(m.startswith(f"{dropped}: ") for m in result.missing)
    assert any(i["code"] == "required" for i in check_response(qr, t.questionnaire))


def test_home_oxygen_thresholds_follow_ncd_240_2():
    t = CATALOG.templates["dme-home-oxygen"]
    rule = next(c for c in t.criteria if c["id"] == "hypoxemia")["rule"]
    assert evaluate_rule(rule, {"spo2": [88]}) is True
    assert evaluate_rule(rule, {"pao2": [55]}) is True
    assert evaluate_rule(rule, {"spo2": [89], "group2-findings": ["none"]}) is not True
    assert evaluate_rule(rule, {"spo2": [89], "group2-findings": ["cor-pulmonale"]}) is True
    assert evaluate_rule(rule, {"pao2": [58], "group2-findings": ["edema"]}) is True
    assert evaluate_rule(rule, {"spo2": [92], "pao2": [70], "group2-findings": ["edema"]}) is False


def test_disabled_items_do_not_count():
    t = CATALOG.templates["dme-home-oxygen"]
    answers = dict(t.examples["met"])
    answers["pao2"] = 90  # test-type is spo2, so the PaO2 question is disabled
    qr = qr_for(t, answers)
    issues = check_response(qr, t.questionnaire)
    assert any(i["severity"] == "warning" and "not enabled" in i["diagnostics"] for i in issues)
    assert assess(qr).met is True


def test_checker_reports_wrong_types_options_cardinality_and_ranges():
    t = CATALOG.templates["dme-home-oxygen"]
    qr = qr_for(t, t.examples["met"])
    items = {i["linkId"]: i for i in walk(qr["item"])}
    items["flow-rate"]["answer"] = [{"valueString": "two"}]
    items["order-reason"]["answer"] = [{"valueCoding": {"system": "http://precert.example.org/fhir/CodeSystem/dtr-answers", "code": "bogus"}}]
    items["diagnosis"]["answer"].append({"valueCoding": {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "Z00.00"}})
    items["test-type"]["answer"].append(items["test-type"]["answer"][0])
    items["spo2"]["answer"] = [{"valueDecimal": 120}]
    qr["item"].append({"linkId": "no-such-question", "answer": [{"valueString": "x"}]})
    issues = check_response(qr, t.questionnaire)
    text = " | ".join(i["diagnostics"] for i in issues)
    assert "flow-rate" in text and "valueString is not a valid answer" in text
    assert "'bogus' is not one of the item's answer options" in text
    assert "'Z00.00' is not in value set" in text
    assert "does not repeat but has 2 answers" in text
    assert "above the maximum 100" in text
    assert "'no-such-question' is not in the Questionnaire" in text
    assert all(i["severity"] in ("error", "warning") and i["code"] for i in issues)


def test_checker_survives_hostile_input():
    t = CATALOG.templates["behavioral-iop"]
    for junk in (None, [], "x", {"resourceType": "Patient"},
                 {"resourceType": "QuestionnaireResponse", "item": "nope"},
                 {"resourceType": "QuestionnaireResponse", "item": [1, {"linkId": 5}, {"linkId": "<script>", "answer": "x"}]},
                 {"resourceType": "QuestionnaireResponse", "item": [{"linkId": "phq9", "answer": [{"valueInteger": True}, {}]}]}):
        issues = check_response(junk, t.questionnaire)
        assert issues and all(i["severity"] in ("error", "warning") for i in issues)
    assert assess({"resourceType": "QuestionnaireResponse", "questionnaire": "http://elsewhere.example/Q/x"}).met is None
    assert assess("garbage").met is None


def test_adaptive_responses_are_assessed_through_their_derived_from():
    t = CATALOG.templates["behavioral-iop"]
    qr = qr_for(t, t.examples["met"])
    qr["contained"] = [{"resourceType": "Questionnaire", "id": "adaptive", "derivedFrom": [t.adaptive_url + "|1.0.0"], "status": "active"}]
    qr["questionnaire"] = "#adaptive"
    result = assess(qr)
    assert result.category == "behavioral-iop" and result.met is True


def test_the_fhirpath_calculated_expression_evaluates_over_the_answers():
    from fhirpathpy import evaluate
    from fhirpathpy.models import models

    t = CATALOG.templates["dme-home-oxygen"]
    expr = next(e["valueExpression"]["expression"] for e in t.items["test-recent"]["extension"] if e["url"] == EXT_CALCULATED)
    recent = qr_for(t, t.examples["met"])
    assert evaluate(recent, expr, {"resource": recent}, model=models["r4"]) == [True]
    old = qr_for(t, {**t.examples["met"], "test-date": "2020-01-01"})
    assert evaluate(old, expr, {"resource": old}, model=models["r4"]) == [False]
    assert assess(old).met is False


def test_questionnaire_of_names_the_standard_form_for_standard_and_adaptive_responses():
    from questionnaires.criteria import questionnaire_of

    t = CATALOG.templates["dme-home-oxygen"]
    assert questionnaire_of(qr_for(t, {})) == t.canonical
    adaptive = {"resourceType": "QuestionnaireResponse", "questionnaire": "#a",
                "contained": [{"resourceType": "Questionnaire", "id": "a", "derivedFrom": [t.adaptive_url + "|1.0.0"]}]}
    assert questionnaire_of(adaptive) == t.canonical
    assert questionnaire_of({"resourceType": "QuestionnaireResponse", "questionnaire": "http://x/Q"}) is None
    assert questionnaire_of("junk") is None


def test_the_fhirpath_dose_per_kilogram_is_calculated():
    from fhirpathpy import evaluate
    from fhirpathpy.models import models

    t = CATALOG.templates["specialty-drugs"]
    expr = next(e["valueExpression"]["expression"] for e in t.items["dose-per-kg"]["extension"] if e["url"] == EXT_CALCULATED)
    qr = qr_for(t, t.examples["met"])  # 350 mg for 70 kg
    assert evaluate(qr, expr, {"resource": qr}, model=models["r4"]) == [5]
