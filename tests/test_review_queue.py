"""The work queue and the search over decided cases: provider and member age columns (age and plan
from the payer's own records when the request omits them), search by member, provider or case,
filters by status, outcome, category and received date; answers with their question text and
diagnoses with their names on the case page."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest

from server.review import clock, view
from tests.test_review_support import (RATIONALE, attach, cases_collection, npi, pended_request, physician_headers, questionnaire_response,
                                       staff_headers, surgery_answers)
from tests.pas_support import pas_request, submit
from tests.test_review_support import SURGICAL, case_number


@pytest.fixture(scope="module")
def reviewer(client):
    return staff_headers(client, "reviewer")


def rows(html: str) -> dict[str, str]:
    """{case number: its queue row's HTML}."""
    out = {}
    for m in re.finditer(r'<tr class="clock-[^"]*">(.*?)</tr>', html, re.S):
        number = re.search(r'class="case-link" href="/review/cases/([^"]+)"', m.group(1))
        if number:
            out[number.group(1)] = m.group(1)
    return out


def cell(row: str, label: str) -> str:
    m = re.search(rf'<td data-label="{label}"[^>]*>(.*?)</td>', row, re.S)
    assert m, label
    return re.sub(r"<[^>]+>", " ", m.group(1)).split() and " ".join(re.sub(r"<[^>]+>", " ", m.group(1)).split())


def test_the_queue_shows_the_provider_and_the_members_age_and_plan_from_the_payers_records(client, reviewer):
    org = npi()
    _, number = pended_request(client, org)
    row = rows(client.get("/review", params={"q": org}, headers=reviewer).text)[number]
    # The example request gives no birth date or plan: the payer's member record does (born 1970-01-01, Gold PPO).
    today = clock.now().date()
    assert cell(row, "Age") == str(today.year - 1970)
    assert "Precert Gold PPO" in cell(row, "Member") and "JOE SMITH" in cell(row, "Member")
    assert cell(row, "Provider") and cell(row, "Provider") != "—"
    page = client.get(f"/review/cases/{number}", headers=reviewer).text
    assert "Born 1970-01-01 · " + str(today.year - 1970) + " years" in page and "from member records" in page


def test_the_age_is_whole_years_and_unknown_dates_give_none():
    assert view.age_on("1970-06-15", date(2026, 6, 14)) == 55
    assert view.age_on("1970-06-15", date(2026, 6, 15)) == 56
    assert view.age_on("1970", date(2026, 1, 1)) == 56
    assert view.age_on("", date(2026, 1, 1)) is None and view.age_on("soon", date(2026, 1, 1)) is None
    assert view.age_on("2030-01-01", date(2026, 1, 1)) is None


def test_decided_cases_are_searched_by_provider_and_filtered_by_outcome(client, reviewer):
    org = npi()
    _, approved = pended_request(client, org)
    _, denied = pended_request(client, org)
    _, waiting = pended_request(client, org)
    assert client.post(f"/review/api/cases/{approved}/decision", headers=reviewer, json={"action": "approve"}).status_code == 200
    r = client.post(f"/review/api/cases/{denied}/decision", headers=physician_headers(client),
                    json={"action": "deny", "reason": {"code": "medical-necessity"}, "rationale": RATIONALE, "credentials": "MD"})
    assert r.status_code == 200, r.text
    assert set(rows(client.get("/review", params={"q": org}, headers=reviewer).text)) == {waiting}
    decided = rows(client.get("/review", params={"q": org, "status": "decided"}, headers=reviewer).text)
    assert set(decided) == {approved, denied}
    assert cell(decided[approved], "Outcome") == "Approved" and cell(decided[denied], "Outcome") == "Denied"
    assert set(rows(client.get("/review", params={"q": org, "status": "decided", "outcome": "denied"}, headers=reviewer).text)) == {denied}
    assert set(rows(client.get("/review", params={"q": org, "status": "decided", "outcome": "approved"}, headers=reviewer).text)) == {approved}
    assert set(rows(client.get("/review", params={"q": org, "status": "all"}, headers=reviewer).text)) == {approved, denied, waiting}
    # By case number, and by category (none of these is imaging).
    assert set(rows(client.get("/review", params={"q": denied.lower(), "status": "all"}, headers=reviewer).text)) == {denied}
    assert rows(client.get("/review", params={"q": org, "status": "all", "category": "advanced-imaging"}, headers=reviewer).text) == {}
    assert set(rows(client.get("/review", params={"q": org, "status": "all", "category": "inpatient-surgery"}, headers=reviewer).text)) == {approved, denied, waiting}


def test_search_by_member_name_or_id_and_received_date_range(client, reviewer, mongodb_uri, settings):
    org = npi()
    _, old = pended_request(client, org)
    _, new = pended_request(client, org)
    long_ago = clock.now() - timedelta(days=40)
    cases_collection(mongodb_uri, settings).update_one({"_id": old}, {"$set": {"received": long_ago}})
    recent = (clock.now() - timedelta(days=2)).date().isoformat()
    found = rows(client.get("/review", params={"q": "joe smith", "status": "all", "from": recent}, headers=reviewer).text)
    assert new in found and old not in found
    found = rows(client.get("/review", params={"q": "12345678901", "status": "all", "to": (long_ago.date() + timedelta(days=1)).isoformat()},
                            headers=reviewer).text)
    assert old in found and new not in found
    assert rows(client.get("/review", params={"q": "nobody-by-this-name", "status": "all"}, headers=reviewer).text) == {}
    # A bad date is ignored rather than refused.
    assert client.get("/review", params={"from": "yesterday"}, headers=reviewer).status_code == 200


def test_answers_show_their_question_text_and_diagnoses_their_names(client, reviewer):
    bundle = pas_request("2.2.1", SURGICAL, provider_npi=npi())
    qr = questionnaire_response("inpatient-surgery", surgery_answers())
    for item in qr["item"]:  # an EHR that sends answers without the question text
        item.pop("text", None)
        for child in item.get("item") or []:
            child.pop("text", None)
    attach(bundle, qr)
    r = submit(client, bundle)
    assert r.status_code == 200, r.text
    number = case_number(r.json())
    page = client.get(f"/review/cases/{number}", headers=reviewer).text
    from questionnaires.catalog import get_catalog

    template = get_catalog().templates["inpatient-surgery"]
    asked = [item["text"] for link, item in template.items.items() if item.get("type") != "group" and item.get("text")]
    shown = re.findall(r"<dt class=\"d\d\">(.*?)</dt>", page)
    assert shown and all(text in asked for text in shown)
    # The example's diagnosis is sent as a bare ICD-10-CM code: the case names it.
    assert "C18.9</b> Malignant neoplasm of colon, unspecified" in page


def test_the_stylesheet_lays_the_queue_out_for_a_narrow_screen(client):
    css = client.get("/assets/review.css").text
    narrow = css[css.index("@media (max-width: 760px)"):]
    assert "table.queue thead" in narrow and "content: attr(data-label)" in narrow
