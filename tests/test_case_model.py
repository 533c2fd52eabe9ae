"""The case model (``server.pas.cases.Case``) is the shape every stored case has: each case the
server writes, through submission, review, notes and appeals, validates against it, with no key it
does not declare."""

from __future__ import annotations

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

from server.pas.cases import Case
from tests.pas_support import actions, claim_response, pas_request, submit
from tests.test_review_support import cases_collection, denied_case, npi, pended_request, staff_headers


def strict_case() -> TypeAdapter:
    """``Case``, refusing undeclared keys (pydantic validates a TypedDict's declared types)."""
    return TypeAdapter(with_config(ConfigDict(extra="forbid"))(Case))


def test_the_check_refuses_an_undeclared_key_and_a_wrong_type():
    adapter = strict_case()
    adapter.validate_python({"_id": "c1", "status": "pended"})
    for bad in ({"_id": "c1", "colour": "red"}, {"_id": "c1", "status": "lost"}, {"_id": "c1", "auth_numbers": "x"}):
        try:
            adapter.validate_python(bad)
        except ValidationError:
            continue
        raise AssertionError(f"accepted {bad}")


def test_every_stored_case_matches_the_declared_model(client, mongodb_uri, settings):
    reviewer = staff_headers(client, "reviewer")
    approved = submit(client, pas_request("2.2.1", provider_npi=npi()))
    assert approved.status_code == 200 and actions(approved.json()) == {1: "A1"}
    _, pended = pended_request(client)
    assert client.post(f"/review/api/cases/{pended}/notes", headers=reviewer, json={"text": "Called the surgeon's office."}).status_code == 201
    _, denied = denied_case(client)
    appeal = client.post(f"/review/api/cases/{denied}/appeals", headers=reviewer, json={"reason": "Angiography report now attached.",
                                                                                          "appellant": "provider"})
    assert appeal.status_code == 201, appeal.text

    adapter = strict_case()
    stored = list(cases_collection(mongodb_uri, settings).find({}))
    assert {pended, denied} <= {doc["_id"] for doc in stored}
    assert claim_response(approved.json())["id"] in {doc.get("response_id") for doc in stored}
    problems = {}
    for doc in stored:
        try:
            adapter.validate_python(doc)
        except ValidationError as exc:
            problems[doc["_id"]] = [(".".join(map(str, e["loc"])), e["type"]) for e in exc.errors()]
    assert problems == {}
