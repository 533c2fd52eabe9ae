"""Configuration has one home: only ``server/settings.py`` reads the process environment, so it is
the one list of what an operator can set."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "cds_hooks", "questionnaires", "capability")
HOME = "server/settings.py"


def environment_reads(source: str) -> list[int]:
    """Lines that touch ``os.environ``, ``os.getenv`` or ``os.putenv`` (however imported)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv", "environb"):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                a.name in ("environ", "getenv", "putenv", "environb") for a in node.names):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_the_check_finds_each_way_of_reading_the_environment():
    probe = "import os\nfrom os import environ\na = os.environ.get('X')\nb = os.getenv('Y')\nc = environ['Z']\n"
    assert environment_reads(probe) == [2, 3, 4]


def test_only_the_settings_module_reads_the_environment():
    offenders = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "node_modules" in path.parts:
                continue
            rel = str(path.relative_to(ROOT))
            if rel == HOME:
                continue
            lines = environment_reads(path.read_text(encoding="utf-8"))
            if lines:
                offenders[rel] = lines
    assert offenders == {}
