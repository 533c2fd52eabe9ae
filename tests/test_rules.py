"""The payer rules engine: the sandbox behaviours CRD, DTR and PAS rely on, and the rule file format."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from server.rules import RulesService, get_rules
from server.rules.loader import RulesError, load_directory
from server.rules.model import CATEGORIES, Determination, EvaluationInput, questionnaire_for
from server.sandbox import sandbox_resources

CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
X12_1365 = "https://codesystem.x12.org/005010/1365"
SANDBOX = Path(__file__).resolve().parents[1] / "server" / "rules" / "sandbox"


def sandbox(rtype: str, rid: str) -> dict:
    return next(r for r in sandbox_resources() if r["resourceType"] == rtype and r["id"] == rid)


@pytest.fixture(scope="module")
def rules():
    return load_directory(SANDBOX)


def decide(rules, code: str, system: str = HCPCS, **kw) -> Determination:
    kw.setdefault("coverage", sandbox("Coverage", "cov-001"))
    return rules.evaluate(EvaluationInput(codes=[{"system": system, "code": code}], **kw))


# ----------------------------------------------------------------------------- sandbox behaviours
@pytest.mark.parametrize("code", ["99212", "99213", "71046"])
def test_routine_services_are_covered_without_authorization(rules, code):
    d = decide(rules, code, CPT)
    assert (d.covered, d.pa_needed, d.doc_needed, d.payer_match) == ("covered", "no-auth", [], True)


def test_consultation_referral_needs_auth_decided_automatically_without_documents(rules):
    d = decide(rules, "3", X12_1365)
    assert (d.covered, d.pa_needed, d.review, d.doc_needed) == ("covered", "auth-needed", "auto", [])
    assert d.auth_period_days == 90


@pytest.mark.parametrize("code", ["G0154", "B4184", "B4185"])
def test_home_health_needs_auth_decided_automatically_without_documents(rules, code):
    d = decide(rules, code)
    assert (d.covered, d.pa_needed, d.review, d.doc_needed) == ("covered", "auth-needed", "auto", [])


@pytest.mark.parametrize("code", ["33510", "27447", "27130", "22612"])
def test_elective_inpatient_surgery_always_goes_to_a_clinician(rules, code):
    d = decide(rules, code)
    assert (d.pa_needed, d.review, d.category) == ("auth-needed", "clinical", "inpatient-surgery")
    assert d.doc_needed == ["clinical"] and d.questionnaires == [questionnaire_for("inpatient-surgery")]


@pytest.mark.parametrize("code", ["70551", "70552", "70553", "72148", "73721", "74177", "71250", "78815"])
def test_advanced_imaging_needs_auth_and_the_imaging_questionnaire(rules, code):
    d = decide(rules, code, CPT)
    assert (d.pa_needed, d.review, d.doc_needed) == ("auth-needed", "auto", ["clinical"])
    assert d.questionnaires == ["http://precert.example.org/fhir/Questionnaire/advanced-imaging|1.0.0"]


def test_gold_carded_provider_satisfies_imaging_authorization(rules):
    d = decide(rules, "70551", CPT, provider_ids=["1567890128"])
    assert d.pa_needed == "satisfied" and d.gold_carded
    assert d.doc_needed == [] and d.questionnaires == [] and "withpa" not in d.doc_purpose
    assert d.reason["code"] == "gold-card"
    assert any("gold-carded" in step for step in d.trace)


def test_gold_card_does_not_cover_other_categories(rules):
    assert decide(rules, "27447", provider_ids=["1567890128"]).pa_needed == "auth-needed"


def test_gold_card_is_not_used_by_other_providers(rules):
    assert decide(rules, "70551", CPT, provider_ids=["1456789019"]).pa_needed == "auth-needed"


@pytest.mark.parametrize("code,category", [
    ("E0424", "dme-home-oxygen"), ("E0431", "dme-home-oxygen"), ("E1390", "dme-home-oxygen"),
    ("K0001", "dme-wheelchair"), ("K0005", "dme-wheelchair"), ("K0009", "dme-wheelchair"),
    ("K0813", "dme-wheelchair"), ("K0861", "dme-wheelchair"), ("K0891", "dme-wheelchair"),
    ("L5301", "dme-prosthetic"), ("L5700", "dme-prosthetic"), ("L5999", "dme-prosthetic"),
])
def test_dme_needs_auth_with_its_category_questionnaire(rules, code, category):
    d = decide(rules, code)
    assert (d.pa_needed, d.review, d.category) == ("auth-needed", "auto", category)
    assert d.questionnaires == [questionnaire_for(category)]


@pytest.mark.parametrize("code", ["K0010", "K0812", "L5300", "L6000"])
def test_codes_just_outside_a_range_do_not_match_it(rules, code):
    assert decide(rules, code).rule_id is None


@pytest.mark.parametrize("code,system", [("J1745", HCPCS), ("J0135", HCPCS), ("J2350", HCPCS),
                                         ("191831", RXNORM), ("327361", RXNORM), ("1876366", RXNORM)])
def test_specialty_drugs_need_auth_with_the_drug_questionnaire(rules, code, system):
    d = decide(rules, code, system)
    assert (d.pa_needed, d.review, d.category) == ("auth-needed", "auto", "specialty-drugs")
    assert d.questionnaires == [questionnaire_for("specialty-drugs")]


def test_infliximab_allows_ten_units_per_request(rules):
    d = decide(rules, "J1745", quantity=14)
    assert d.max_units == 10
    assert any("exceeds" in step for step in d.trace)
    assert d.alternatives and d.alternatives[0]["code"] == "Q5103"


@pytest.mark.parametrize("code", ["S9480", "H0015"])
def test_intensive_outpatient_allows_twenty_sessions(rules, code):
    d = decide(rules, code)
    assert (d.pa_needed, d.review, d.max_units, d.category) == ("auth-needed", "auto", 20, "behavioral-iop")


@pytest.mark.parametrize("code", ["H0019", "H2036"])
def test_residential_treatment_goes_to_a_clinician(rules, code):
    d = decide(rules, code)
    assert (d.pa_needed, d.review, d.category) == ("auth-needed", "clinical", "behavioral-residential")
    assert d.questionnaires == [questionnaire_for("behavioral-residential")]


@pytest.mark.parametrize("code,system", [("15830", CPT), ("S2118", HCPCS)])
def test_cosmetic_procedures_are_not_covered_with_a_reason(rules, code, system):
    d = decide(rules, code, system)
    assert d.covered == "not-covered" and d.reason["display"]
    assert d.doc_needed == [] and d.questionnaires == []


def test_every_category_has_a_rule(rules):
    assert {r.category for r in rules.rules if r.category} == set(CATEGORIES)


def test_unknown_codes_get_the_payer_defaults(rules):
    d = decide(rules, "99999", CPT)
    assert (d.rule_id, d.covered, d.pa_needed) == (None, "covered", "no-auth")
    assert "No rule" in d.trace[-1]


# ----------------------------------------------------------------------------- payer and coverage
def test_another_payers_coverage_is_not_a_match(rules):
    cov = {"resourceType": "Coverage", "status": "active",
           "payor": [{"identifier": {"system": "http://example.org/payers", "value": "OTHER1"}, "display": "Other Health"}]}
    d = decide(rules, "70551", CPT, coverage=cov)
    assert d.payer_match is False and d.rule_id is None
    assert d.reason["code"] == "no-member-found"


def test_a_payor_named_by_another_organization_reference_with_display_is_not_a_match(rules):
    cov = {"resourceType": "Coverage", "status": "active", "payor": [{"reference": "Organization/blue", "display": "Blue Plan"}]}
    assert decide(rules, "70551", CPT, coverage=cov).payer_match is False


@pytest.mark.parametrize("payor", [
    {"reference": "Organization/precert-demo-payer"},
    {"reference": "https://ehr.example.org/fhir/Organization/precert-demo-payer"},
    {"identifier": {"system": "http://precert.example.org/sid/payer-id", "value": "PRECERT01"}},
    {"display": "MARYLAND CAPITAL INSURANCE COMPANY"},
])
def test_this_payer_is_recognised_by_reference_identifier_or_name(rules, payor):
    d = decide(rules, "70551", CPT, coverage={"resourceType": "Coverage", "status": "active", "payor": [payor]})
    assert d.payer_match is True and d.rule_id == "advanced-imaging"


def test_a_resolved_payor_organization_is_matched_by_its_identifier(rules):
    cov = {"resourceType": "Coverage", "status": "active", "payor": [{"reference": "Organization/InsurerExample"}]}
    org = {"resourceType": "Organization", "id": "InsurerExample", "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "789312"}]}
    d = decide(rules, "33510", coverage=cov, payer=org)
    assert d.payer_match and "789312" in d.trace[0]


def test_an_unresolvable_payor_reference_is_assumed_to_be_this_payers_in_the_sandbox(rules):
    cov = {"resourceType": "Coverage", "status": "active", "payor": [{"reference": "Organization/org1234"}]}
    d = decide(rules, "70551", CPT, coverage=cov)
    assert d.payer_match and "assumed" in d.trace[0]


def test_cancelled_coverage_is_not_covered(rules):
    d = decide(rules, "99213", CPT, coverage=sandbox("Coverage", "cov-010"))
    assert d.covered == "not-covered" and d.coverage_active is False and d.payer_match
    assert d.reason["code"] == "no-active-coverage"


def test_coverage_ended_before_the_service_date_is_not_covered(rules):
    cov = dict(sandbox("Coverage", "cov-001"), period={"start": "2024-01-01", "end": "2024-12-31"})
    assert decide(rules, "99213", CPT, coverage=cov, service_date="2025-02-01").covered == "not-covered"
    assert decide(rules, "99213", CPT, coverage=cov, service_date="2024-06-01").covered == "covered"


# ----------------------------------------------------------------------------- conditions
def test_imaging_during_an_inpatient_stay_needs_no_authorization(rules):
    d = decide(rules, "74177", CPT, encounter={"resourceType": "Encounter", "class": {"code": "IMP"}})
    assert d.pa_needed == "no-auth" and d.doc_needed == [] and d.questionnaires == []
    assert any("inpatient" in step for step in d.trace)


def test_red_flag_diagnosis_makes_lumbar_mri_urgent(rules):
    d = decide(rules, "72148", CPT, diagnoses=[{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "G83.4"}])
    assert d.pa_needed == "no-auth"
    assert decide(rules, "72148", CPT, diagnoses=[{"code": "M54.5"}]).pa_needed == "auth-needed"


def test_out_of_network_imaging_on_the_hmo_says_so(rules):
    d = decide(rules, "70551", CPT, coverage=sandbox("Coverage", "cov-003"), provider_ids=["1999999999"])
    assert d.reason["code"] == "auth-out-network" and d.pa_needed == "auth-needed"
    assert decide(rules, "70551", CPT, coverage=sandbox("Coverage", "cov-003"), provider_ids=["1456789019"]).reason["code"] is None


def test_network_status(rules):
    assert rules.network_status(EvaluationInput(codes=[], provider_ids=["1456789019"])) == "in"
    assert rules.network_status(EvaluationInput(codes=[], provider_ids=["1999999999"])) == "out"
    assert rules.network_status(EvaluationInput(codes=[], location=sandbox("Location", "loc-hospital"))) == "in"
    assert rules.network_status(EvaluationInput(codes=[])) == "unknown"


def test_age_condition_sends_pediatric_biologics_to_a_clinician(rules):
    child, adult = sandbox("Patient", "pat-006"), sandbox("Patient", "pat-001")
    assert decide(rules, "J0135", patient=child, service_date="2026-01-15").review == "clinical"
    assert decide(rules, "J0135", patient=adult, service_date="2026-01-15").review == "auto"


def test_code_systems_are_normalised(rules):
    for system in ("https://bluebutton.cms.gov/resources/codesystem/hcpcs", "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", CPT, None):
        coding = {"code": "e0431"} if system is None else {"system": system, "code": "e0431"}
        assert rules.evaluate(EvaluationInput(codes=[coding])).rule_id == "home-oxygen", system


def test_the_most_specific_code_wins_among_several(rules):
    d = rules.evaluate(EvaluationInput(codes=[{"system": "http://snomed.info/sct", "code": "1"}, {"system": CPT, "code": "27447"}]))
    assert d.rule_id == "inpatient-surgery" and d.matched_code["code"] == "27447"


def test_evaluation_gives_the_same_answer_every_time(rules):
    """(How long an evaluation takes is measured in bench/bench_rules.py.)"""
    inp = EvaluationInput(codes=[{"system": CPT, "code": "72148"}], coverage=sandbox("Coverage", "cov-001"),
                          patient=sandbox("Patient", "pat-001"), diagnoses=[{"code": "M54.5"}], provider_ids=["1456789019"])
    first = rules.evaluate(inp)
    assert all(rules.evaluate(inp) == first for _ in range(20))


def test_prior_auth_list_names_every_auth_needed_service(rules):
    listed = {e["rule"] for e in rules.prior_auth_list()}
    assert {"advanced-imaging", "inpatient-surgery", "home-oxygen", "infliximab", "behavioral-residential"} <= listed
    assert "office-visits" not in listed and "cosmetic-exclusions" not in listed


def test_get_rules_without_app_state_uses_the_sandbox_set():
    assert get_rules().payer.id == "precert-demo-payer"


# ----------------------------------------------------------------------------- the file format
def write(tmp: Path, name: str, text: str) -> None:
    (tmp / name).write_text(text)


PAYER = """payer:
  id: p1
  name: Test Plan
  plans: [A]
