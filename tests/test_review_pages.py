"""The workbench pages over HTTP: sign-in, the queue and its filters, the case page in readable form,
the decide/assign/note forms, documents, escaping, security headers, and every bad input answered
with a clear 4xx."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.pas_support import FHIR, pas_request as _pas_request, submit
from tests.test_review_support import (
    attach, case_number, denied_case, npi, pended_request, questionnaire_response, staff_headers, surgery_answers,
)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def browser_like(server):
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=False) as c:
        yield c


def sign_in(c: httpx.Client, user: str = "reviewer", password: str = "reviewer-sandbox") -> httpx.Response:
    return c.post("/review/login", data={"username": user, "password": password, "next": "/review"})


@pytest.fixture(scope="module")
def reviewer(client):
    return staff_headers(client, "reviewer")


@pytest.fixture(scope="module")
def director(client):
    return staff_headers(client, "director")


def case_ids(html: str) -> list[str]:
    return re.findall(r'class="case-link" href="/review/cases/([A-Z0-9]+)"', html)


# ---------------------------------------------------------------------------------- sign-in
def test_anonymous_visitors_are_sent_to_sign_in_and_come_back(browser_like):
    r = browser_like.get("/review/cases/PA1?x=1")
    assert r.status_code == 303 and r.headers["location"] == "/review/login?next=%2Freview%2Fcases%2FPA1%3Fx%3D1"
    hostile = browser_like.get("/review/login", params={"next": '/review"><script>alert(1)</script>'})
    assert hostile.status_code == 200 and "<script>alert(1)" not in hostile.text
    page = browser_like.get(r.headers["location"])
    assert page.status_code == 200 and 'name="next" value="/review/cases/PA1?x=1"' in page.text
    r = browser_like.post("/review/login", data={"username": "reviewer", "password": "reviewer-sandbox", "next": "/review/cases/PA1?x=1"})
    assert r.status_code == 303 and r.headers["location"] == "/review/cases/PA1?x=1"
    cookie = r.headers["set-cookie"].lower()
    assert "precert_staff=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert browser_like.get("/review").status_code == 200


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/review", "/review\\..\\x", "javascript:alert(1)", "/fhir/Patient"])
def test_sign_in_never_redirects_off_the_workbench(browser_like, target):
    r = browser_like.post("/review/login", data={"username": "reviewer", "password": "reviewer-sandbox", "next": target})
    assert r.status_code == 303 and r.headers["location"] == "/review"


def test_wrong_password_and_bad_sign_in_forms_are_refused(browser_like):
    r = browser_like.post("/review/login", data={"username": "reviewer", "password": "nope-nope-nope"})
    assert r.status_code == 401 and "wrong password" in r.text and "precert_staff" not in r.headers.get("set-cookie", "")
    assert browser_like.post("/review/login", data={"username": "", "password": ""}).status_code == 400
    assert browser_like.post("/review/login", json={"username": "reviewer", "password": "reviewer-sandbox"}).status_code == 415
    assert browser_like.post("/review/login", content=b"username=%FF%FE", headers=FORM).status_code == 400
    assert browser_like.post("/review/login", content=b"a=" + b"x" * 70_000, headers=FORM).status_code == 413
    hostile = browser_like.post("/review/login", data={"username": "<script>x</script>", "password": "p", "next": '/review"><script>'})
    assert hostile.status_code == 401 and "<script>" not in hostile.text


def test_sign_out_ends_the_browser_session(browser_like):
    assert sign_in(browser_like).status_code == 303
    assert browser_like.get("/review").status_code == 200
    r = browser_like.post("/review/logout", headers={"Origin": str(browser_like.base_url).rstrip("/")})
    assert r.status_code == 303 and r.headers["location"] == "/review/login"
    browser_like.cookies.clear()
    assert browser_like.get("/review").status_code == 303


def test_staff_without_a_reviewing_role_cannot_open_cases(client):
    admin = staff_headers(client, "admin")
    r = client.get("/review", headers=admin)
    assert r.status_code == 303 and r.headers["location"] == "/review/admin"  # their own landing page instead
    _, number = pended_request(client)
    assert client.get(f"/review/cases/{number}", headers=admin).status_code == 403
    assert client.get("/review/api/clocks", headers=admin).status_code == 200  # operators monitor the clocks


def test_pages_carry_security_headers(client, reviewer):
    body, number = pended_request(client)
    for path, headers in ((f"/review/cases/{number}", reviewer), ("/review", reviewer), ("/review/login", {}), ("/reports/prior-auth", {})):
        r = client.get(path, headers=headers)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert "no-store" in r.headers["cache-control"]
        assert "<script" not in r.text  # no scripts at all
    css = client.get("/assets/review.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert client.get("/assets/../routes.py").status_code == 404
    assert client.get("/assets/nope.css").status_code == 404


# ---------------------------------------------------------------------------------- the case page
def test_the_case_page_shows_the_request_in_readable_form(client, reviewer):
    doc = ("Cardiology consult.txt", "text/plain", b"Three-vessel disease on angiography.")
    body, number = pended_request(client, answers=surgery_answers(), document=doc)
    html = client.get(f"/review/cases/{number}", headers=reviewer).text
    # member, coverage, requester
    assert "JOE SMITH" in html and "12345678901" in html
    assert "MARYLAND CAPITAL INSURANCE COMPANY" in html and "1122334455" in html
    assert "DR. JOE SMITH CORPORATION" in html and "NPI" in html
    # items with codes and names, diagnoses
    assert "33510" in html and "Coronary Artery Bypass" in html
    assert "C18.9" in html and "ICD-10-CM" in html
    assert "Pended for clinical review" in html
    # documentation answers beside the criteria, with which were met
    assert "Imaging or angiography confirms advanced disease" in html
    assert html.count('class="met yes"') >= 2 and "Does not apply" in html
    assert "Months of failed non-operative treatment" in html
    # documents, trace, history
    assert "Cardiology consult.txt" in html and f"/review/cases/{number}/documents/0" in html
    assert "rules reserve this service for clinical review" in html
    assert "Submitted" in html and "precert-rules" in html


def test_attached_documents_download_and_never_render_as_pages(client, reviewer):
    html_doc = ("report.html", "text/html", b"<script>alert(1)</script>")
    body, number = pended_request(client, document=html_doc)
    r = client.get(f"/review/cases/{number}/documents/0", headers=reviewer)
    assert r.status_code == 200 and r.content == b"<script>alert(1)</script>"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in r.headers["content-security-policy"]
    for bad in ("1", "99", "-1", "x", "1e3"):
        assert client.get(f"/review/cases/{number}/documents/{bad}", headers=reviewer).status_code == 404
    assert client.get("/review/cases/NOPE/documents/0", headers=reviewer).status_code == 404


def test_unknown_cases_answer_404(client, reviewer):
    assert client.get("/review/cases/PA-NOPE", headers=reviewer).status_code == 404
    assert client.get("/review/cases/" + "X" * 300, headers=reviewer).status_code == 404


def test_hostile_strings_in_a_request_are_escaped(client, reviewer):
    bundle = _pas_request("2.2.1", "Bundle-SurgicalRequestBundleExample.json", provider_npi=npi())
    hostile = '<script>alert("x")</script>'
    for e in bundle["entry"]:
        if e["resource"]["resourceType"] == "Patient":
            e["resource"]["name"] = [{"family": hostile, "given": ['"><img src=x onerror=alert(1)>']}]
    attach(bundle, questionnaire_response("inpatient-surgery", surgery_answers(indication=hostile)))
    number = case_number(submit(client, bundle).json())
    html = client.get(f"/review/cases/{number}", headers=reviewer).text
    assert hostile not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html or "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    queue = client.get("/review", headers=reviewer).text
    assert hostile not in queue


# ---------------------------------------------------------------------------------- the queue
def test_the_queue_orders_by_due_time_filters_and_counts(client, reviewer, director):
    _, standard = pended_request(client)
    _, urgent = pended_request(client, priority="stat")
    html = client.get("/review", headers=reviewer).text
    ids = case_ids(html)
    assert standard in ids and urgent in ids
    assert ids.index(urgent) < ids.index(standard)  # 72 hours beats 7 days
    dues = [client.get(f"/review/api/cases/{i}", headers=reviewer).json()["due"] for i in ids[:20]]
    # one form for every instant (UTC, milliseconds, Z), so the API's text sorts as time does
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", d) for d in dues), dues
    assert dues == sorted(dues)
    expedited = case_ids(client.get("/review", params={"urgency": "expedited"}, headers=reviewer).text)
    assert urgent in expedited and standard not in expedited
    assert standard in case_ids(client.get("/review", params={"category": "inpatient-surgery"}, headers=reviewer).text)
    assert standard not in case_ids(client.get("/review", params={"category": "advanced-imaging"}, headers=reviewer).text)
    assert standard not in case_ids(client.get("/review", params={"due": "overdue"}, headers=reviewer).text)
    # assignment, and the assignee filter
    r = client.post(f"/review/cases/{standard}/assign", data={"assignee": "director"}, headers=reviewer)
    assert r.status_code == 303
    assert standard in case_ids(client.get("/review", params={"assignee": "director"}, headers=reviewer).text)
    assert standard not in case_ids(client.get("/review", params={"assignee": "unassigned"}, headers=reviewer).text)
    mine = client.get("/review", params={"assignee": "me"}, headers=director).text
    assert standard in case_ids(mine)
    counts = {k: v for v, k in re.findall(r"<b>(\d+)</b>([A-Za-z ]+)</a>", mine)}
    assert int(counts["Pended"]) >= 2 and int(counts["Expedited"]) >= 1 and int(counts["Assigned to me"]) >= 1
    assert int(counts["Pended"]) == int(counts["Expedited"]) + int(counts["Standard"])


def test_queue_filters_with_odd_values_do_not_break(client, reviewer):
    for params in ({"urgency": "<b>"}, {"due": "x"}, {"category": "'\"<>" * 30}, {"assignee": "a" * 500}, {"page": "-1"}):
        r = client.get("/review", params=params, headers=reviewer)
        assert r.status_code == 200 and "<b>\"" not in r.text


def test_the_queue_pages_through_every_case_once(client, reviewer):
    for _ in range(3):
        pended_request(client)
    seen: list[str] = []
    url = "/review?per=2"
    pages = 0
    while url and pages < 500:
        html = client.get(url, headers=reviewer).text
        ids = case_ids(html)
        assert 0 < len(ids) <= 2
        seen += ids
        found = re.search(r'rel="next" href="([^"]+)"', html)
        url = found.group(1).replace("&amp;", "&") if found else None
        pages += 1
    total = client.get("/review/api/cases", params={"status": "pended", "limit": 500}, headers=reviewer).json()["total"]
    assert len(seen) == len(set(seen)) == total and pages >= 2
    assert 'rel="prev"' in client.get("/review?per=2&page=2", headers=reviewer).text


# ---------------------------------------------------------------------------------- decide forms
def test_approve_through_the_form(client, reviewer):
    _, number = pended_request(client)
    r = client.post(f"/review/cases/{number}/decide", data={"action": "approve", "note": "criteria met"}, headers=reviewer)
    assert r.status_code == 303 and r.headers["location"] == f"/review/cases/{number}?done=approve"
    case = client.get(f"/review/api/cases/{number}", headers=reviewer).json()
    assert case["status"] == "decided" and case["items"][0]["action"] == "A1" and case["auth_number"]
    page = client.get(r.headers["location"], headers=reviewer).text
    assert "Approved. The provider is being notified." in page and "Certified" in page


def test_modify_through_the_form_authorizes_fewer_units_and_days(client, reviewer, director):
    _, number = pended_request(client)
    refused = client.post(f"/review/cases/{number}/decide", data={"action": "modify", "quantity_1": "1", "note": "one procedure"}, headers=reviewer)
    assert refused.status_code == 403 and "physician reviewer" in refused.text
    r = client.post(f"/review/cases/{number}/decide", data={"action": "modify", "quantity_1": "1", "days_1": "30", "note": "one procedure"}, headers=director)
    assert r.status_code == 303
    case = client.get(f"/review/api/cases/{number}", headers=reviewer).json()
    assert case["items"][0]["action"] == "A6"
    assert case["decisions"][0]["authorized_quantity"] == 1 and case["decisions"][0]["auth_period_days"] == 30


def test_request_more_information_through_the_form_sends_a_task(client, reviewer):
    _, number = pended_request(client)
    r = client.post(f"/review/cases/{number}/decide", data={"action": "request-info", "needed": "Angiography report\n11488-4\n"}, headers=reviewer)
    assert r.status_code == 303
    tasks = client.get("/fhir/Task", params={"identifier": f"http://precert.example.org/sid/case|{number}"}, headers=FHIR).json()
    inputs = tasks["entry"][0]["resource"]["input"]
    needed = [i["valueCodeableConcept"] for i in inputs if i["type"]["coding"][0]["code"] == "attachments-needed"]
    assert {"text": "Angiography report"} in needed and any(c.get("coding", [{}])[0].get("code") == "11488-4" for c in needed)
    assert client.get(f"/review/api/cases/{number}", headers=reviewer).json()["status"] == "pended"


@pytest.mark.parametrize("form, status, message", [
    ({"action": "deny"}, 400, "a denial needs reason.code"),
    ({"action": "deny", "reason_code": "because-i-said-so"}, 400, "a denial needs reason.code"),
    ({"action": "modify"}, 400, "give the quantity"),
    ({"action": "modify", "quantity_1": "lots"}, 400, "must be a number"),
    ({"action": "modify", "quantity_1": "nan"}, 400, "must be a number"),
    ({"action": "modify", "quantity_1": "-2"}, 400, "positive number"),
    ({"action": "modify", "quantity_1": "1", "days_1": "1.5"}, 400, "whole number"),
    ({"action": "modify", "quantity_1": "1", "days_1": "999"}, 400, "1-366"),
    ({"action": "request-info", "needed": "  \n "}, 400, "needed"),
    ({"action": "launch-missiles"}, 400, "choose approve, deny"),
    ({"note": "no action chosen"}, 400, "choose approve, deny"),
])
def test_bad_decision_forms_are_refused_and_the_case_stays_pended(client, reviewer, form, status, message):
    _, number = pended_request(client)
    r = client.post(f"/review/cases/{number}/decide", data=form, headers=reviewer)
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith("text/html") and message in r.text
    assert 'class="error"' in r.text
    assert client.get(f"/review/api/cases/{number}", headers=reviewer).json()["status"] == "pended"


def test_malformed_forms_get_4xx(client, reviewer):
    _, number = pended_request(client)
    url = f"/review/cases/{number}/decide"
    assert client.post(url, json={"action": "approve"}, headers=reviewer).status_code == 415
    assert client.post(url, content=b"action=approve&\xff", headers={**reviewer, **FORM}).status_code == 400
    assert client.post(url, content=b"action=approve&n=" + b"x" * 70_000, headers={**reviewer, **FORM}).status_code == 413
    assert client.post("/review/cases/NOPE/decide", data={"action": "approve"}, headers=reviewer).status_code == 404
    assert client.post(url, data={"action": "approve"}, headers=reviewer).status_code == 303
    again = client.post(url, data={"action": "deny", "reason_code": "other"}, headers=reviewer)
    assert again.status_code == 409 and "only pended cases can be decided" in again.text


def test_assign_and_notes_forms(client, reviewer):
    _, number = pended_request(client)
    assert client.post(f"/review/cases/{number}/assign", data={"assignee": "me"}, headers=reviewer).status_code == 303
    assert client.get(f"/review/api/cases/{number}", headers=reviewer).json()["assignee"] == "reviewer"
    bad = client.post(f"/review/cases/{number}/assign", data={"assignee": "<script>nobody</script>"}, headers=reviewer)
    assert bad.status_code == 400 and "<script>nobody" not in bad.text
    assert client.post(f"/review/cases/{number}/assign", data={"assignee": "admin"}, headers=reviewer).status_code == 400
    assert client.post(f"/review/cases/{number}/assign", data={"assignee": ""}, headers=reviewer).status_code == 303
    assert client.get(f"/review/api/cases/{number}", headers=reviewer).json()["assignee"] is None
    r = client.post(f"/review/cases/{number}/notes", data={"text": "Called the office; <b>angiography</b> to follow.\nSecond line."}, headers=reviewer)
    assert r.status_code == 303
    page = client.get(f"/review/cases/{number}", headers=reviewer).text
    assert "Called the office; &lt;b&gt;angiography&lt;/b&gt; to follow." in page
    assert client.post(f"/review/cases/{number}/notes", data={"text": "   "}, headers=reviewer).status_code == 400
    assert client.post("/review/cases/NOPE/notes", data={"text": "x"}, headers=reviewer).status_code == 404


def test_notes_api_and_its_bad_input(client, reviewer):
    _, number = pended_request(client)
    url = f"/review/api/cases/{number}/notes"
    r = client.post(url, json={"text": "peer-to-peer offered\u0000\u0007"}, headers=reviewer)
    assert r.status_code == 201 and r.json()["notes"][-1]["text"] == "peer-to-peer offered"
    assert r.json()["notes"][-1]["by"] == "reviewer"
    for bad, status in ((b"{nope", 400), (b"[1,2]", 400), (b'{"text": 5}', 400), (b"{}", 400), (b"", 400)):
        got = client.post(url, content=bad, headers={**reviewer, "Content-Type": "application/json"})
        assert got.status_code == status, bad
        assert got.json()["detail"]
    assert client.post(url, content=b"text=x", headers={**reviewer, **FORM}).status_code == 415
    assert client.post(url, content=b'{"text": "' + b"x" * 300_000 + b'"}', headers={**reviewer, "Content-Type": "application/json"}).status_code == 413
    assert client.post("/review/api/cases/NOPE/notes", json={"text": "x"}, headers=reviewer).status_code == 404


def test_api_needs_a_staff_session(client):
    assert client.get("/review/api/clocks").status_code == 401
    assert client.post("/review/api/cases/X/notes", json={"text": "x"}).status_code == 401
    assert client.get("/review/api/clocks", headers={"Authorization": "Bearer not-a-session"}).status_code == 401


# ---------------------------------------------------------------------------------- sandbox
def test_the_sandbox_page_lists_a_developers_requests(client, reviewer):
    org = npi()
    _, pended = pended_request(client, org)
    _, denied = denied_case(client, reviewer, org)
    r = client.get("/sandbox/requests", params={"npi": org})
    assert r.status_code == 200
    ids = re.findall(r"<td>(PA[0-9A-F]+)</td>", r.text)
    assert set(ids) == {pended, denied}
    assert "Pended" in r.text and "Not certified" in r.text and "ClaimResponse" in r.text
    hostile = client.get("/sandbox/requests", params={"identifier": "<script>x</script>", "organization": "\"><b>"})
    assert hostile.status_code == 200 and "<script>x" not in hostile.text and "\"><b>" not in hostile.text
    assert "No requests match" in hostile.text
    for params in ({"identifier": "\x00(", "npi": "\x00"}, {"organization": "\x00"}, {"identifier": "a" * 5000}):
        assert client.get("/sandbox/requests", params=params).status_code == 200
    by_identifier = client.get("/sandbox/requests", params={"identifier": ".*"})
    assert by_identifier.status_code == 200 and "No requests match" in by_identifier.text  # not a pattern


@pytest.mark.parametrize("request_bytes", [
    b"", b"not json", b"[]", b'{"resourceType": "Bundle"}', b'{"entry": "x"}', b'{"entry": [{"resource": {"resourceType": "Claim"}}]}',
    b'{"entry": [{"resource": {"resourceType": "Claim", "patient": 5, "insurance": [7, {"coverage": "x"}], "item": [1, {"sequence": "a",'
    b' "productOrService": [], "quantity": "3"}], "diagnosis": [{"diagnosisCodeableConcept": {"coding": "x"}}], "supportingInfo": ['
    b'{"valueAttachment": {"data": "!!!", "title": 5}}], "provider": {"reference": 3}}}]}',
])
def test_the_case_view_tolerates_any_stored_request(request_bytes):
    from server.review import view

    case = {"_id": "PA1", "request": request_bytes, "decisions": [{"sequence": 1, "action": "A4", "assessment": {"details": [{"criterion": 1}]}}]}
    out = view.request_view(case)
    assert out["member"]["name"] and isinstance(out["items"], list)
    assert view.member_name(case) in ("", "(no name given)") or isinstance(view.member_name(case), str)


def test_the_case_page_shows_the_review_record_of_a_physician_denial(client, reviewer):
    from tests.test_review_support import RATIONALE, denied_case

    _, number = denied_case(client)
    page = client.get(f"/review/cases/{number}", headers=reviewer).text
    assert 'id="review-record"' in page and "physician reviewer (MD)" in page and "Peer-to-peer offered until" in page
    assert RATIONALE.replace("'", "&#39;") in page
