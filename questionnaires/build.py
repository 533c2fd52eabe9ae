"""``precert build-libraries``: compile every DTR Library's CQL to ELM with the official translator.

The work is done by ``questionnaires/tools/build-libraries.mjs`` (node, ``@cqframework/cql``); this
module finds node, runs it and reads its JSON report."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

TOOLS = Path(__file__).resolve().parent / "tools"


class BuildError(RuntimeError):
    """node or the translator's packages are missing, or the translator gave no report."""


def run_translator(check: bool, timeout: float = 300) -> tuple[bool, dict]:
    """(ok, report). With ``check`` nothing is written and ``ok`` is False when a committed ELM file is
    stale; either way ``ok`` is False when the translator reports an error or an unaccepted warning."""
    node = shutil.which("node")
    if node is None:
        raise BuildError("node is needed to run the CQL translator (apt-get install nodejs npm)")
    if not (TOOLS / "node_modules" / "@cqframework" / "cql").is_dir():
        raise BuildError(f"the translator is not installed: run `npm ci --prefix {TOOLS}`")
    args = [node, str(TOOLS / "build-libraries.mjs"), *(["--check"] if check else [])]
    run = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    try:
        report = json.loads(run.stdout)
    except ValueError:
        raise BuildError(f"the translator gave no report: {run.stderr.strip()[-2000:]}") from None
    return run.returncode == 0 and report.get("ok", False), report


def _command(args: argparse.Namespace) -> int:
    try:
        ok, report = run_translator(args.check)
    except BuildError as exc:
        print(f"precert build-libraries: {exc}")
        return 2
    for folder, result in report["libraries"].items():
        state = "up to date" if result["elm_matches"] else "written" if result["written"] else "differs from the CQL"
        print(f"{folder}: {state}")
        for m in result["messages"]:
            print(f"  {m['severity']} line {m['line']}: {m['text']}{'' if m['accepted'] else '  (not accepted)'}")
    return 0 if ok else 1


def add_subcommand(sub) -> None:
    p = sub.add_parser("build-libraries", help="compile the DTR libraries' CQL to ELM with the official translator")
    p.add_argument("--check", action="store_true", help="write nothing; fail when a committed ELM file is stale")
    p.set_defaults(func=_command)
