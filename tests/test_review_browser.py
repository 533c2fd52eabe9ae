"""The review workbench driven in a real headless browser (Debian's chromium through Playwright;
nothing is downloaded): a reviewer signs in, opens the oldest pended case, denies it with a reason,
and the submitter's Subscription endpoint receives the denial."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.pas_support import FHIR, Receiver, actions, claim_response, notification_type, pas_subscription
from tests.test_review_support import cases_collection, denied_case, npi, pended_request, staff_headers

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    import os

    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server.url, viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    yield pg
    context.close()


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def sign_in(page, user: str = "reviewer", password: str = "reviewer-sandbox", start: str = "/review"):
    page.goto(start)
    assert "/review/login" in page.url  # the workbench sends an anonymous visitor to sign in
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_physician_denies_the_oldest_pended_case_and_the_submitter_is_notified(page, client, receiver, mongodb_uri, settings):
    org = npi()
    r = client.post("/fhir/Subscription", json=pas_subscription(receiver.url, org), headers=FHIR)
    assert r.status_code == 201, r.text
    body, number = pended_request(client, org)
    # Make it the oldest pended request: received 20 days ago, so its 7-day clock ran out.
    received = datetime.now(timezone.utc) - timedelta(days=20)
    cases_collection(mongodb_uri, settings).update_one({"_id": number}, {"$set": {"received": received, "due": received + timedelta(days=7)}})

    sign_in(page, "director", "director-sandbox")
    page.wait_for_url("**/review")
    assert page.title().startswith("Work queue")
    first = page.locator("table.queue tbody tr").first
    assert first.locator("a.case-link").inner_text() == number
    assert "overdue" in first.locator(".pill").inner_text()
    first.locator("a.case-link").click()
    page.wait_for_url(f"**/review/cases/{number}")
    assert "JOE SMITH" in page.locator("h1").inner_text()
    assert "Coronary" in page.locator("text=33510").first.locator("..").inner_text()

    page.click("details:has(#deny-form) > summary")
    page.select_option("#deny-form select[name=reason_code]", "medical-necessity")
    page.fill("#deny-form textarea[name=reason_text]", "No angiography documenting multivessel disease.")
    page.fill("#deny-form textarea[name=rationale]", "Single-vessel disease on the notes given; bypass criteria need multivessel disease.")
    page.click("#deny-form button[type=submit]")
    page.wait_for_url(f"**/review/cases/{number}?done=deny")
    assert "Denied" in page.locator(".notice").inner_text()
    assert page.locator(".status").first.inner_text() == "Decided"
    assert "Not certified" in page.locator("table.grid").first.inner_text()

    def denial(bundle):
        return notification_type(bundle) == "event-notification" and claim_response(body)["id"] in str(bundle)

    note = receiver.wait_for(denial)[0]
    response = next(e["resource"] for e in note["entry"][1:] if e["resource"]["resourceType"] == "Bundle")
    assert actions(response) == {1: "A3"}
    text = " ".join(n["text"] for n in claim_response(response)["processNote"])
    assert "medically necessary" in text and "No angiography documenting multivessel disease." in text
    history = client.get(f"/review/api/cases/{number}", headers=staff_headers(client)).json()["history"]
    assert any(h["event"] == "deny" and h["by"] == "director" and h["as"] == "physician reviewer (MD)" for h in history)
    assert "peer-to-peer" in text


def test_clinical_reviewer_cannot_deny_on_clinical_grounds_but_recommends_denial(page, client):
    _, number = pended_request(client)
    sign_in(page, start=f"/review/cases/{number}")
    page.wait_for_url(f"**/review/cases/{number}")
    reasons = page.locator("#deny-form select[name=reason_code] option").all_text_contents()
    assert not any("Medical necessity" in r for r in reasons) and any("Not covered" in r for r in reasons)
    assert page.locator("#modify-form").count() == 0
    page.click("details:has(#recommend-form) > summary")
    page.select_option("#recommend-form select[name=reason_code]", "medical-necessity")
    page.fill("#recommend-form textarea[name=rationale]", "No angiography in the record; I would not certify the bypass.")
    page.click("#recommend-form button[type=submit]")
    page.wait_for_url(f"**/review/cases/{number}?done=recommend-denial")
    assert "Denial recommended" in page.locator(".notice").inner_text()
    case = client.get(f"/review/api/cases/{number}", headers=staff_headers(client)).json()
    assert case["status"] == "pended"
    assert any(h["event"] == "recommend-denial" and h["as"] == "clinical reviewer (RN)" for h in case["history"])


def test_hostile_strings_are_shown_as_text_in_the_browser(page, client):
    body, number = pended_request(client)
    hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    headers = staff_headers(client)
    assert client.post(f"/review/api/cases/{number}/notes", json={"text": hostile}, headers=headers).status_code == 201
    sign_in(page, start=f"/review/cases/{number}")
    page.wait_for_url(f"**/review/cases/{number}")
    assert page.evaluate("window.pwned === undefined")
    assert hostile in page.locator(".note-text").first.inner_text()


def test_a_medical_director_decides_an_appeal_in_the_browser(page, client):
    _, number = denied_case(client, staff_headers(client, "reviewer"))
    sign_in(page, "director", "director-sandbox", start=f"/review/cases/{number}")
    page.wait_for_url(f"**/review/cases/{number}")
    page.fill("textarea[name=reason]", "Angiography report now attached; three-vessel disease.")
    page.click("text=File appeal")
    page.wait_for_url("**/review/appeals/AP*")
    assert "First-level appeal" in page.locator("ol.stages").inner_text()
    page.check("input[name=decision][value=overturned]")
    page.fill("form[action$='/decide'] textarea[name=note]", "Criteria met on reconsideration.")
    page.click("text=Record decision")
    page.wait_for_url("**?done=appeal-decided")
    assert "Closed: overturned" in page.locator(".status").first.inner_text()
    case = client.get(f"/review/api/cases/{number}", headers=staff_headers(client)).json()
    assert case["items"][0]["action"] == "A1"


def test_the_public_metrics_report_opens_without_signing_in(page):
    page.goto("/reports/prior-auth?from=2019-01-01&to=2019-12-31")
    assert page.title().startswith("Prior authorization metrics")
    assert page.locator("table.figures").is_visible()
    assert page.locator("svg").count() == 4
    assert page.locator("a.me, form[action='/review/logout']").count() == 0


def test_a_reviewer_filters_the_queue_assigns_to_self_and_extends_the_clock(page, client):
    _, urgent = pended_request(client, priority="stat")
    _, standard = pended_request(client)
    sign_in(page)
    page.wait_for_url("**/review")
    page.select_option("select[name=urgency]", "expedited")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/review?*urgency=expedited*")
    shown = page.locator("a.case-link").all_inner_texts()
    assert urgent in shown and standard not in shown
    page.goto(f"/review/cases/{standard}")
    page.select_option("form[action$='/assign'] select[name=assignee]", "reviewer")
    page.click("form[action$='/assign'] button")
    page.wait_for_url("**?done=assign")
    assert "Assignee: reviewer" in page.locator(".meta").inner_text()
    page.fill("form[action$='/extend'] input[name=days]", "10")
    page.select_option("form[action$='/extend'] select[name=reason_code]", "information-requested")
    page.fill("form[action$='/extend'] input[name=reason_text]", "Awaiting angiography.")
    page.click("text=Extend once")
    page.wait_for_url("**?done=extend")
    assert "extended 10 d" in page.locator(".meta").inner_text()
    page.goto("/review?assignee=me")
    mine = page.locator("table.queue tbody tr", has_text=standard)
    assert "extended" in mine.inner_text() and "16 d" in mine.locator(".pill").inner_text()


def test_the_queue_and_a_case_fit_a_narrow_screen(browser, server, client):
    pended_request(client)
    context = browser.new_context(base_url=server.url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        sign_in(page)
        page.wait_for_url("**/review")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        first = page.locator("table.queue tbody tr").first
        box = first.bounding_box()
        assert box["width"] <= 390 and box["height"] > 150  # one card per case, its cells stacked
        assert not page.locator("table.queue thead").is_visible() or page.locator("table.queue thead").bounding_box()["x"] < 0
        assert page.evaluate("getComputedStyle(document.querySelector('table.queue td'), '::before').content") == '"Due"'
        first.locator("a.case-link").click()
        page.wait_for_url("**/review/cases/**")
        assert page.evaluate("document.documentElement.scrollWidth") <= 400
    finally:
        context.close()


def screenshot(page, name: str) -> None:
    """Save the page as docs/images/<name>.png when PRECERT_SCREENSHOTS names the folder (the
    pictures in docs/review.md); otherwise nothing, so test runs do not rewrite the docs."""
    import os
    from pathlib import Path

    folder = os.environ.get("PRECERT_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=False)


def test_the_pictures_in_the_docs_show_the_queue_a_case_a_denial_the_report_and_the_dashboard(browser, server, client):
    _, number = pended_request(client)
    context = browser.new_context(base_url=server.url, viewport={"width": 1000, "height": 900})
    page = context.new_page()
    try:
        sign_in(page, "director", "director-sandbox")
        page.wait_for_url("**/review")
        assert page.locator("table.queue tbody tr").count() >= 4  # the seeded sandbox cases, at least
        screenshot(page, "review-queue")
        page.goto(f"/review/cases/{number}")
        assert "JOE SMITH" in page.locator("h1").inner_text()
        screenshot(page, "review-case")
        page.click("details:has(#deny-form) > summary")
        page.select_option("#deny-form select[name=reason_code]", "medical-necessity")
        page.fill("#deny-form textarea[name=reason_text]", "No angiography documenting multivessel disease.")
        page.fill("#deny-form textarea[name=rationale]", "Single-vessel disease on the notes given; bypass criteria need multivessel disease.")
        page.fill("#deny-form input[name=credentials]", "MD, cardiothoracic surgery")
        page.locator("#deny-form").scroll_into_view_if_needed()
        screenshot(page, "review-physician-denial")
        page.click("#deny-form button[type=submit]")
        page.wait_for_url(f"**/review/cases/{number}?done=deny")
        assert "Denied" in page.locator(".notice").inner_text()
        page.goto("/review/dashboard")
        assert page.locator("#fig-decided").inner_text().strip().isdigit()
        screenshot(page, "review-dashboard")
        page.goto("/reports/prior-auth")
        assert page.locator("table.figures").first.is_visible()
        screenshot(page, "review-report")
    finally:
        context.close()
