"""A developer's first visit: the front door says what the server is and links everything, and the
API docs render in a real browser (Debian's chromium) with every request kept on this server."""

from __future__ import annotations

import os
import warnings
from urllib.parse import urlsplit

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A page that may reach only this server: anything else (a CDN) is aborted and recorded."""
    context = browser.new_context(base_url=server.url)
    own = urlsplit(server.url).netloc
    outside: list[str] = []

    def guard(route):
        if urlsplit(route.request.url).netloc == own or route.request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    pg = context.new_page()
    pg.outside_requests = outside
    yield pg
    context.close()


def test_front_door_names_the_mode_and_links_every_surface(page):
    page.goto("/")
    assert page.title().startswith("Precert")
    assert "sandbox" in page.locator("#mode").inner_text()
    expected = {"#link-workbench": "/review", "#link-report": "/reports/prior-auth", "#link-sandbox": "/sandbox/requests",
                "#link-cds-services": "/cds-services", "#link-api-docs": "/docs"}
    for selector, href in expected.items():
        assert page.locator(selector).get_attribute("href") == href
    assert page.locator("#guides a", has_text="crd").count() == 1
    page.click("#link-cds-services")
    assert '"services"' in page.content()
    assert page.outside_requests == []


def test_front_door_links_all_resolve(client, server):
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for path in ("/review", "/reports/prior-auth", "/sandbox/requests", "/cds-services", "/docs", "/fhir/metadata",
                 "/guide/crd", "/openapi.json"):
        assert f'href="{path}"' in page.text or path.startswith("/guide") or path == "/openapi.json"
        r = client.get(path, headers={"Accept": "text/html"}, follow_redirects=True)
        assert r.status_code == 200, path


def test_api_docs_render_offline_from_assets_the_server_serves(page):
    page.goto("/docs")
    page.wait_for_selector(".opblock", timeout=30000)
    assert page.locator(".opblock").count() > 20
    assert page.outside_requests == []


def test_every_operation_in_the_api_document_has_its_own_id(client):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        doc = client.get("/openapi.json").json()
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    audit = doc["paths"]["/fhir/AuditEvent/{entry_id}"]
    assert {audit[m]["operationId"] for m in ("put", "patch", "delete")} == {
        "audit_change_fhir_AuditEvent__entry_id__put", "audit_change_fhir_AuditEvent__entry_id__patch",
        "audit_change_fhir_AuditEvent__entry_id__delete"}


def test_an_unknown_guide_is_a_404_page(client):
    assert client.get("/guide/..%2Fpyproject").status_code == 404
    assert client.get("/guide/nope").status_code == 404


def test_api_docs_policy_allows_only_this_server(client):
    """Swagger UI is served from this server's own assets, so its page trusts no CDN."""
    r = client.get("/docs", headers={"Accept": "text/html"})
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "jsdelivr" not in csp and "https:" not in csp
    assert "script-src 'self' 'unsafe-inline'" in csp
    assert "default-src 'self'" in csp
