"""The layers show in the imports: the FHIR kernel at the bottom, domain modules above it, the API
routers and the application shell on top, and no import circle anywhere.

The layer contracts themselves are in pyproject.toml (``[tool.importlinter]``); these tests run them, so
the ordinary test command checks the architecture on every change.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "cds_hooks", "questionnaires", "capability")
LINT = (
    "import sys; from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"
)


@pytest.fixture(scope="module")
def graph():
    # Every import counts, including those inside functions: a circle closed by a deferred import is still
    # a circle.
    return grimp.build_graph(*PACKAGES)


def _circles(graph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_the_layer_contracts_hold():
    # import-linter reads the contracts from pyproject.toml and prints which import breaks which.
    run = subprocess.run(
        [sys.executable, "-c", LINT],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "broken" in run.stdout and "0 broken" in run.stdout


def test_no_module_imports_itself_back_through_others(graph):
    assert _circles(graph) == []


def test_a_circle_between_two_modules_is_found():
    probe = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        probe.add_module(name)
    probe.add_import(importer="pkg.a", imported="pkg.b")
    probe.add_import(importer="pkg.b", imported="pkg.a")
    probe.add_import(importer="pkg.c", imported="pkg.a")
    assert _circles(probe) == [["pkg.a", "pkg.b"]]


def _project_import_guarded_by_import_error(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Try):
            continue
        catches = any(h.type is not None and "ImportError" in ast.unparse(h.type) for h in node.handlers)
        if not catches:
            continue
        for inner in node.body:
            for stmt in ast.walk(inner):
                names = []
                if isinstance(stmt, ast.Import):
                    names = [a.name for a in stmt.names]
                elif isinstance(stmt, ast.ImportFrom):
                    names = ["." if stmt.level else (stmt.module or "")]
                if any(n == "." or n.split(".")[0] in PACKAGES for n in names):
                    lines.append(stmt.lineno)
    return lines


def test_the_projects_own_modules_are_imported_without_an_import_error_fallback():
    offenders = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "node_modules" in path.parts:
                continue
            lines = _project_import_guarded_by_import_error(path)
            if lines:
                offenders[str(path.relative_to(ROOT))] = lines
    assert offenders == {}


def _domain_modules() -> list[str]:
    """The domain modules as the layer contract in pyproject.toml names them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for contract in config["tool"]["importlinter"]["contracts"]:
        if contract["name"].startswith("Domain modules"):
            return sorted(contract["source_modules"])
    raise AssertionError("pyproject.toml names no domain-module contract")


def _deferred_project_imports(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for stmt in ast.walk(node):
            if isinstance(stmt, ast.Import) and any(a.name.split(".")[0] in PACKAGES for a in stmt.names):
                lines.append(stmt.lineno)
            elif isinstance(stmt, ast.ImportFrom) and (stmt.level or (stmt.module or "").split(".")[0] in PACKAGES):
                lines.append(stmt.lineno)
    return sorted(set(lines))


def test_domain_modules_import_the_project_at_module_top():
    offenders = {}
    for module in _domain_modules():
        path = ROOT / Path(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        lines = _deferred_project_imports(path)
        if lines:
            offenders[module] = lines
    assert offenders == {}


# The command-line entry points import what a subcommand needs when it runs, so that `precert --help`
# and every other subcommand start without loading the whole server; the test harness builds apps on
# demand. Every other module imports the project at its top.
DEFERRING_ALLOWED = {"server/cli.py", "server/auth/cli.py", "server/auth/testing.py"}


def test_every_module_but_the_command_line_imports_the_project_at_module_top():
    offenders = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in DEFERRING_ALLOWED or "/node_modules/" in rel:
                continue
            lines = _deferred_project_imports(path)
            if lines:
                offenders[rel] = lines
    assert offenders == {}
