"""FHIR data is read and written only through :class:`server.fhir.repository.Repository`.

:class:`server.storage.Storage` is the persistence under it; every other module reaches FHIR resources
through a repository (the caller's, a staff member's, or ``Repository.system`` for Precert's own
actors), so organization isolation and scopes apply to every read and audit and events to every
write. Storage's other collections (cases, audit, calls, caches, the outbox) stay open to their own
modules through ``storage.collection(...)``.

The check reads the source with :mod:`ast`: any call ``<something>.storage.<method>(...)`` or
``storage.<method>(...)`` of one of Storage's FHIR-resource methods, outside the two modules allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

from server.storage import Storage

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "cds_hooks", "questionnaires", "capability")
ALLOWED = {"server/storage.py", "server/fhir/repository.py"}
# Storage's methods over FHIR resources (the collections of other records go through ``collection``).
FHIR_METHODS = frozenset({"create", "create_many", "read", "vread", "history", "update", "delete", "search",
                          "search_query", "read_many", "bulk_load", "transaction"})
NOT_FHIR = frozenset({"collection", "connect", "close", "ensure_indexes", "ping", "db", "client"})


def _is_storage(node: ast.expr, aliases: set[str]) -> bool:
    """``storage``, ``x.storage``, ``self.state.storage``, or a name a module bound to one
    (``st = state.storage``): an expression naming a Storage."""
    if isinstance(node, ast.Name):
        return node.id == "storage" or node.id in aliases
    return isinstance(node, ast.Attribute) and node.attr == "storage"


def storage_calls(source: str) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    aliases = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and _is_storage(node.value, set())
               for t in node.targets if isinstance(t, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FHIR_METHODS \
                and _is_storage(node.func.value, aliases):
            found.append((node.lineno, node.func.attr))
    return sorted(found)


def test_the_method_list_covers_storage():
    public = {name for name, value in vars(Storage).items() if not name.startswith("_") and callable(value)}
    assert public - FHIR_METHODS - NOT_FHIR == set(), "a new Storage method: list it as FHIR or not"
    assert FHIR_METHODS <= public


def test_the_scan_sees_the_call_shapes():
    src = "async def f(state, self, st):\n" \
          "    await state.storage.read('Coverage', 'x')\n" \
          "    await self.storage.search('Coverage', {})\n" \
          "    storage = st.storage\n" \
          "    await storage.read_many(['Patient/1'])\n" \
          "    await st.storage.collection('calls').find_one({})\n" \
          "    await repo.read('ValueSet', 'v')\n" \
          "    db = st.storage\n" \
          "    await db.vread('Claim', 'c', 1)\n"
    assert storage_calls(src) == [(2, "read"), (3, "search"), (5, "read_many"), (9, "vread")]


def test_only_the_repository_calls_storage_for_fhir_resources():
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ALLOWED:
                continue
            offenders += [f"{rel}:{line} storage.{method}(...)" for line, method in storage_calls(path.read_text())]
    assert offenders == [], "FHIR data goes through server.fhir.repository.Repository:\n" + "\n".join(offenders)


# The collections that hold FHIR data, which only Storage itself names.
FHIR_COLLECTIONS = ("resources", "resource_history")


def fhir_collection_uses(source: str) -> list[tuple[int, str]]:
    """``<anything>.collection("resources")`` and the like: a FHIR collection reached around Storage's methods."""
    return sorted((node.lineno, node.args[0].value) for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "collection"
                  and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in FHIR_COLLECTIONS)


def test_no_module_reaches_the_fhir_collections_through_collection():
    assert fhir_collection_uses("x = st.collection('resources')\ny = st.collection('pas_cases')\n") == [(1, "resources")]
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "server/storage.py":
                continue
            offenders += [f"{rel}:{line} collection({name!r})" for line, name in fhir_collection_uses(path.read_text())]
    assert offenders == [], "the FHIR collections are Storage's own:\n" + "\n".join(offenders)
