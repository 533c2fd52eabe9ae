"""Re-invoking a hook with an order that already carries Precert's coverage-information sends no
needless ``update`` systemAction; an order whose coverage answer would change still gets one."""

from __future__ import annotations

import copy

from tests.test_crd_conformance import EXT, call, order_sign, service_request


def updates(out: dict) -> dict[str, dict]:
    return {f"{a['resource']['resourceType']}/{a['resource']['id']}": a["resource"]
            for a in out.get("systemActions", []) if a["type"] == "update"}


def first_answer(client, *orders) -> dict[str, dict]:
    r = call(client, order_sign(*orders))
    assert r.status_code == 200
    return updates(r.json())


def test_an_order_already_carrying_identical_coverage_information_gets_no_update(client):
    annotated = first_answer(client, service_request("re-1", "70551"))["ServiceRequest/re-1"]
    r = call(client, order_sign(annotated))
    assert r.status_code == 200
    assert "ServiceRequest/re-1" not in updates(r.json())


def test_only_the_order_whose_coverage_information_is_new_is_updated(client):
    annotated = first_answer(client, service_request("re-2", "70551"))["ServiceRequest/re-2"]
    r = call(client, order_sign(annotated, service_request("re-3", "99213")))
    assert r.status_code == 200
    assert set(updates(r.json())) == {"ServiceRequest/re-3"}


def test_an_order_whose_coverage_answer_changed_is_updated(client):
    annotated = first_answer(client, service_request("re-4", "70551"))["ServiceRequest/re-4"]
    changed = copy.deepcopy(annotated)
    changed["code"]["coding"][0]["code"] = "99213"  # an office visit: no prior authorization
    r = call(client, order_sign(changed))
    assert r.status_code == 200
    out = updates(r.json())
    assert "ServiceRequest/re-4" in out
    assert [e for e in out["ServiceRequest/re-4"]["extension"] if e["url"] == EXT] != [
        e for e in annotated["extension"] if e["url"] == EXT]


def test_stale_or_foreign_coverage_information_on_an_order_is_replaced(client):
    annotated = first_answer(client, service_request("re-5", "70551"))["ServiceRequest/re-5"]
    stale = copy.deepcopy(annotated)
    rep = next(e for e in stale["extension"] if e["url"] == EXT)
    next(s for s in rep["extension"] if s["url"] == "covered")["valueCode"] = "not-covered"
    r = call(client, order_sign(stale))
    assert r.status_code == 200
    fixed = updates(r.json())["ServiceRequest/re-5"]
    reps = [e for e in fixed["extension"] if e["url"] == EXT]
    assert len(reps) == 1
    assert next(s for s in reps[0]["extension"] if s["url"] == "covered")["valueCode"] != "not-covered"
