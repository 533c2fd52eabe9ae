"""Configuration has one home: only ``server/settings.py`` reads the process environment, and it
declares every variable once, so it is the one list of what an operator can set."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from cds_hooks.config import CRDConfig
from server import settings
from server.auth.config import AuthConfig
from server.cli import main
from server.settings import Settings, SettingsError, Variables

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


# ---------------------------------------------------------------------- one declaration of every variable

def named_variables() -> dict[str, set[str]]:
    """{PRECERT_* name: files naming it} over the product's code (the docs and the compose file are
    held to the same declarations by test_first_hour_docs and test_deployment)."""
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "node_modules" not in p.parts]
    names: dict[str, set[str]] = {}
    for path in files:
        for name in re.findall(r"PRECERT_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")):
            names.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return names


def test_every_variable_the_code_names_is_declared_once():
    declared = {settings.PREFIX + field.upper() for field in Variables.model_fields}
    named = named_variables()
    assert "PRECERT_MONGODB_URI" in named and "PRECERT_CRD_TRUSTED_EHRS" in named  # the walk finds them
    assert {name: sorted(files) for name, files in named.items() if name not in declared} == {}


def test_a_mistyped_value_is_refused_with_the_variables_name():
    for env, name in (({"PRECERT_PORT": "eighty"}, "PRECERT_PORT"), ({"PRECERT_REQUIRE_AUTH": "maybe"}, "PRECERT_REQUIRE_AUTH"),
                      ({"PRECERT_MAX_BODY_BYTES": "10MB"}, "PRECERT_MAX_BODY_BYTES")):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env(env)
    with pytest.raises(SettingsError, match="PRECERT_ACCESS_TOKEN_SECONDS"):
        AuthConfig.from_env({"PRECERT_ACCESS_TOKEN_SECONDS": "five minutes"})
    with pytest.raises(SettingsError, match="PRECERT_CRD_FHIR_TIMEOUT"):
        CRDConfig.from_env("sandbox", {"PRECERT_CRD_FHIR_TIMEOUT": "soon"})


def test_an_empty_value_counts_as_unset_and_values_are_trimmed():
    s = Settings.from_env({"PRECERT_MODE": " Production ", "PRECERT_DB_NAME": "", "PRECERT_CORS_ORIGINS": " https://a.example, ,https://b.example "})
    assert s.mode == "production" and not s.load_sandbox and s.db_name == "precert"
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert AuthConfig.from_env({"PRECERT_REQUIRE_AUTH": ""}).require_auth is None
    assert CRDConfig.from_env("sandbox", {"PRECERT_CRD_JWT_ALGS": "ES384, HS256"}).algorithms == frozenset({"ES384"})


def test_an_explicit_mapping_reads_nothing_from_the_process(monkeypatch):
    monkeypatch.setenv("PRECERT_DB_NAME", "from-the-process")
    monkeypatch.setenv("PRECERT_CORS_ORIGINS", "https://ehr.example")
    assert Settings.from_env({}).db_name == "precert" and Settings.from_env({}).cors_origins == ()
    process = Settings.from_env()
    assert process.db_name == "from-the-process" and process.cors_origins == ("https://ehr.example",)


def test_a_value_read_while_running_follows_the_environment(monkeypatch):
    monkeypatch.setenv("PRECERT_PAS_VERSION", "2.0.1")
    assert settings.pas_version() == "2.0.1"
    monkeypatch.setenv("PRECERT_PAS_VERSION", "2.2.1")
    assert settings.pas_version() == "2.2.1"
    monkeypatch.setenv("PRECERT_NOTIFY_BACKOFF_SECONDS", "0.5")
    assert settings.notify_backoff() == (0.5, 300.0)
    monkeypatch.delenv("PRECERT_PAS_VERSION")
    assert settings.pas_version() == ""


def test_the_command_line_names_a_mistyped_variable_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("PRECERT_PORT", "eighty")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("precert: PRECERT_PORT:")
