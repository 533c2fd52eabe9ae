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


def offenders(check, skip: tuple[str, ...] = ()) -> dict[str, list[int]]:
    """{module path: the lines ``check`` finds in it} over every module of the project but ``skip``."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if "node_modules" in path.parts or rel in skip:
                continue
            lines = check(path.read_text(encoding="utf-8"))
            if lines:
                found[rel] = lines
    return found


def test_only_the_settings_module_reads_the_environment():
    assert offenders(environment_reads, skip=(HOME,)) == {}


def import_time_reads(source: str) -> list[int]:
    """Lines that read a setting while the module is imported: a call, outside any function or class
    body, of a function of ``server.settings`` (``settings.port()``, or a name imported from it), or
    of ``Settings.from_env`` or a config's ``from_env``."""
    tree = ast.parse(source)
    imported = {a.asname or a.name for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "server.settings"
                for a in node.names}
    lines = []

    def visit(node):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            return
        if isinstance(node, ast.Call):
            fn = node.func
            if (isinstance(fn, ast.Name) and fn.id in imported and fn.id[:1].islower()) or \
                    (isinstance(fn, ast.Attribute) and (fn.attr == "from_env" or
                                                        (isinstance(fn.value, ast.Name) and fn.value.id == "settings"))):
                lines.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for stmt in tree.body:
        visit(stmt)
    return sorted(lines)


def test_the_import_time_check_finds_a_setting_read_at_module_level():
    probe = ("from server.settings import crd_audit_compress, Settings\nfrom server import settings\n"
             "A = crd_audit_compress()\nB = settings.port()\nC = Settings.from_env()\n"
             "def f():\n    return crd_audit_compress()\n")
    assert import_time_reads(probe) == [3, 4, 5]


def test_no_setting_is_read_when_a_module_is_imported():
    assert offenders(import_time_reads) == {}
