"""Extension rules per service category and urgency, from the payer configuration (``payer.clocks``):
a clock may be extended once, by up to the days the rule allows, for a reason the rule allows; the
case says which rule applies."""

from __future__ import annotations

import shutil

import pytest

from server.review import clock
from server.rules.loader import RulesError, load_directory
from tests.test_review_support import cases_collection, pended_request, staff_headers
from tests.test_rules import SANDBOX

MEMBER_ASKED = {"code": "member-requested"}


@pytest.fixture(scope="module")
def reviewer(client):
    return staff_headers(client, "reviewer")


def pended_in(client, mongodb_uri, settings, category: str) -> str:
    """A pended request filed under ``category`` (the rules decide the clock from the category)."""
    _, number = pended_request(client)
    cases_collection(mongodb_uri, settings).update_one({"_id": number}, {"$set": {"categories": [category]}})
    return number


def test_the_sandbox_configuration_gives_each_category_its_extension_rule():
    clocks = load_directory(SANDBOX).payer.clocks
    drugs = clock.extension_rule(clocks, ["specialty-drugs"], "standard")
    assert drugs.max_days == 0 and not drugs.allowed and drugs.source == "payer rule for specialty-drugs"
    imaging = clock.extension_rule(clocks, ["advanced-imaging"], "standard")
    assert imaging.max_days == 7 and imaging.reasons == ("information-requested", "member-requested")
    surgery = clock.extension_rule(clocks, ["inpatient-surgery"], "standard")
    assert surgery.max_days == 14 and len(surgery.reasons) == 4 and surgery.source == "Precert default"
    assert not clock.extension_rule(clocks, ["inpatient-surgery"], "expedited").allowed
    # Several categories: the strictest rule of them all.
    both = clock.extension_rule(clocks, ["advanced-imaging", "inpatient-surgery"], "standard")
    assert both.max_days == 7 and both.reasons == ("information-requested", "member-requested")


def test_a_payer_default_and_expedited_extensions_can_be_configured():
    clocks = {"default": {"extension": {"standard": 10, "expedited": 3}, "extension_reasons": ["specialist-review"]}}
    rule = clock.extension_rule(clocks, ["dme-wheelchair"], "expedited")
    assert rule.max_days == 3 and rule.reasons == ("specialist-review",) and rule.source == "payer default"
    assert clock.extension_rule(clocks, [], "standard").max_days == 10


@pytest.mark.parametrize("spec, words", [
    ("{standard_extension_days: 45}", "standard_extension_days: '45' is not a whole number of days"),
    ("{expedited_extension_days: soon}", "expedited_extension_days: 'soon' is not a whole number of days"),
    ("{extension_reasons: [boredom]}", "extension_reasons: a list of one or more of information-requested"),
    ("{extension_days: 3}", "give expedited_hours and/or standard_hours"),
])
def test_a_bad_extension_rule_is_refused_when_the_rules_load(tmp_path, spec, words):
    target = tmp_path / "rules"
    shutil.copytree(SANDBOX, target)
    payer = target / "payer.yaml"
    text = payer.read_text()
    assert "    advanced-imaging: {standard_extension_days: 7" in text
    payer.write_text(text.replace("  clocks:\n", f"  clocks:\n    dme-wheelchair: {spec}\n", 1))
    with pytest.raises(RulesError) as exc:
        load_directory(target)
    assert any(words in e for e in exc.value.errors), exc.value.errors


def test_a_category_that_is_never_extended_refuses_and_the_case_says_so(client, reviewer, mongodb_uri, settings):
    number = pended_in(client, mongodb_uri, settings, "specialty-drugs")
    r = client.post(f"/review/api/cases/{number}/extend", headers=reviewer, json={"days": 1, "reason": MEMBER_ASKED})
    assert r.status_code == 409 and "payer rule for specialty-drugs" in r.json()["detail"]
    rule = client.get(f"/review/api/cases/{number}", headers=reviewer).json()["extension_rule"]
    assert rule == {"urgency": "standard", "max_days": 0, "reasons": [], "times": 1, "allowed": False,
                    "source": "payer rule for specialty-drugs"} or (rule["max_days"] == 0 and not rule["allowed"])
    page = client.get(f"/review/cases/{number}", headers=reviewer).text
    assert "Standard requests here are not extended (payer rule for specialty-drugs)." in page
    assert 'action="/review/cases/' + number + '/extend"' not in page


def test_a_category_with_a_shorter_rule_caps_the_days_and_the_reasons(client, reviewer, mongodb_uri, settings):
    number = pended_in(client, mongodb_uri, settings, "advanced-imaging")
    page = client.get(f"/review/cases/{number}", headers=reviewer).text
    assert "may be extended once, by up to 7 day(s), for: information-requested, member-requested" in page
    assert 'value="specialist-review"' not in page and 'value="member-requested"' in page
    r = client.post(f"/review/api/cases/{number}/extend", headers=reviewer, json={"days": 8, "reason": MEMBER_ASKED})
    assert r.status_code == 400 and "from 1 to 7 (payer rule for advanced-imaging)" in r.json()["detail"]
    r = client.post(f"/review/api/cases/{number}/extend", headers=reviewer,
                    json={"days": 7, "reason": {"code": "specialist-review"}})
    assert r.status_code == 400 and "allows only these reasons: information-requested, member-requested" in r.json()["detail"]
    r = client.post(f"/review/api/cases/{number}/extend", headers=reviewer, json={"days": 7, "reason": MEMBER_ASKED})
    assert r.status_code == 200, r.text
    assert r.json()["extension"]["days"] == 7 and r.json()["extension"]["rule"]["max_days"] == 7
    again = client.post(f"/review/api/cases/{number}/extend", headers=reviewer, json={"days": 1, "reason": MEMBER_ASKED})
    assert again.status_code == 409 and "already extended once" in again.json()["detail"]


def test_a_category_without_a_rule_keeps_the_14_day_default(client, reviewer):
    _, number = pended_request(client)
    r = client.post(f"/review/api/cases/{number}/extend", headers=reviewer, json={"days": 15, "reason": MEMBER_ASKED})
    assert r.status_code == 400 and "from 1 to 14 (Precert default)" in r.json()["detail"]
    assert client.post(f"/review/api/cases/{number}/extend", headers=reviewer,
                       json={"days": 14, "reason": {"code": "specialist-review"}}).status_code == 200


def test_the_monitoring_endpoint_lists_every_categorys_extension_rule(client, reviewer):
    rules = client.get("/review/api/clocks", headers=reviewer).json()["rules"]["extensions"]
    assert rules["specialty-drugs"]["standard"]["max_days"] == 0
    assert rules["advanced-imaging"]["standard"]["max_days"] == 7
    assert rules["default"]["standard"]["max_days"] == 14 and rules["default"]["expedited"]["allowed"] is False
