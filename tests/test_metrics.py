"""CMS-0057-F prior-authorization metrics on a seeded set of decisions, with every expected figure
worked out by hand below; the public report page, its charts, and the CSV and JSON exports."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, datetime, timezone

import httpx
import pytest

from server.review import metrics
from tests.support import ThreadedServer


def at(day: int, hour: float = 0, month: int = 3) -> datetime:
    return datetime(2019, month, day, int(hour), int(round((hour % 1) * 60)), tzinfo=timezone.utc)


def item(action: str, pa: str = "auth-needed", seq: int = 1) -> dict:
    return {"sequence": seq, "action": action, "pa_needed": pa, "summary": "seeded"}


def case(name, urgency, received, decided, actions, *, status="decided", original=None, overturned=None, extended=False):
    doc = {"_id": f"MT-{RUN}-{name}", "key": f"metrics-test|{RUN}|{name}", "status": status, "urgency": urgency, "received": received, "decided": decided,
           "decisions": [item(a, seq=i + 1) if isinstance(a, str) else a for i, a in enumerate(actions)]}
    if original:
        doc["original_decisions"] = [item(a, seq=i + 1) for i, a in enumerate(original)]
    if overturned:
        doc["overturned"] = overturned
    if extended:
        doc["extension"] = {"days": 5, "reason_code": "information-requested", "at": received}
    return doc


RUN = uuid.uuid4().hex[:8]

# March 2019. Hours from receipt to the first determination in brackets.
SEED = [
    # standard
    case("S1", "standard", at(4, 8), at(4, 8), ["A1"]),                                              # approved [0]
    case("S2", "standard", at(5, 9), at(7, 9), [dict(item("A3"), automatic_clinical_denial=True)]),  # denied by an opt-in rule [48]
    case("S3", "standard", at(6, 10), at(8, 22), ["A1"], original=["A3"], overturned=at(20, 12)),    # denied, approved after appeal [60]
    case("S4", "standard", at(10), at(20), ["A1"], extended=True),                                   # approved after extension [240]
    dict(case("S5", "standard", at(11, 12), at(12), ["A1", "A3"]), due=at(11, 18)),                  # approved in part, late on a 6-hour clock [12]
    case("S6", "standard", at(12), at(13), ["A3"], extended=True),                                   # denied although extended [24]
    case("S11", "standard", at(31, 20), at(31, 23.5), ["A6"]),                                        # approved with changes [3.5]
    case("S13", "standard", at(14), at(15, 6), ["A1"], status="superseded"),                         # decided, later updated [30]
    # not counted
    case("X1", "standard", at(5), at(5), [item("A1", pa="no-auth")]),                                # no authorization needed
    case("X2", "standard", at(6), at(6), [], status="error"),                                        # invalid request
    dict(case("X3", "standard", at(7), None, ["A4"], status="pended"), due=at(14)),                     # not decided yet
    case("X4", "standard", at(31, 22), at(1, 1, month=4), ["A1"]),                                   # decided in April
    case("X5", "expedited", at(27, 12), at(28, 12, month=2), ["A3"]),                                 # decided in February
    case("X6", "standard", at(8), at(8), ["C"], status="cancelled"),                                 # withdrawn
    # expedited
    case("E1", "expedited", at(2, 6), at(2, 18), ["A1"]),                                            # approved [12]
    case("E2", "expedited", at(9), at(10, 12), ["A3"]),                                              # denied [36]
    case("E3", "expedited", at(16), at(18), ["A1"], original=["A3"], overturned=at(19)),             # denied, approved after appeal [48]
    case("E4", "expedited", at(20), at(20, 6), ["A1"]),                                              # approved [6]
]

# Worked out by hand.
# Standard: 8 requests (S1 S2 S3 S4 S5 S6 S11 S13); approved S1 S4 S5 S11 S13 = 5 -> 62.5 %;
#   denied S2 S3 S6 = 3 -> 37.5 %; approved after appeal S3 = 1 -> 12.5 %; extended S4 S6, approved S4 -> 12.5 %;
#   hours 0 + 48 + 60 + 240 + 12 + 24 + 3.5 + 30 = 417.5 -> average 52.1875 -> 52.19;
#   sorted 0 3.5 12 24 | 30 48 60 240 -> median (24 + 30) / 2 = 27;
#   late: S5 only (its 6-hour clock ran out at 18:00; S4's 7 days plus 5 extended are 288 h > 240);
#   automatic clinical denials: S2.
# Expedited: 4 requests; approved E1 E4 -> 50 %; denied E2 E3 -> 50 %; after appeal E3 -> 25 %; none extended;
#   hours 12 + 36 + 48 + 6 = 102 -> average 25.5; sorted 6 12 | 36 48 -> median 24; none late (all under 72 h).
# All: 12; approved 7 -> 58.33 %; denied 5 -> 41.67 %; after appeal 2 -> 16.67 %; after extension 1 -> 8.33 %;
#   hours 519.5 / 12 = 43.2917 -> 43.29; sorted 0 3.5 6 12 12 24 | 30 36 48 48 60 240 -> median 27.
STANDARD = {"requests": 8, "approved": 5, "denied": 3, "approved_after_appeal": 1, "extended": 2, "approved_after_extension": 1,
            "decided_late": 1, "automatic_clinical_denials": 1, "percent_approved": 62.5, "percent_denied": 37.5, "percent_approved_after_appeal": 12.5,
            "percent_approved_after_extension": 12.5, "average_hours": 52.19, "median_hours": 27.0}
EXPEDITED = {"requests": 4, "approved": 2, "denied": 2, "approved_after_appeal": 1, "extended": 0, "approved_after_extension": 0,
             "decided_late": 0, "automatic_clinical_denials": 0, "percent_approved": 50.0, "percent_denied": 50.0, "percent_approved_after_appeal": 25.0,
             "percent_approved_after_extension": 0.0, "average_hours": 25.5, "median_hours": 24.0}
ALL = {"requests": 12, "approved": 7, "denied": 5, "approved_after_appeal": 2, "extended": 2, "approved_after_extension": 1,
       "decided_late": 1, "automatic_clinical_denials": 1, "percent_approved": 58.33, "percent_denied": 41.67, "percent_approved_after_appeal": 16.67,
       "percent_approved_after_extension": 8.33, "average_hours": 43.29, "median_hours": 27.0}
MARCH = {"from": "2019-03-01", "to": "2019-03-31"}


@pytest.fixture(scope="module")
def seeded(mongodb_uri, settings):
    from tests.test_review_support import cases_collection

    cases = cases_collection(mongodb_uri, settings)
    cases.insert_many([dict(d) for d in SEED])
    yield
    cases.delete_many({"_id": {"$regex": f"^MT-{RUN}-"}})


@pytest.fixture
def anonymous(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


# ---------------------------------------------------------------------------------- the arithmetic
def test_figures_for_a_period_by_urgency():
    result = metrics.compute(SEED, metrics.parse_period("2019-03-01", "2019-03-31"))
    assert result["standard"] == STANDARD
    assert result["expedited"] == EXPEDITED
    assert result["all"] == ALL
    assert result["period"] == {"start": "2019-03-01", "end": "2019-03-31"}


def test_series_by_week_month_and_day():
    period = metrics.parse_period("2019-03-01", "2019-03-31")
    result = metrics.compute(SEED, period)
    assert result["unit"] == "week"  # a month is shown week by week
    weeks = {b["start"]: b for b in result["series"]}
    assert list(weeks) == ["2019-02-25", "2019-03-04", "2019-03-11", "2019-03-18", "2019-03-25"]
    # Week of 4 March: S1 approved, S2 and S3 denied (S3 only later approved on appeal); E2 denied (Sunday 10th).
    assert (weeks["2019-03-04"]["standard"]["approved"], weeks["2019-03-04"]["standard"]["denied"]) == (1, 2)
    assert weeks["2019-03-04"]["expedited"]["requests"] == 1 and weeks["2019-03-04"]["expedited"]["denied"] == 1
    # Week of 11 March: S5 [12 h], S6 [24 h], S13 [30 h] -> median 24.
    assert weeks["2019-03-11"]["standard"]["requests"] == 3 and weeks["2019-03-11"]["standard"]["median_hours"] == 24.0
    # E1 was decided on Saturday 2 March, in the week starting 25 February; S11 on Sunday 31 March.
    assert weeks["2019-02-25"]["expedited"]["approved"] == 1 and weeks["2019-03-25"]["standard"]["approved"] == 1
    assert sum(b["standard"]["requests"] for b in result["series"]) == 8
    by_month = metrics.compute(SEED, metrics.parse_period("2019-01-01", "2019-06-30"))
    assert by_month["unit"] == "month" and [b["start"] for b in by_month["series"]][:4] == ["2019-01-01", "2019-02-01", "2019-03-01", "2019-04-01"]
    months = {b["start"]: b for b in by_month["series"]}
    assert months["2019-02-01"]["expedited"]["denied"] == 1 and months["2019-04-01"]["standard"]["approved"] == 1
    by_day = metrics.compute(SEED, metrics.parse_period("2019-03-04", "2019-03-08"))
    assert by_day["unit"] == "day" and len(by_day["series"]) == 5 and by_day["standard"]["requests"] == 3


def test_an_empty_period_has_no_percentages():
    result = metrics.compute(SEED, metrics.parse_period("2018-01-01", "2018-01-31"))
    assert result["standard"]["requests"] == 0 and result["standard"]["percent_approved"] is None
    assert result["standard"]["median_hours"] is None


def test_the_period_defaults_to_the_year_so_far_and_is_checked():
    p = metrics.parse_period(None, None, today=date(2026, 11, 24))
    assert (p.start, p.end) == (date(2026, 1, 1), date(2026, 11, 24))
    p = metrics.parse_period("", "2025-06-30", today=date(2026, 11, 24))
    assert (p.start, p.end) == (date(2025, 1, 1), date(2025, 6, 30))
    for start, end in (("2019-13-01", None), ("2019-3-1", None), ("2019-03-31", "2019-03-01"), ("1990-01-01", "2019-01-01"), ("<script>", None)):
        with pytest.raises(metrics.PeriodError):
            metrics.parse_period(start, end)


# ---------------------------------------------------------------------------------- the API and exports
def test_the_json_api_gives_the_figures_without_signing_in(anonymous, seeded):
    r = anonymous.get("/reports/prior-auth.json", params=MARCH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    data = r.json()
    assert data["standard"] == STANDARD and data["expedited"] == EXPEDITED and data["all"] == ALL
    assert data["payer"] == "Precert Demo Health Plan" and data["unit"] == "week"
    listed = {s["rule"] for s in data["prior_auth_list"]}
    assert {"inpatient-surgery", "advanced-imaging", "home-oxygen"} <= listed
    assert set(data["definitions"]) >= {"percent_approved", "median_hours"}
    download = anonymous.get("/reports/prior-auth.json", params={**MARCH, "download": "1"})
    assert download.headers["content-disposition"] == 'attachment; filename="prior-auth-metrics-2019-03-01-2019-03-31.json"'


def test_no_protected_health_information_is_published(anonymous, seeded):
    texts = [anonymous.get(path, params=MARCH).text for path in ("/reports/prior-auth", "/reports/prior-auth.json", "/reports/prior-auth.csv")]
    for text in texts:
        assert f"MT-{RUN}" not in text  # no case numbers
        for phi in ("JOE SMITH", "PCM000", "1122334455", "Patient/", "birthDate", "pat-0"):
            assert phi not in text
    data = anonymous.get("/reports/prior-auth.json", params=MARCH).json()
    assert set(data) == {"period", "unit", "standard", "expedited", "all", "series", "payer", "generated", "prior_auth_list", "definitions"}
    assert set(data["standard"]) == set(STANDARD)  # counts, percentages and hours only
    assert all(set(b) == {"start", "standard", "expedited"} for b in data["series"])


def test_csv_export_summary_and_by_week(anonymous, seeded):
    r = anonymous.get("/reports/prior-auth.csv", params=MARCH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="prior-auth-metrics-2019-03-01-2019-03-31.csv"'
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["urgency"] for row in rows] == ["standard", "expedited", "all"]
    standard = rows[0]
    assert standard["period_start"] == "2019-03-01" and standard["period_end"] == "2019-03-31" and standard["bucket_start"] == ""
    assert (standard["requests"], standard["percent_approved"], standard["percent_denied"]) == ("8", "62.5", "37.5")
    assert (standard["percent_approved_after_appeal"], standard["percent_approved_after_extension"]) == ("12.5", "12.5")
    assert (standard["average_hours"], standard["median_hours"]) == ("52.19", "27.0")
    assert (rows[1]["average_hours"], rows[1]["median_hours"], rows[2]["percent_approved"]) == ("25.5", "24.0", "58.33")
    weekly = list(csv.DictReader(io.StringIO(anonymous.get("/reports/prior-auth.csv", params={**MARCH, "by": "week"}).text)))
    assert len(weekly) == 10 and weekly[0]["bucket_start"] == "2019-02-25"
    week = next(r for r in weekly if r["bucket_start"] == "2019-03-11" and r["urgency"] == "standard")
    assert (week["requests"], week["approved"], week["denied"], week["median_hours"]) == ("3", "2", "1", "24.0")
    empty = next(r for r in weekly if r["bucket_start"] == "2019-02-25" and r["urgency"] == "standard")
    assert empty["requests"] == "0" and empty["percent_approved"] == ""


def test_the_report_page_shows_the_figures_and_charts(anonymous, seeded):
    r = anonymous.get("/reports/prior-auth", params=MARCH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert 'data-figure="standard-approved">62.5%' in html and 'data-figure="standard-denied">37.5%' in html
    assert 'data-figure="expedited-approved">50.0%' in html and 'data-figure="expedited-denied">50.0%' in html
    assert "52.2 h (2.2 d)" in html and "27.0 h" in html and "25.5 h" in html and "24.0 h" in html
    assert "12.5%" in html and "16.7%" in html and "8.3%" in html
    assert html.count("<svg") == 4 and html.count('class="bar approved"') >= 5 and "<polyline" in html
    assert "<title>11 Mar: 2 approved</title>" in html
    assert "Elective inpatient surgery" in html and "Advanced imaging" in html  # the list of services needing PA
    assert "/reports/prior-auth.csv?from=2019-03-01&amp;to=2019-03-31" in html
    assert "Sign out" not in html and "Work queue" not in html
    assert "<script" not in html


@pytest.mark.parametrize("params", [
    {"from": "2019-13-01"}, {"from": "2019-03-31", "to": "2019-03-01"}, {"from": "1900-01-01", "to": "2019-01-01"},
    {"to": "<script>alert(1)</script>"}, {"from": "2019-03-01", "by": "year"}, {"from": "x" * 5000},
])
def test_bad_periods_are_refused_with_a_clear_message(anonymous, params):
    for path in ("/reports/prior-auth.json", "/reports/prior-auth.csv"):
        r = anonymous.get(path, params=params)
        assert r.status_code == 400 and r.json()["error"] == "invalid" and r.json()["message"]
    page = anonymous.get("/reports/prior-auth", params=params)
    assert page.status_code == 400 and 'class="error"' in page.text and "<script>alert(1)" not in page.text


def test_the_public_report_stays_public_when_authentication_is_enforced(mongodb_uri):
    from server.auth.testing import secured_app

    srv = ThreadedServer(secured_app(mongodb_uri)).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30, follow_redirects=False) as c:
            for path in ("/reports/prior-auth", "/reports/prior-auth.json", "/reports/prior-auth.csv", "/assets/review.css", "/review/login"):
                assert c.get(path).status_code == 200, path
            assert c.get("/review").status_code == 401
            assert c.get("/review/api/clocks").status_code == 401
            assert c.get("/review/cases/X").status_code == 401
            assert c.get("/sandbox/requests").status_code == 404  # only the open sandbox lists requests
            r = c.post("/review/login", data={"username": "reviewer", "password": "reviewer-sandbox"})
            assert r.status_code == 303 and "precert_staff" in r.headers["set-cookie"]
            assert c.get("/review").status_code == 200
    finally:
        srv.stop()


def test_decisions_extensions_and_appeals_flow_into_the_figures(client, anonymous):
    from datetime import timedelta

    from tests.test_review_support import denied_case, pended_request, staff_headers

    today = datetime.now(timezone.utc).date()
    period = {"from": (today - timedelta(days=1)).isoformat(), "to": (today + timedelta(days=1)).isoformat()}
    before = anonymous.get("/reports/prior-auth.json", params=period).json()["standard"]
    reviewer, director = staff_headers(client, "reviewer"), staff_headers(client, "director")
    # Extended, then approved.
    _, extended = pended_request(client)
    assert client.post(f"/review/api/cases/{extended}/extend", headers=reviewer, json={"days": 3, "reason": {"code": "member-requested"}}).status_code == 200
    assert client.post(f"/review/api/cases/{extended}/decision", headers=reviewer, json={"action": "approve"}).status_code == 200
    # Denied, then approved on appeal.
    _, appealed = denied_case(client, reviewer)
    aid = client.post(f"/review/api/cases/{appealed}/appeals", headers=reviewer, json={"reason": "new evidence"}).json()["id"]
    assert client.post(f"/review/api/appeals/{aid}/decision", headers=director, json={"decision": "overturned"}).status_code == 200
    # Still pended: not counted.
    pended_request(client)
    after = anonymous.get("/reports/prior-auth.json", params=period).json()["standard"]
    delta = {k: after[k] - before[k] for k in ("requests", "approved", "denied", "approved_after_appeal", "extended", "approved_after_extension")}
    assert delta == {"requests": 2, "approved": 1, "denied": 1, "approved_after_appeal": 1, "extended": 1, "approved_after_extension": 1}


def test_report_page_counts_late_decisions_and_automatic_clinical_denials(seeded, anonymous):
    page = anonymous.get("/reports/prior-auth", params=MARCH)
    assert page.status_code == 200
    assert "<th>Decided after the clock ran out</th><td>1</td><td>0</td><td>1</td>" in page.text
    assert "<th>Denied on clinical grounds without human review (payer opt-in)</th><td>1</td><td>0</td><td>1</td>" in page.text


# ---------------------------------------------------------------------------------- names and scales
def _series(hours: list[float | None]) -> list[dict]:
    def f(h):
        return {"requests": 0 if h is None else 1, "approved": 0, "denied": 0, "average_hours": h, "median_hours": h}
    return [{"start": f"2026-03-{i + 2:02d}", "standard": f(h), "expedited": f(None)} for i, h in enumerate(hours)]


@pytest.mark.parametrize("hours, unit, axis_max", [
    ([0.0004, 0.0011], "seconds", 5.0),     # decided at submission: 1.4 s and 4 s
    ([0.25, 1.5], "minutes", 100.0),        # 15 and 90 minutes
    ([30.0, 50.0, None, 6.0], "hours", 50.0),
    ([150.0, 400.0], "days", 20.0),         # 6.25 and 16.7 days
])
def test_the_time_chart_scales_its_axis_and_unit_to_the_data(hours, unit, axis_max):
    from server.review import charts

    chart = charts.time_chart(_series(hours), "standard", "day")
    assert chart["unit"] == unit and chart["axis_max"] == axis_max
    top_tick = chart["ticks"][-1]
    assert float(top_tick["label"]) == axis_max
    # The highest point sits at or under the top of the axis, and above its middle: the data fill the chart.
    highest = min(p["y"] for p in chart["points"])
    assert chart["top"] <= highest < (chart["top"] + chart["bottom"]) / 2
    assert all(unit in p["title"] for p in chart["points"])


def test_the_report_names_the_service_codes_that_need_authorization(anonymous):
    data = anonymous.get("/reports/prior-auth.json", params=MARCH).json()
    codes = {c["code"]: c.get("name") for s in data["prior_auth_list"] for c in s["codes"] if c.get("code")}
    assert codes["33511"] == "Coronary artery bypass, vein only; 2 venous grafts" and codes["1876366"] == "ocrelizumab"
    assert sum(1 for name in codes.values() if name) == len(codes)  # every sandbox service code has its name
    html = anonymous.get("/reports/prior-auth", params=MARCH).text
    assert "<b>E0431</b> Portable gaseous oxygen system, rental" in html
    # Every CMS-0057-F figure is still there, for both urgencies.
    for urgency in ("standard", "expedited"):
        for key in ("requests", "percent_approved", "percent_denied", "percent_approved_after_appeal",
                    "percent_approved_after_extension", "average_hours", "median_hours", "decided_late"):
            assert key in data[urgency]
