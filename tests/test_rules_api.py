"""The rules' HTTP surface on the real server: the active set, reload, evaluate, the public PA list."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture
def admin(server):
    """Its own client: the shared one may carry a staff session from other tests."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def test_admin_lists_the_active_rule_set(admin):
    r = admin.get("/admin/rules")
    assert r.status_code == 200
    body = r.json()
    assert body["payer"]["id"] == "precert-demo-payer"
    ids = {rule["id"] for rule in body["rules"]}
    assert {"advanced-imaging", "inpatient-surgery", "home-oxygen", "infliximab"} <= ids
    assert body["status"]["last_error"] is None and body["version"]
    imaging = next(rule for rule in body["rules"] if rule["id"] == "advanced-imaging")
    assert imaging["file"] == "imaging.yaml" and imaging["conditions"]


def test_admin_reload_reads_the_files_again(admin):
    r = admin.post("/admin/rules/reload")
    assert r.status_code == 200 and r.json()["status"]["reloads"] >= 2


def test_public_prior_auth_list(admin):
    r = admin.get("/rules/prior-auth-list")
    assert r.status_code == 200
    services = r.json()["services"]
    assert any(s["rule"] == "advanced-imaging" and s["gold_card_exempt"] for s in services)


def test_evaluate_returns_the_determination(admin):
    r = admin.post("/admin/rules/evaluate", json={"codes": [{"system": "http://www.ama-assn.org/go/cpt", "code": "70551"}],
                                                   "provider_ids": ["1567890128"]})
    assert r.status_code == 200
    assert r.json()["pa_needed"] == "satisfied" and r.json()["trace"]


@pytest.mark.parametrize("body,status,text", [
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "empty"),
    (b"[]", 400, "JSON object"),
    (b'{"codes": "70551"}', 400, "'codes' must be a list"),
    (b'{"coverage": []}', 400, "'coverage' must be a JSON object"),
    (b'{"codes": [], "quantity": "ten"}', 400, "'quantity' must be a number"),
    (b'{"codes": [], "<script>": 1}', 400, "unknown field"),
    (b'{"patient": {}}', 400, "'codes'"),
    (b'{"codes": [' + b'{"code": "x"},' * 120000 + b'{}]}', 413, "exceeds"),
])
def test_evaluate_refuses_bad_input_clearly(admin, body, status, text):
    r = admin.post("/admin/rules/evaluate", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status and text in r.json()["message"]


def test_rules_reload_without_a_restart_and_a_bad_edit_keeps_the_last_good_set(admin, server, tmp_path):
    import os
    import shutil
    import time
    from pathlib import Path

    from server.rules import RulesService

    directory = tmp_path / "rules"
    shutil.copytree(Path(__file__).resolve().parents[1] / "server" / "rules" / "sandbox", directory)
    services = server.app.state.precert.services
    saved = services["rules"]
    services["rules"] = RulesService(directory, check_interval=0)
    visit = {"codes": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]}
    try:
        assert admin.post("/admin/rules/evaluate", json=visit).json()["pa_needed"] == "no-auth"
        routine = directory / "routine.yaml"
        routine.write_text(routine.read_text().replace("range: 99202-99215}\n    covered: covered\n    pa_needed: no-auth",
                                                       "range: 99202-99215}\n    covered: covered\n    pa_needed: auth-needed"))
        os.utime(routine, ns=(time.time_ns(), time.time_ns() + 10_000_000))
        assert admin.post("/admin/rules/evaluate", json=visit).json()["pa_needed"] == "auth-needed"

        (directory / "broken.yaml").write_text("rules:\n  - id: broken\n    codes: []\n")
        assert admin.post("/admin/rules/evaluate", json=visit).json()["pa_needed"] == "auth-needed"  # still serving
        listed = admin.get("/admin/rules").json()
        assert any(e.startswith("broken.yaml:3: rules[0](broken).codes") for e in listed["status"]["last_error"])
        r = admin.post("/admin/rules/reload")
        assert r.status_code == 422 and "previous set is still active" in r.json()["message"]
        assert any("broken.yaml" in e for e in r.json()["errors"])
    finally:
        services["rules"] = saved
