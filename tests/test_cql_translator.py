"""The ELM every package serves is what the official CQL-to-ELM translator (@cqframework/cql) makes
of the committed CQL, and the translator reports nothing that has not been reviewed and accepted."""

from __future__ import annotations

import json

import pytest

from questionnaires.build import run_translator
from questionnaires.catalog import ROOT
from server.cli import main

TOOLS = ROOT / "tools"


@pytest.fixture(scope="module")
def translator_report() -> dict:
    _ok, report = run_translator(check=True)
    return report


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


def test_precert_build_libraries_check_passes_on_the_committed_libraries(capsys):
    assert main(["build-libraries", "--check"]) == 0
    out = capsys.readouterr().out
    assert "dme-home-oxygen: up to date" in out and "common: up to date" in out
