"""The docs name files that exist and defaults the code really has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from cds_hooks.config import CRDConfig
from cds_hooks.coverage_info import V20
from server.settings import PREFIX, Variables

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_repository_path_the_docs_name_exists():
    missing = []
    for doc in DOCS:
        for path in re.findall(r"`((?:docs|cds_hooks|server|questionnaires|capability|fhir-packages|tests|examples)/[\w./-]+)`", doc.read_text()):
            if not (ROOT / path.rstrip("/")).exists():
                missing.append(f"{doc.name}: {path}")
    assert missing == []


def test_the_demo_ehr_key_pair_is_documented_where_it_is():
    readme = (ROOT / "README.md").read_text()
    assert "`cds_hooks/demo_ehr_private_key.pem`" in readme
    assert (ROOT / "cds_hooks" / "demo_ehr_private_key.pem").exists()
    assert "demo EHR key pair in `docs/sandbox-keys/`" not in readme


def test_the_documented_default_crd_version_is_the_configured_one():
    config = CRDConfig.from_env("sandbox", {})
    assert config.default_version is V20
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if "PRECERT_CRD_DEFAULT_VERSION" in line)
    assert "`2.0` (answers as CRD 2.0.1)" in row
    assert "(default `2.0`, which answers as CRD 2.0.1" in (ROOT / "docs" / "crd.md").read_text()


def test_every_setting_the_docs_name_is_read_by_the_code():
    # The product's settings (each declared in server/settings.py), and the test suite's own switches
    # (PRECERT_SCREENSHOTS) where the docs name one for contributors.
    declared = {PREFIX + field.upper() for field in Variables.model_fields}
    suite = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("*.py") if p.name != "test_first_hour_docs.py")
    named = {(doc.name, v) for doc in DOCS for v in re.findall(r"\bPRECERT_[A-Z0-9_]*[A-Z0-9]\b", doc.read_text())}
    unknown = sorted(f"{doc}: {v}" for doc, v in named if v not in declared and v not in suite)
    assert unknown == []


def test_every_precert_command_the_docs_name_exists():
    import argparse

    from server.cli import main

    parser_commands: set[str] = set()
    real_parse = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                parser_commands.update(action.choices)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        try:
            main(["--help"])
        except SystemExit:
            pass
    finally:
        argparse.ArgumentParser.parse_args = real_parse
    named = {(doc.name, c) for doc in DOCS for c in re.findall(r"`precert ([a-z][a-z-]+)", doc.read_text())}
    assert parser_commands and sorted(f"{d}: {c}" for d, c in named if c not in parser_commands) == []


def test_ci_runs_the_readmes_test_command():
    """CI is the README's test command on a fresh environment, not a command of its own."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Tests\n"):]
    command = section[section.index("```sh\n") + 6:section.index("\n```", section.index("```sh\n"))].strip()
    assert command == "tests/run"
    # .ci/run reads the command from that block and runs it: what it would run is the very line shown.
    ci = subprocess.run(["sh", str(ROOT / ".ci" / "run"), "--print"], capture_output=True, text=True, timeout=30, check=True)
    assert ci.stdout.strip() == command
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith('exec sh -eu -c "$command"')
    assert f"The test command is `{command}`" in readme[:readme.index("\n## Tests\n")]  # named up front too
    assert (ROOT / command).stat().st_mode & 0o111  # executable, as CI calls it
