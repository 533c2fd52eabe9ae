"""Every form's CQL, run the way a DTR client runs it (cql-execution with cql-exec-fhir, the engine
of the Da Vinci DTR reference app), pre-fills what each sandbox member's chart says.

The charts (``server/sandbox_charts.py``) list results out of date order and include preliminary and
entered-in-error results, so an unsorted or unfiltered "latest" shows up here as a wrong answer."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest

from questionnaires.catalog import EXT_INITIAL, ROOT, get_catalog
from server.sandbox import MEMBERS, sandbox_resources
from server.sandbox_charts import member_chart

CATALOG = get_catalog()
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"


def icd(code: str, display: str) -> dict:
    return {"system": ICD10, "code": code, "display": display}


# form -> member -> the value of every item-feeding define that is not empty for that member.
# Every member not listed gets the form's EMPTY answers.
EXPECTED: dict[str, dict[str, dict]] = {
    "dme-home-oxygen": {
        "pat-001": {"QualifyingConditionCodings": [icd("R09.02", "Hypoxemia"), icd("J44.9", "Chronic obstructive pulmonary disease, unspecified")],
                    "LatestSpO2Percent": 86, "LatestPaO2": 54, "LatestSaturationDate": "2026-11-20"},
        # The newest SpO2 is preliminary: the latest final one is reported.
        "pat-008": {"QualifyingConditionCodings": [icd("J96.11", "Chronic respiratory failure with hypoxia")],
                    "LatestSpO2Percent": 88, "LatestSaturationDate": "2026-09-14"},
    },
    "advanced-imaging": {"pat-002": {"LatestEGFR": 42}},
    "behavioral-iop": {
        # The newest PHQ-9 was entered in error; the most recently recorded diagnosis is the primary one.
        "pat-003": {"PrimaryDiagnosisCoding": icd("F41.1", "Generalized anxiety disorder"), "LatestPHQ9Score": 18},
    },
    "behavioral-residential": {"pat-003": {"PrimaryDiagnosisCoding": icd("F41.1", "Generalized anxiety disorder")}},
    "dme-prosthetic": {
        "pat-004": {"AmputationDiagnosisCoding": icd("Z89.612", "Acquired absence of left leg above knee"),
                    "AmputationRecordedDate": "2024-09-15"},
    },
    "dme-wheelchair": {
        "pat-004": {"MobilityConditionCodings": [icd("Z89.612", "Acquired absence of left leg above knee")]},
        "pat-007": {"MobilityConditionCodings": [icd("G35", "Multiple sclerosis"), icd("R26.2", "Difficulty in walking, not elsewhere classified")]},
    },
    "inpatient-surgery": {"pat-002": {"LatestBMI": 38.5, "HasDiabetes": True, "LatestHbA1c": 7.9}},
    "specialty-drugs": {
        "pat-005": {"LatestWeightKg": 68.4, "IndicationCoding": icd("L40.0", "Psoriasis vulgaris")},
        "pat-007": {"IndicationCoding": icd("G35", "Multiple sclerosis")},
    },
}
# What a define gives for a chart with nothing relevant (lists are empty, booleans false, others null).
EMPTY = {"QualifyingConditionCodings": [], "MobilityConditionCodings": [], "HasDiabetes": False}
DEMOGRAPHICS = ("FamilyName", "GivenName", "BirthDate")


def walk(items):
    for item in items:
        yield item
        yield from walk(item.get("item", []))


def feeding_defines(template) -> list[str]:
    """The defines that an item's initialExpression names, in form order."""
    out = []
    for item in walk(template.questionnaire["item"]):
        for ext in item.get("extension", []):
            if ext["url"] == EXT_INITIAL:
                out.append(ext["valueExpression"]["expression"].split(".", 1)[1].strip('"'))
    return out


def elm_of(library: dict) -> dict:
    data = next(c["data"] for c in library["content"] if c["contentType"] == "application/elm+json")
    return json.loads(base64.b64decode(data))


def member_bundles() -> list[dict]:
    patients = [r for r in sandbox_resources() if r["resourceType"] == "Patient" and r["id"].startswith("pat-")]
    return [{"resourceType": "Bundle", "type": "collection",
             "entry": [{"resource": p}, *({"resource": r} for r in member_chart(p["id"]))]} for p in patients]


@pytest.fixture(scope="module")
def results() -> dict:
    """form -> member -> define -> value, as cql-execution computes it from the package's own ELM and
    value sets."""
    node = shutil.which("node")
    assert node, "node is needed to run the CQL engine (apt-get install nodejs npm)"
    assert (ROOT / "tools" / "node_modules" / "cql-execution").is_dir(), "run: npm ci --prefix questionnaires/tools"
    bundles = member_bundles()
    out = {}
    for key, template in CATALOG.templates.items():
        request = {"libraries": [elm_of(lib) for lib in template.libraries], "run": [template.libraries[0]["name"]],
                   "valuesets": template.valuesets, "patients": bundles}
        run = subprocess.run([node, str(ROOT / "tools" / "run-libraries.mjs")], input=json.dumps(request),
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        out[key] = json.loads(run.stdout)[template.libraries[0]["name"]]
    return out


def test_the_expected_answers_cover_every_form_and_every_item_feeding_define():
    assert set(EXPECTED) == set(CATALOG.templates)
    for key, members in EXPECTED.items():
        feeding = set(feeding_defines(CATALOG.templates[key]))
        for answers in members.values():
            assert set(answers) <= feeding, key


@pytest.mark.parametrize("key", sorted(CATALOG.templates))
def test_every_member_gets_the_expected_prefilled_answers(results, key):
    template = CATALOG.templates[key]
    defines = [d for d in feeding_defines(template) if d not in DEMOGRAPHICS]
    for member, *_ in MEMBERS:
        expected = {d: EXPECTED[key].get(member, {}).get(d, EMPTY.get(d)) for d in defines}
        got = {d: results[key][member][d] for d in defines}
        assert got == expected, f"{key} for {member}"


@pytest.mark.parametrize("key", sorted(CATALOG.templates))
def test_every_form_prefills_the_members_name_and_birth_date(results, key):
    for member, family, given, _gender, birth, *_ in MEMBERS:
        got = {d: results[key][member][d] for d in DEMOGRAPHICS}
        assert got == {"FamilyName": family, "GivenName": given, "BirthDate": birth}, f"{key} for {member}"


def test_single_answer_items_are_fed_one_value_and_repeating_items_a_list(results):
    for key, template in CATALOG.templates.items():
        for item in walk(template.questionnaire["item"]):
            for ext in item.get("extension", []):
                if ext["url"] != EXT_INITIAL:
                    continue
                define = ext["valueExpression"]["expression"].split(".", 1)[1].strip('"')
                for member, *_ in MEMBERS:
                    value = results[key][member][define]
                    assert isinstance(value, list) == bool(item.get("repeats")), f"{key} {item['linkId']} for {member}"
