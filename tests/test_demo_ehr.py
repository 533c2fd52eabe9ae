"""The demo EHR (``/demo-ehr``, sandbox only) driven in real Chromium against a real server: an order
gets CRD cards and coverage-information, the DTR form is pre-filled by the package's ELM running in the
browser (the values the charts imply, as ``tests/test_cql_execution.py`` computes them in node), the
PAS request is decided, and a pended one shows the reviewer's decision when the notification arrives.
Nothing is fetched from outside the server."""

from __future__ import annotations

import json
import shutil
import subprocess

import httpx
import pytest

from questionnaires.catalog import ROOT as QUESTIONNAIRES
from tests.support import ThreadedServer, free_port
from tests.test_cql_execution import EXPECTED
from tests.test_review_browser import browser  # noqa: F401  (the shared Chromium fixture)
from tests.test_review_support import staff_headers

playwright_api = pytest.importorskip("playwright.sync_api")

FORM = "#dtr-form "


@pytest.fixture
def page(browser, server):  # noqa: F811
    context = browser.new_context(base_url=server.url, viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.outside = []  # every request the page makes that is not to this server
    pg.on("request", lambda r: None if r.url.startswith(server.url + "/") or r.url.startswith("data:") else pg.outside.append(r.url))
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert errors == []


def open_ehr(page):
    page.goto("/demo-ehr")
    page.wait_for_selector("body[data-ready=true]")


def order_and_open_form(page, category: str, member: str, hook: str = "sign"):
    page.select_option("#category", category)
    page.select_option("#member", member)
    page.click(f"#{hook}-order")
    page.wait_for_selector("#coverage-table")
    page.click("#open-dtr")
    page.wait_for_selector("#prefill-status[data-prefilled]")


def field_value(page, link_id: str):
    """What the form shows for an item: a string, a number, a boolean or the checked codes."""
    return page.evaluate("""(id) => {
        const f = document.querySelector(`#dtr-form .field[data-link-id="${id}"]`);
        const type = f.dataset.type;
        const checks = [...f.querySelectorAll('input[type=checkbox]')];
        if (checks.length) return checks.filter(c => c.checked).map(c => c.value);
        const radio = f.querySelector('input[type=radio]:checked');
        if (f.querySelector('input[type=radio]')) return radio ? radio.value === 'true' : null;
        const input = f.querySelector('input, select, textarea');
        if (!input.value) return null;
        return (type === 'decimal' || type === 'integer') ? Number(input.value) : input.value;
    }""", link_id)


def prefilled(page) -> dict:
    """define -> what the form shows, for the items pre-filled from the chart (demographics aside)."""
    out = {}
    for field in page.locator("#dtr-form .field[data-define][data-origin=auto]").all():
        define = field.get_attribute("data-define")
        if define not in ("FamilyName", "GivenName", "BirthDate"):
            out[define] = field_value(page, field.get_attribute("data-link-id"))
    return out


def shown(expected):
    """An expected CQL value as the form shows it (codings as their codes)."""
    if isinstance(expected, list):
        return sorted(c["code"] for c in expected)
    if isinstance(expected, dict):
        return expected["code"]
    return expected


def test_the_page_and_its_engine_load_from_this_server_only_under_a_self_only_policy(page, client):
    r = client.get("/demo-ehr", headers={"Accept": "text/html"})
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "http" not in csp
    open_ehr(page)
    assert page.locator("#member option").count() == 12
    assert set(page.locator("#category option").all_inner_texts()) == set(EXPECTED)
    bundle = client.get("/demo-ehr/assets/cql-bundle.js")
    assert bundle.status_code == 200 and bundle.headers["content-type"].startswith("text/javascript")
    assert page.outside == []


def test_a_signed_order_shows_the_cards_and_the_coverage_information(page):
    open_ehr(page)
    page.select_option("#category", "dme-home-oxygen")
    page.select_option("#member", "pat-001")
    page.click("#select-order")
    page.wait_for_selector("#coverage-table")
    assert "order-select" in page.locator("#cards h3").first.inner_text()
    page.click("#sign-order")
    page.locator("#cards h3", has_text="Cards from order-sign").wait_for()
    assert page.locator("#cards article.card").count() >= 1
    assert "home oxygen" in page.locator("#cards article.card").first.inner_text().lower()
    table = page.locator("#coverage-table")
    assert table.locator("tr[data-key=pa-needed] td").inner_text() == "auth-needed"
    assert "Questionnaire/dme-home-oxygen" in table.locator("tr[data-key=questionnaire] td").inner_text()
    assert page.is_visible("#open-dtr")
    # Each message opens as JSON.
    toggle = page.locator("#cards article.card button.json-toggle").first
    toggle.click()
    assert json.loads(page.locator("#cards article.card pre.json").first.inner_text())["summary"]
    assert page.outside == []


@pytest.mark.parametrize("category,member", [
    ("dme-home-oxygen", "pat-001"), ("behavioral-iop", "pat-003"), ("inpatient-surgery", "pat-002"),
    ("specialty-drugs", "pat-005"), ("dme-prosthetic", "pat-004"),
])
def test_the_form_is_prefilled_with_what_the_chart_implies(page, category, member):
    open_ehr(page)
    order_and_open_form(page, category, member)
    expected = EXPECTED[category][member]
    assert prefilled(page) == {d: shown(v) for d, v in expected.items()}
    assert page.locator("#dtr-form .field[data-origin=auto]").count() >= len(expected)
    # Demographics from the chart, and the member id Precert filled in itself.
    assert field_value(page, "patient-birth-date") is not None
    assert field_value(page, "member-id").startswith("PCM")
    assert page.outside == []


def test_the_completed_form_is_certified_at_once(page):
    open_ehr(page)
    order_and_open_form(page, "dme-home-oxygen", "pat-001")
    page.select_option(FORM + "[name=order-reason]", "initial")
    page.fill(FORM + "[name=flow-rate]", "2")
    page.check(FORM + "[name=usage][value=rest]")
    page.check(FORM + "[name=symptoms-improve][value=true]")
    page.select_option(FORM + "[name=test-type]", "spo2")
    assert page.input_value(FORM + "[name=spo2]") == "86"  # shown once its question is enabled
    page.select_option(FORM + "[name=test-condition]", "rest")
    page.check(FORM + "[name=stable-state][value=true]")
    page.click("#submit-pas")
    decision = page.locator("#decision .decision")
    decision.wait_for()
    assert decision.get_attribute("data-action") == "A1"
    assert "Certified in total" in decision.inner_text() and "Authorization number: AUTH" in decision.inner_text()
    # The QuestionnaireResponse sent says which answers came from the chart.
    box = page.locator("#decision .json-box", has=page.get_by_role("button", name="QuestionnaireResponse JSON"))
    assert box.locator("pre").is_hidden()
    box.locator("button").click()
    qr = json.loads(box.locator("pre").inner_text())
    answers = {i["linkId"]: i["answer"][0] for g in qr["item"] for i in g["item"]}
    origin = {k: a["extension"][0]["extension"][0]["valueCode"] for k, a in answers.items()}
    assert answers["spo2"]["valueDecimal"] == 86 and origin["spo2"] == "auto" and origin["flow-rate"] == "manual"
    assert page.outside == []


def test_a_pended_request_shows_the_reviewers_decision_when_the_notification_arrives(page, client):
    open_ehr(page)
    order_and_open_form(page, "behavioral-residential", "pat-003")
    assert prefilled(page) == {d: shown(v) for d, v in EXPECTED["behavioral-residential"]["pat-003"].items()}
    page.click("#submit-pas")
    decision = page.locator("#decision .decision").first
    decision.wait_for()
    assert decision.get_attribute("data-action") == "A4"
    assert "Pended" in decision.inner_text()
    assert "Subscribed" in page.locator("#subscription-status").inner_text()
    case = page.locator("#decision .case").get_attribute("data-case")

    r = client.post(f"/review/api/cases/{case}/decision", json={"action": "approve", "note": "Criteria met."},
                    headers=staff_headers(client))
    assert r.status_code == 200, r.text
    notified = page.locator("#decision .notified .decision")
    notified.wait_for()
    assert notified.get_attribute("data-action") == "A1"
    assert "Certified in total" in notified.inner_text()
    assert page.locator("#notifications li.event-notification.mine").count() == 1

    page.click("#inquire")
    inquiry = page.locator("#decision .inquiry .decision")
    inquiry.wait_for()
    assert inquiry.get_attribute("data-action") == "A1"
    assert page.outside == []


def test_an_order_submitted_without_its_form_is_pended(page):
    open_ehr(page)
    page.select_option("#category", "advanced-imaging")
    page.select_option("#member", "pat-002")
    page.click("#sign-order")
    page.wait_for_selector("#coverage-table")
    page.click("#submit-bare")
    decision = page.locator("#decision .decision")
    decision.wait_for()
    assert decision.get_attribute("data-action") == "A4"
    assert "without documentation" in page.locator("#decision").inner_text()
    assert page.outside == []


def test_the_inbox_refuses_what_is_not_a_notification(client):
    assert client.post("/demo-ehr/inbox/not a box", content=b"{}").status_code == 404
    assert client.post("/demo-ehr/inbox/abcdefgh-1234", content=b"not json").status_code == 400
    assert client.post("/demo-ehr/inbox/abcdefgh-1234", json={"resourceType": "Patient"}).status_code == 400
    assert client.post("/demo-ehr/inbox/abcdefgh-1234", content=b"{" + b" " * (3 * 1024 * 1024) + b"}").status_code == 413
    r = client.get("/demo-ehr/inbox/abcdefgh-1234")
    assert r.status_code == 200 and r.json() == {"notifications": []}


def test_the_demo_ehr_does_not_exist_in_production(mongodb_uri):
    from server.auth.testing import secured_app

    port = free_port()
    server = ThreadedServer(secured_app(mongodb_uri, port=port, mode="production", load_sandbox=False), port=port).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for path in ("/demo-ehr", "/demo-ehr/records.json", "/demo-ehr/assets/ehr.js", "/demo-ehr/inbox/abcdefgh-1234"):
                assert http.get(path).status_code == 404, path
            assert 'href="/demo-ehr"' not in http.get("/").text
    finally:
        server.stop()


def test_the_sandbox_front_door_links_the_demo_ehr(client):
    assert 'href="/demo-ehr"' in client.get("/").text


def test_the_open_sandbox_mints_no_tokens(client):
    assert client.post("/demo-ehr/token", json={"organization": "org-clinic"}).status_code == 409
    assert client.post("/demo-ehr/hook-token", json={"service": "order-sign-crd"}).status_code == 409


def test_with_authentication_enforced_the_page_works_with_a_sandbox_clients_token(browser, srv, http):  # noqa: F811
    assert http.get("/fhir/Patient/pat-001").status_code == 401
    assert http.post("/demo-ehr/token", json={"organization": "org-elsewhere"}).status_code == 400
    assert http.post("/demo-ehr/token", content=b"[").status_code == 400
    for not_an_object in (b"[1]", b'"org-clinic"', b"null", b'{"organization": 5}'):
        assert http.post("/demo-ehr/token", content=not_an_object).status_code == 400
        assert http.post("/demo-ehr/hook-token", content=not_an_object.replace(b"organization", b"service")).status_code == 400
    minted = http.post("/demo-ehr/token", json={"organization": "org-hospital"})
    assert minted.status_code == 200 and minted.json()["client_id"] == "sandbox-hospital"
    assert http.get("/fhir/Patient/pat-001", headers={"Authorization": f"Bearer {minted.json()['access_token']}"}).status_code == 200
    assert http.post("/demo-ehr/hook-token", json={"service": "no-such-service"}).status_code == 400
    assert http.post("/cds-services/order-sign-crd", json={}).status_code == 401  # the CRD services need the EHR's JWT

    context = browser.new_context(base_url=srv.url)
    page = context.new_page()
    try:
        open_ehr(page)
        assert page.locator("#enforcing").is_visible()
        order_and_open_form(page, "dme-home-oxygen", "pat-001")
        assert prefilled(page)["LatestSpO2Percent"] == 86
        page.click("#submit-pas")
        decision = page.locator("#decision .decision")
        decision.wait_for()
        assert decision.get_attribute("data-action") == "A4"  # the form is incomplete: pended, not refused
        assert "Subscribed" in page.locator("#subscription-status").inner_text()
    finally:
        context.close()


def test_the_committed_cql_bundle_matches_a_rebuild():
    node = shutil.which("node")
    assert node, "node is needed to build the browser bundle"
    tools = QUESTIONNAIRES / "tools"
    assert (tools / "node_modules" / "esbuild").is_dir(), "run: npm ci --prefix questionnaires/tools"
    run = subprocess.run([node, str(tools / "build-demo-bundle.mjs"), "--check"], capture_output=True, text=True, timeout=300)
    report = json.loads(run.stdout)
    assert run.returncode == 0 and report["matches"], "stale: run `npm run bundle --prefix questionnaires/tools`"
