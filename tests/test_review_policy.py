"""The denial policy as payer data: automatic decisions approve or pend and deny only for
administrative reasons; a failed-criteria form pends for a physician with the criteria trace,
unless the payer's rule opts in to automatic clinical denial, which the case then records."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from server.pas.adjudicate import decide_item
from server.rules.loader import RulesError, load_directory
from server.rules.model import EvaluationInput
from tests.test_pas_dtr import examples, questionnaire_response
from tests.test_rules import SANDBOX, sandbox

CPT = "http://www.ama-assn.org/go/cpt"
MRI = {"sequence": 1, "productOrService": {"coding": [{"system": CPT, "code": "70551"}]}, "quantity": {"value": 1}}


def rules_with_opt_in(tmp_path: Path, flag: str = "true"):
    target = tmp_path / "rules"
    shutil.copytree(SANDBOX, target)
    imaging = target / "imaging.yaml"
    text = imaging.read_text()
    assert "    review: auto\n" in text
    imaging.write_text(text.replace("    review: auto\n", f"    review: auto\n    auto_clinical_denial: {flag}\n", 1))
    return load_directory(target)


def determination(rules):
    return rules.evaluate(EvaluationInput(codes=[{"system": CPT, "code": "70551"}], coverage=sandbox("Coverage", "cov-001")))


def failed_form() -> dict:
    return questionnaire_response("advanced-imaging", examples("advanced-imaging")["not_met"])


def test_by_default_a_failed_criteria_form_pends_for_a_physician_with_the_criteria_trace():
    d = decide_item(MRI, determination(load_directory(SANDBOX)), [failed_form()])
    assert d.action == "A4" and not d.automatic_clinical_denial
    assert d.reason_class == "clinical" and d.reason_code == "criteria-not-met" and d.criteria_not_met
    assert d.reason.startswith("Pended for review by a physician")
    assert any("pended (A4) for a physician reviewer" in step for step in d.trace)


def test_a_rule_that_opts_in_denies_automatically_and_says_so(tmp_path):
    det = determination(rules_with_opt_in(tmp_path))
    assert det.auto_clinical_denial is True
    d = decide_item(MRI, det, [failed_form()])
    assert d.action == "A3" and d.automatic_clinical_denial and d.reason_code == "criteria-not-met"
    assert "Policy: payer rule" in d.reason and d.criteria_not_met[0] in d.reason


def test_the_opt_in_must_be_true_or_false(tmp_path):
    with pytest.raises(RulesError) as exc:
        rules_with_opt_in(tmp_path, "sometimes")
    assert any("auto_clinical_denial: 'sometimes' is not true or false" in e for e in exc.value.errors)


def test_a_plans_exclusion_is_still_denied_automatically_as_administrative():
    rules = load_directory(SANDBOX)
    det = rules.evaluate(EvaluationInput(codes=[{"system": CPT, "code": "15830"}], coverage=sandbox("Coverage", "cov-001")))
    d = decide_item({"sequence": 1, "productOrService": {"coding": [{"system": CPT, "code": "15830"}]}}, det, [])
    assert d.action == "A3" and d.reason_class == "administrative" and not d.automatic_clinical_denial


# ---------------------------------------------------------------------------------- clocks as data
def test_decision_clocks_come_from_the_payer_configuration():
    from datetime import datetime, timedelta, timezone

    from server.pas.cases import due_time

    clocks = load_directory(SANDBOX).payer.clocks
    assert clocks["specialty-drugs"] == {"expedited": 24.0, "standard": 24.0, "extension": {"standard": 0}}
    received = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)
    assert due_time(received, False, {"specialty-drugs"}, clocks) == received + timedelta(hours=24)
    assert due_time(received, False, {"inpatient-surgery"}, clocks) == received + timedelta(days=7)
    assert due_time(received, True, {"inpatient-surgery"}, clocks) == received + timedelta(hours=72)
    # A request spanning categories runs on the shortest clock; "default" stands in for the rest.
    both = {"default": {"standard": 96.0}, "advanced-imaging": {"standard": 48.0}}
    assert due_time(received, False, {"advanced-imaging", "dme-wheelchair"}, both) == received + timedelta(hours=48)
    assert due_time(received, False, {"dme-wheelchair"}, both) == received + timedelta(hours=96)


def test_a_clock_that_is_not_a_number_of_hours_is_refused(tmp_path):
    target = tmp_path / "rules"
    shutil.copytree(SANDBOX, target)
    payer = target / "payer.yaml"
    payer.write_text(payer.read_text().replace("expedited_hours: 24, standard_hours: 24", "expedited_hours: soon"))
    with pytest.raises(RulesError) as exc:
        load_directory(target)
    assert any("payer.clocks.specialty-drugs.expedited_hours: 'soon' is not a number of hours" in e for e in exc.value.errors)
