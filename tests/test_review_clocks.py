"""Decision clocks with a controllable time source: expedited 72 hours, standard 7 calendar days
from receipt; due soon and overdue in the queue and the monitoring endpoint; one extension of a
standard request, with a reason."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from server.review import clock
from tests.test_review_support import pended_request, staff_headers


@pytest.fixture
def time_machine():
    yield clock
    clock.reset()


@pytest.fixture(scope="module")
def reviewer(client):
    return staff_headers(client, "reviewer")


def parse(instant: str) -> datetime:
    return datetime.fromisoformat(instant.replace("Z", "+00:00"))


def case(client, headers, number) -> dict:
    return client.get(f"/review/api/cases/{number}", headers=headers).json()


def clock_row(client, headers, number) -> dict:
    snapshot = client.get("/review/api/clocks", headers=headers).json()
    return next(c for c in snapshot["cases"] if c["id"] == number)


def queue_row(client, headers, number, **params) -> str | None:
    html = client.get("/review", params=params, headers=headers).text
    at = html.find(f'href="/review/cases/{number}"')
    if at < 0:
        return None
    return html[html.rfind("<tr", 0, at):html.find("</tr>", at)]


def test_the_time_source_can_be_frozen_moved_and_reset(time_machine):
    at = datetime(2030, 5, 1, 12, 0)
    time_machine.freeze(at)
    assert time_machine.now().isoformat() == "2030-05-01T12:00:00+00:00"
    time_machine.advance(timedelta(hours=5))
    assert time_machine.now().hour == 17
    time_machine.reset()
    time_machine.advance(timedelta(days=3))
    assert (time_machine.now() - datetime.now(time_machine.now().tzinfo)).days in (2, 3)
    time_machine.reset()
    assert abs((time_machine.now() - datetime.now(time_machine.now().tzinfo)).total_seconds()) < 5


def test_expedited_requests_are_due_in_72_hours_and_standard_in_7_days(client, reviewer):
    _, standard = pended_request(client)
    _, urgent = pended_request(client, priority="stat")
    s, u = case(client, reviewer, standard), case(client, reviewer, urgent)
    assert u["urgency"] == "expedited" and s["urgency"] == "standard"
    assert parse(u["due"]) - parse(u["received"]) == timedelta(hours=72)
    assert parse(s["due"]) - parse(s["received"]) == timedelta(days=7)


def test_a_standard_clock_runs_on_time_then_due_soon_then_overdue(client, reviewer, time_machine):
    _, number = pended_request(client)
    received = parse(case(client, reviewer, number)["received"])
    time_machine.freeze(received + timedelta(days=1))
    row = clock_row(client, reviewer, number)
    assert row["clock"] == "on-time" and row["remaining_seconds"] == 6 * 86400
    assert "6 d 0 h left" in queue_row(client, reviewer, number) and "pill on-time" in queue_row(client, reviewer, number)
    time_machine.freeze(received + timedelta(days=5, hours=1))  # 47 hours left: due soon
    assert clock_row(client, reviewer, number)["clock"] == "due-soon"
    assert queue_row(client, reviewer, number, due="due-soon") is not None
    assert queue_row(client, reviewer, number, due="overdue") is None
    time_machine.freeze(received + timedelta(days=7, minutes=1))
    row = clock_row(client, reviewer, number)
    assert row["clock"] == "overdue" and row["remaining_seconds"] == -60
    html = queue_row(client, reviewer, number, due="overdue")
    assert "overdue by 1 min" in html and "clock-overdue" in html
    page = client.get(f"/review/cases/{number}", headers=reviewer).text
    assert "overdue by 1 min" in page


def test_an_expedited_clock_is_due_soon_in_its_last_day(client, reviewer, time_machine):
    _, number = pended_request(client, priority="stat")
    received = parse(case(client, reviewer, number)["received"])
    time_machine.freeze(received + timedelta(hours=47))
    assert clock_row(client, reviewer, number)["clock"] == "on-time"
    time_machine.freeze(received + timedelta(hours=49))
    assert clock_row(client, reviewer, number)["clock"] == "due-soon"
    time_machine.freeze(received + timedelta(hours=72, seconds=1))
    assert clock_row(client, reviewer, number)["clock"] == "overdue"


def test_the_monitoring_endpoint_reports_every_open_clock(client, reviewer, time_machine):
    _, number = pended_request(client)
    received = parse(case(client, reviewer, number)["received"])
    at = received + timedelta(days=6, hours=12)
    time_machine.freeze(at)
    snapshot = client.get("/review/api/clocks", headers=reviewer).json()
    assert parse(snapshot["now"]) == at
    assert {k: v for k, v in snapshot["rules"].items() if k != "extensions"} == {"expedited_hours": 72, "standard_days": 7, "due_soon_hours": {"expedited": 24, "standard": 48},
                                 "extension": {"urgencies": ["standard"], "max_days": 14, "times": 1}}
    assert snapshot["pended"] == len(snapshot["cases"]) == snapshot["overdue"] + snapshot["due_soon"] + snapshot["on_time"]
    assert sum(sum(v.values()) for v in snapshot["by_urgency"].values()) == snapshot["pended"]
    row = next(c for c in snapshot["cases"] if c["id"] == number)
    assert row["clock"] == "due-soon" and row["remaining_seconds"] == 12 * 3600
    dues = [parse(c["due"]) for c in snapshot["cases"]]  # as instants: "…00Z" is after "…00.015Z" as text
    assert dues == sorted(dues) and parse(snapshot["oldest_due"]) == dues[0]
    assert set(snapshot["appeals"]) == {"open", "overdue", "stages"}
    assert "member" not in row and "patient_id" not in row  # monitoring carries no PHI


def test_a_standard_request_can_be_extended_once_with_a_reason(client, reviewer, time_machine):
    _, number = pended_request(client)
    received = parse(case(client, reviewer, number)["received"])
    time_machine.freeze(received + timedelta(days=2))
    r = client.post(f"/review/api/cases/{number}/extend", headers=reviewer,
                    json={"days": 14, "reason": {"code": "information-requested", "text": "Awaiting the angiography report."}})
    assert r.status_code == 200, r.text
    assert parse(r.json()["due"]) == received + timedelta(days=21)
    ext = r.json()["extension"]
    assert ext["days"] == 14 and ext["by"] == "reviewer" and "Awaiting the angiography report." in ext["reason"]
    assert parse(ext["previous_due"]) == received + timedelta(days=7)
    assert any(h["event"] == "extended" for h in case(client, reviewer, number)["history"])
    again = client.post(f"/review/api/cases/{number}/extend", headers=reviewer, json={"days": 1, "reason": {"code": "member-requested"}})
    assert again.status_code == 409 and "already extended once" in again.json()["detail"]
    # Past the original 7 days, the extended clock is still running.
    time_machine.freeze(received + timedelta(days=8))
    assert clock_row(client, reviewer, number)["clock"] == "on-time"
    assert "extended" in queue_row(client, reviewer, number)
    page = client.get(f"/review/cases/{number}", headers=reviewer).text
    assert "Extended by 14 day(s)" in page


def test_the_extension_form(client, reviewer, time_machine):
    _, number = pended_request(client)
    r = client.post(f"/review/cases/{number}/extend", data={"days": "3", "reason_code": "specialist-review", "reason_text": "cardiothoracic review"}, headers=reviewer)
    assert r.status_code == 303 and r.headers["location"].endswith("?done=extend")
    assert case(client, reviewer, number)["due"] != case(client, reviewer, number)["received"]
    bad = client.post(f"/review/cases/{number}/extend", data={"days": "3", "reason_code": "member-requested"}, headers=reviewer)
    assert bad.status_code == 409 and "already extended once" in bad.text


@pytest.mark.parametrize("body, status, words", [
    ({"days": 15, "reason": {"code": "member-requested"}}, 400, "1 to 14"),
    ({"days": 0, "reason": {"code": "member-requested"}}, 400, "1 to 14"),
    ({"days": "7", "reason": {"code": "member-requested"}}, 400, "1 to 14"),
    ({"days": "seven", "reason": {"code": "member-requested"}}, 400, "1 to 14"),
    ({"days": True, "reason": {"code": "member-requested"}}, 400, "1 to 14"),
    ({"days": 3.5, "reason": {"code": "member-requested"}}, 400, "1 to 14"),
    ({"days": 3}, 400, "reason must be an object"),
    ({"days": 3, "reason": "because"}, 400, "reason must be an object"),
    ({"days": 3, "reason": {"code": "<script>"}}, 400, "needs a reason"),
    ({"days": 3, "reason": {"code": "other"}}, 400, "needs a note"),
    ({"days": 3, "reason": {"code": "other", "text": 42}}, 400, "strings"),
])
def test_bad_extension_requests_are_refused(client, reviewer, body, status, words):
    _, number = pended_request(client)
    r = client.post(f"/review/api/cases/{number}/extend", headers=reviewer, json=body)
    assert r.status_code == status, r.text
    if words:
        assert words in r.json()["detail"]


def test_extensions_that_the_rule_does_not_allow(client, reviewer, time_machine):
    _, urgent = pended_request(client, priority="stat")
    r = client.post(f"/review/api/cases/{urgent}/extend", headers=reviewer, json={"days": 2, "reason": {"code": "member-requested"}})
    assert r.status_code == 409 and "expedited requests are not extended" in r.json()["detail"]
    _, late = pended_request(client)
    time_machine.freeze(parse(case(client, reviewer, late)["due"]) + timedelta(minutes=5))
    r = client.post(f"/review/api/cases/{late}/extend", headers=reviewer, json={"days": 2, "reason": {"code": "member-requested"}})
    assert r.status_code == 409 and "already overdue" in r.json()["detail"]
    time_machine.reset()
    _, decided = pended_request(client)
    client.post(f"/review/api/cases/{decided}/decision", headers=reviewer, json={"action": "approve"})
    r = client.post(f"/review/api/cases/{decided}/extend", headers=reviewer, json={"days": 2, "reason": {"code": "member-requested"}})
    assert r.status_code == 409 and "only pended cases" in r.json()["detail"]
    r = client.post("/review/api/cases/NOPE/extend", headers=reviewer, json={"days": 2, "reason": {"code": "member-requested"}})
    assert r.status_code == 404
    for raw in (b"{", b"[]", b"null", b""):
        r = client.post(f"/review/api/cases/{late}/extend", headers={**reviewer, "Content-Type": "application/json"}, content=raw)
        assert r.status_code == 400 and r.json()["detail"]