"""


def errors_for(tmp_path: Path, text: str) -> list[str]:
    write(tmp_path, "payer.yaml", PAYER)
    write(tmp_path, "r.yaml", text)
    with pytest.raises(RulesError) as exc:
        load_directory(tmp_path)
    return exc.value.errors


def test_errors_name_file_line_and_field(tmp_path):
    errs = errors_for(tmp_path, """rules:
  - id: x
    codes:
      - {system: cpt, code: "1"}
    covered: maybe
""")
    assert errs == ["r.yaml:5: rules[0](x).covered: 'maybe' is not one of covered, not-covered, conditional"]


@pytest.mark.parametrize("text,expected", [
    ("rules:\n  - id: x\n    codes: []\n", "r.yaml:3: rules[0](x).codes"),
    ("rules:\n  - id: x\n    codes:\n      - {system: nope, code: '1'}\n", "rules[0](x).codes[0].system: unknown code system 'nope'"),
    ("rules:\n  - id: x\n    codes:\n      - {system: hcpcs, range: K0009-K0001}\n", "codes[0].range"),
    ("rules:\n  - id: x\n    codes:\n      - {system: cpt, code: '1'}\n    category: dentistry\n", "rules[0](x).category: 'dentistry'"),
    ("rules:\n  - id: x\n    codes:\n      - {system: cpt, code: '1'}\n    colour: red\n", "r.yaml:5: rules[0](x).colour: unknown field"),
    ("rules:\n  - id: x\n    codes:\n      - {system: cpt, code: '1'}\n    conditions:\n      - when: '%age <'\n        explain: e\n        set: {review: clinical}\n",
     "conditions[0].when: not a valid FHIRPath expression"),
    ("rules:\n  - id: x\n    codes:\n      - {system: cpt, code: '1'}\n    conditions:\n      - when: '%shoe_size > 9'\n        explain: e\n        set: {review: clinical}\n",
     "unknown variable(s) %shoe_size"),
    ("rules:\n  - id: x\n    codes:\n      - {system: cpt, code: '1'}\n    conditions:\n      - when: '%age > 9'\n        explain: e\n        set: {rule_id: y}\n",
     "conditions[0].set.rule_id: cannot be set"),
    ("rules:\n  - id: x\n    codes:\n      - {system: cpt, code: '1'}\n    max_units: lots\n", "rules[0](x).max_units: 'lots' is not a positive number"),
    ("rules:\n  - id: x\n    codes:\n      - {system: cpt, code: '1'}\n    plans: [Z]\n", "plan 'Z' is not one of the payer's plans"),
    ("rules:\n  - id: x\n    codes:\n      - {system: cpt, code: '1'}\n    covered: not-covered\n", "not-covered rule must give a plain-language reason"),
    ("rules:\n  - id: x\n    codes:\n      - {system: cpt, code: '1'}\n    links: [{url: /relative, label: l}]\n", "is not an absolute http(s) URL"),
    ("rules:\n  - id: x\n    codes:\n      - {system: cpt, code: '1'}\n    questionnaires: ['http://q/x|1']\n", "must say which documentation is needed"),
    ("rules:\n  - id: x\n    codes:\n      - {system: cpt, code: '1'}\n  - id: x\n    codes:\n      - {system: cpt, code: '2'}\n", "'x' is also defined in r.yaml:2"),
    ("rules:\n  - id: x\n    id: y\n", "r.yaml:3: (yaml): duplicate key 'id'"),
    ("rules: [\n", "r.yaml:"),
    ("- just a list\n", "r.yaml:1: (file)"),
])
def test_invalid_rules_are_refused_with_a_clear_error(tmp_path, text, expected):
    errs = errors_for(tmp_path, text)
    assert any(expected in e for e in errs), errs


def test_codes_with_leading_zeros_stay_strings(tmp_path):
    write(tmp_path, "payer.yaml", PAYER)
    write(tmp_path, "r.yaml", "rules:\n  - id: anaesthesia\n    codes:\n      - {system: cpt, codes: [00100, 0001U]}\n    pa_needed: auth-needed\n")
    rules = load_directory(tmp_path)
    assert rules.evaluate(EvaluationInput(codes=[{"system": CPT, "code": "00100"}])).rule_id == "anaesthesia"


def test_a_missing_payer_is_an_error(tmp_path):
    write(tmp_path, "r.yaml", "rules: []\n")
    with pytest.raises(RulesError) as exc:
        load_directory(tmp_path)
    assert "no file defines the payer" in exc.value.errors[0]


def test_if_unknown_applies_when_a_condition_cannot_be_decided(tmp_path):
    write(tmp_path, "payer.yaml", PAYER)
    write(tmp_path, "r.yaml", """rules:
  - id: site
    codes: [{system: cpt, code: "1"}]
    pa_needed: auth-needed
    conditions:
      - when: "%network = 'in'"
        explain: in network needs no auth
        set: {pa_needed: no-auth}
        if_unknown: {pa_needed: conditional, info_needed: [performer]}
