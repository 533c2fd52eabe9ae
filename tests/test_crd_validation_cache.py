"""An EHR sends the same prefetch in call after call; validating it once and remembering the
result must never change an answer: an invalid resource is refused every time it is sent, and a
valid one next to it is accepted as before."""

from __future__ import annotations

import copy

from tests.test_crd_errors import GOOD, outcome, post


def test_the_same_invalid_prefetch_is_refused_every_time(client):
    body = copy.deepcopy(GOOD)
    body["prefetch"] = {"patient": {"resourceType": "Patient", "id": "p1", "gender": "sometimes"}}
    first = outcome(post(client, body), 400)
    second = outcome(post(client, copy.deepcopy(body)), 400)
    assert "prefetch.patient" in first and first == second


def test_a_valid_request_after_a_refused_one_is_answered(client):
    body = copy.deepcopy(GOOD)
    body["prefetch"] = {"patient": {"resourceType": "Patient", "id": "p2", "gender": "sometimes"}}
    outcome(post(client, body), 400)
    for _ in range(2):
        r = post(client, copy.deepcopy(GOOD))
        assert r.status_code == 200, r.text
        assert "cards" in r.json()
