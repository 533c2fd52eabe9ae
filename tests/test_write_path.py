"""One write path: PAS requests, review decisions and subscription bookkeeping write FHIR data only
through the repository, which audits each resource written and publishes the domain events after
commit."""

from __future__ import annotations

import ast
from pathlib import Path

import orjson
import pytest

from server.auth.testing import SANDBOX_STAFF_PASSWORDS, staff_login
from server.events import CaseDecided, ResourceWritten
from tests.pas_support import FHIR, actions, claim_response, pas_request

ROOT = Path(__file__).resolve().parents[1]
SURGICAL = "Bundle-SurgicalRequestBundleExample.json"
CLIENT_NPI = "1245319599"


@pytest.fixture(scope="module")
def published(srv):
    """Every event the running server publishes after commit, in order."""
    seen: list = []

    async def record(event) -> None:
        seen.append(event)

    events = srv.app.state.precert.events
    events.on(ResourceWritten, record)
    events.on(CaseDecided, record)
    return seen


def audit_entries(http, harness, agent: str) -> list[dict]:
    resp = http.get("/fhir/AuditEvent", params={"agent": agent, "_count": "200"}, headers=harness.admin_headers)
    assert resp.status_code == 200, resp.text
    return [e["resource"] for e in resp.json().get("entry", [])]


def writes(entries: list[dict]) -> set[tuple[str, str]]:
    """(interaction, Type/id) of the audit entries that record a resource written."""
    out = set()
    for e in entries:
        code = (e.get("subtype") or [{}])[0].get("code")
        ref = ((e.get("entity") or [{}])[0].get("what") or {}).get("reference")
        if code in ("create", "update") and ref and ref.count("/") == 1:
            out.add((code, ref))
    return out