""")
    rules = load_directory(tmp_path)
    coding = [{"system": CPT, "code": "1"}]
    unknown = rules.evaluate(EvaluationInput(codes=coding))
    assert (unknown.pa_needed, unknown.info_needed) == ("conditional", ["performer"])
    assert rules.evaluate(EvaluationInput(codes=coding, provider_ids=["1234567890"])).pa_needed == "auth-needed"


def test_plan_specific_rules_win_over_general_ones(tmp_path):
    write(tmp_path, "payer.yaml", PAYER)
    write(tmp_path, "r.yaml", """rules:
  - id: general
    codes: [{system: cpt, code: "1"}]
    pa_needed: no-auth
  - id: plan-a
    plans: [A]
    codes: [{system: cpt, code: "1"}]
    pa_needed: auth-needed
""")
    rules = load_directory(tmp_path)
    cov = {"status": "active", "payor": [{"reference": "Organization/p1"}],
           "class": [{"type": {"coding": [{"code": "plan"}]}, "value": "A"}]}
    assert rules.evaluate(EvaluationInput(codes=[{"system": CPT, "code": "1"}], coverage=cov)).rule_id == "plan-a"
    cov["class"][0]["value"] = "B"
    assert rules.evaluate(EvaluationInput(codes=[{"system": CPT, "code": "1"}], coverage=cov)).rule_id == "general"


def test_hot_reload_picks_up_edits_and_keeps_the_last_good_set(tmp_path):
    shutil.copytree(SANDBOX, tmp_path / "rules")
    directory = tmp_path / "rules"
    service = RulesService(directory, check_interval=0)
    assert service.current().evaluate(EvaluationInput(codes=[{"system": CPT, "code": "99213"}])).pa_needed == "no-auth"

    routine = directory / "routine.yaml"
    routine.write_text(routine.read_text().replace("range: 99202-99215}\n    covered: covered\n    pa_needed: no-auth",
                                                   "range: 99202-99215}\n    covered: covered\n    pa_needed: auth-needed"))
    os.utime(routine, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    assert service.current().evaluate(EvaluationInput(codes=[{"system": CPT, "code": "99213"}])).pa_needed == "auth-needed"

    routine.write_text("rules:\n  - id: broken\n")
    os.utime(routine, ns=(time.time_ns(), time.time_ns() + 20_000_000))
    current = service.current()
    assert current.by_id.get("office-visits") is not None  # the previous set is still serving
    assert service.last_error and any("routine.yaml" in e for e in service.last_error)


@pytest.mark.parametrize("inp", [
    EvaluationInput(codes=[{"system": True, "code": 5}, "not a coding", None]),
    EvaluationInput(codes=[{"system": CPT, "code": "70551"}], coverage={"payor": 3.5, "class": "gold", "status": "active"}),
    EvaluationInput(codes=[{"system": CPT, "code": "70551"}], coverage={"payor": [{"identifier": "x"}], "period": "2020"}),
    EvaluationInput(codes=[{"system": HCPCS, "code": "J1745"}], patient={"birthDate": 1990}, quantity="lots", service_date="soon"),
    EvaluationInput(codes=[{"system": CPT, "code": "70551"}], location={"identifier": 7, "managingOrganization": "x"}, provider_ids=[None, 5]),
    EvaluationInput(codes=None),
])
def test_evaluation_never_raises_on_malformed_input(rules, inp):
    d = rules.evaluate(inp)
    assert d.covered in ("covered", "not-covered", "conditional") and d.trace
