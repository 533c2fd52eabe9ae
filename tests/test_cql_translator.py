"""The ELM every package serves is what the official CQL-to-ELM translator (@cqframework/cql) makes
of the committed CQL, and the translator reports nothing that has not been reviewed and accepted."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from questionnaires.catalog import ROOT

TOOLS = ROOT / "tools"


@pytest.fixture(scope="module")
def translator_report() -> dict:
    node = shutil.which("node")
    assert node, "node is needed to run the CQL translator (apt-get install nodejs npm)"
    assert (TOOLS / "node_modules" / "@cqframework" / "cql").is_dir(), "run: npm ci --prefix questionnaires/tools"
    run = subprocess.run([node, str(TOOLS / "build-libraries.mjs"), "--check"], capture_output=True, text=True, timeout=300)
    assert run.stdout.strip(), run.stderr
    return json.loads(run.stdout)


def test_every_library_in_the_catalog_is_compiled(translator_report):
    folders = {p.parent.name for p in ROOT.glob("*/library.cql")}
    assert set(translator_report["libraries"]) == folders


def test_committed_elm_is_what_the_translator_writes(translator_report):
    stale = [f for f, r in translator_report["libraries"].items() if not r["elm_matches"]]
    assert stale == [], f"ELM out of date for {stale}: run `npm run build --prefix questionnaires/tools`"


def test_translator_reports_no_unreviewed_error_or_warning(translator_report):
    unreviewed = [m for r in translator_report["libraries"].values() for m in r["messages"] if not m["accepted"]]
    assert unreviewed == []


def test_the_accepted_list_holds_only_messages_the_translator_still_reports(translator_report):
    accepted = json.loads((TOOLS / "accepted-messages.json").read_text())["accepted"]
    reported = [m for r in translator_report["libraries"].values() for m in r["messages"]]
    for a in accepted:
        assert any(m["folder"] == a["folder"] and a["text"] in m["text"] for m in reported), a