def pended_submission(http, harness) -> tuple[str, dict]:
    cid, key = harness.register(npi=CLIENT_NPI, scopes="system/Claim.c system/ClaimResponse.r")
    token = harness.token(cid, key, "system/Claim.c")
    resp = http.post("/fhir/Claim/$submit", content=orjson.dumps(pas_request("2.2.1", SURGICAL, provider_npi=CLIENT_NPI)),
                     headers={**FHIR, "Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert actions(body) == {1: "A4"}
    return cid, body


def test_a_pas_submission_is_audited_and_published_resource_by_resource(http, harness, published):
    cid, body = pended_submission(http, harness)
    response_id = claim_response(body)["id"]
    mine = [e for e in published if isinstance(e, ResourceWritten) and e.actor == cid]
    written = {(e.stored.type, e.action) for e in mine}
    assert {("Claim", "create"), ("ClaimResponse", "create"), ("Task", "create")} <= written
    assert any(e.stored.type == "ClaimResponse" and e.stored.id == response_id for e in mine)
    # The case is the caller's organization's, as each resource written is.
    assert {e.stored.owner for e in mine} == {f"http://hl7.org/fhir/sid/us-npi|{CLIENT_NPI}"}
    audited = writes(audit_entries(http, harness, cid))
    assert ("create", f"ClaimResponse/{response_id}") in audited
    assert {ref.split("/")[0] for _, ref in audited} >= {"Claim", "ClaimResponse", "Task"}


def test_a_reviewers_decision_is_audited_and_published_as_case_decided(http, harness, published):
    _, body = pended_submission(http, harness)
    response_id = claim_response(body)["id"]
    case_id = next(e["valueString"] for e in claim_response(body)["item"][0]["extension"]
                   if e["url"].endswith("administrationReferenceNumber")).rsplit("-", 1)[0]
    reviewer = staff_login(http, harness.base, "reviewer", SANDBOX_STAFF_PASSWORDS["reviewer"])
    before = len(published)
    resp = http.post(f"/review/api/cases/{case_id}/decision", json={"action": "approve", "note": "criteria met"},
                     headers={"Authorization": f"Bearer {reviewer}"})
    assert resp.status_code == 200, resp.text
    after = published[before:]
    decided = [e for e in after if isinstance(e, CaseDecided)]
    assert [(e.case["_id"], e.actor) for e in decided] == [(case_id, "reviewer")]
    assert decided[0].case["status"] == "decided"
    assert actions(decided[0].response) == {1: "A1"}
    updated = [e for e in after if isinstance(e, ResourceWritten) and e.stored.type == "ClaimResponse"]
    assert [(e.stored.id, e.action, e.actor) for e in updated] == [(response_id, "update", "reviewer")]
    # The ClaimResponse keeps its organization: the reviewer is bound to none.
    assert updated[0].stored.owner == f"http://hl7.org/fhir/sid/us-npi|{CLIENT_NPI}"
    assert ("update", f"ClaimResponse/{response_id}") in writes(audit_entries(http, harness, "reviewer"))


def test_a_decision_that_loses_the_race_writes_nothing_and_publishes_nothing(http, harness, published):
    _, body = pended_submission(http, harness)
    case_id = next(e["valueString"] for e in claim_response(body)["item"][0]["extension"]
                   if e["url"].endswith("administrationReferenceNumber")).rsplit("-", 1)[0]
    reviewer = {"Authorization": f"Bearer {staff_login(http, harness.base, 'reviewer', SANDBOX_STAFF_PASSWORDS['reviewer'])}"}
    assert http.post(f"/review/api/cases/{case_id}/decision", json={"action": "approve"}, headers=reviewer).status_code == 200
    before = len(published)
    again = http.post(f"/review/api/cases/{case_id}/decision", json={"action": "approve"}, headers=reviewer)
    assert again.status_code == 409
    assert published[before:] == []


# ---------------------------------------------------------------------- nothing around the repository
WRITE_METHODS = frozenset({"create", "create_many", "update", "delete", "transaction"})
RESOURCE_COLLECTIONS = frozenset({"resources", "resource_history"})
DATA_WRITES = frozenset({"insert_one", "insert_many", "update_one", "update_many", "replace_one", "delete_one",
                         "delete_many", "find_one_and_update", "find_one_and_replace", "find_one_and_delete", "bulk_write"})
# The repository is the one writer of FHIR data; storage is what it writes with.
ALLOWED = {"server/fhir/repository.py", "server/storage.py"}


def _is_storage(node: ast.AST) -> bool:
    """``storage``, ``self.storage``, ``state.storage``, ``x.y.storage``."""
    return (isinstance(node, ast.Name) and node.id == "storage") or (isinstance(node, ast.Attribute) and node.attr == "storage")


def _resource_collection(node: ast.AST) -> bool:
    """``….collection("resources")`` or ``….db.resources``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "collection":
        return any(isinstance(a, ast.Constant) and a.value in RESOURCE_COLLECTIONS for a in node.args)
    return isinstance(node, ast.Attribute) and node.attr in RESOURCE_COLLECTIONS and isinstance(node.value, ast.Attribute) and node.value.attr == "db"


def storage_writes(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        target, method = node.func.value, node.func.attr
        if method in WRITE_METHODS and _is_storage(target):
            found.append((node.lineno, f"storage.{method}"))
        elif method in DATA_WRITES and _resource_collection(target):
            found.append((node.lineno, f"resources.{method}"))
    return found


def test_the_check_finds_a_direct_storage_write():
    probe = (
        "async def f(state, session):\n"
        "    await state.storage.update('Claim', 'x', {}, session=session)\n"
        "    await self.storage.create_many([])\n"
        "    await storage.collection('resources').insert_one({})\n"
        "    await state.storage.collection('pas_cases').insert_one({})\n"
        "    await state.storage.read('Claim', 'x')\n"
    )
    assert storage_writes(probe) == [(2, "storage.update"), (3, "storage.create_many"), (4, "resources.insert_one")]


def test_nothing_outside_the_repository_writes_fhir_data_to_storage():
    offenders = {}
    for package in ("server", "cds_hooks", "questionnaires", "capability"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "node_modules" in path.parts:
                continue
            rel = str(path.relative_to(ROOT))
            if rel in ALLOWED:
                continue
            found = storage_writes(path.read_text(encoding="utf-8"))
            if found:
                offenders[rel] = found
    assert offenders == {}
