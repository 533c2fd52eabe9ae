"""An administrator signing in to the workbench lands on an administration page (staff accounts,
clients, rules), not a refusal, and sees no case data there."""

from __future__ import annotations

import httpx

from tests.test_review_support import pended_request, staff_headers


def signed_in_browser(client, user: str, password: str) -> httpx.Client:
    browser = httpx.Client(base_url=str(client.base_url), timeout=30, follow_redirects=True)
    r = browser.post("/review/login", data={"username": user, "password": password, "next": "/review"})
    assert r.status_code == 200, r.text
    return browser


def test_an_administrator_lands_on_the_administration_page(client):
    pended_request(client)  # there is case data on the server, which the page must not show
    browser = signed_in_browser(client, "admin", "admin-sandbox")
    try:
        r = browser.get("/review")
    finally:
        browser.close()
    assert r.status_code == 200 and str(r.url).endswith("/review/admin")
    page = r.text
    assert "<h1>Administration</h1>" in page
    for expected in (">reviewer<", ">director<", ">admin<", "Staff accounts", "Registered clients",
                     "Payer rules", 'href="/admin/rules"', 'href="/rules/prior-auth-list"', "Registered Nurse", "Doctor of Medicine"):
        assert expected in page, expected
    assert "Open work:" in page and "pended request(s)" in page
    # No case PHI: no member names, case links, or the work queue in the navigation.
    for absent in ("Rivera", "SMITH", 'href="/review/cases/', ">Work queue<"):
        assert absent not in page, absent


def test_case_pages_stay_closed_to_an_administrator_and_the_admin_page_to_reviewers(client):
    _, number = pended_request(client)
    admin = staff_headers(client, "admin")
    for path in (f"/review/cases/{number}", "/review/appeals"):
        page = client.get(path, headers={**admin, "Accept": "text/html"})
        # A page saying why, with the way back to the administrator's own page; no case data.
        assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
        assert 'href="/review/admin"' in page.text and number not in page.text
    assert client.get(f"/review/api/cases/{number}", headers=admin).status_code == 403
    r = client.get("/review/admin", headers=staff_headers(client, "reviewer"))
    assert r.status_code == 403 and "administrator" in r.text
    assert client.get("/review/admin", follow_redirects=False).status_code == 303
