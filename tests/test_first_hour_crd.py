"""A developer's first CRD call: in the sandbox it needs neither prefetch nor an EHR FHIR server
(Precert reads its own sandbox records), and a token that fails says why."""

from __future__ import annotations

from tests.test_crd_conformance import coverage_reps, order_sign, service_request, sub

EXT_PA = "pa-needed"


def post(client, body, service="order-sign-crd", **kw):
    return client.post(f"/cds-services/{service}", json=body, **kw)


def pa_needed(response: dict) -> list[str]:
    out = []
    for action in response.get("systemActions", []):
        for rep in coverage_reps(action["resource"]):
            out += [c for c in sub(rep, EXT_PA)]
    return out


def test_a_sandbox_call_without_prefetch_or_fhir_server_reads_the_sandbox_records(client):
    body = order_sign(service_request("fh-1", "70551"), prefetch=None)
    r = post(client, body)
    assert r.status_code == 200, r.text
    assert pa_needed(r.json()) == ["auth-needed"]
    calls = client.get("/admin/crd/calls", params={"hookInstance": body["hookInstance"]}, headers={"Accept": "application/json"}).json()["calls"]
    assert "coverage" in calls[0]["fetched"] and "patient" in calls[0]["fetched"]


def test_a_sandbox_call_for_a_member_with_no_coverage_on_file_answers_so(client):
    """A patient the sandbox does not have: no Coverage is found, which is an answer, not a 412."""
    body = order_sign(service_request("fh-2", "70551", patient="nobody-here"), prefetch=None, patient="nobody-here")
    r = post(client, body)
    assert r.status_code == 200, r.text
    assert pa_needed(r.json()) == []


def test_a_call_that_brings_its_coverage_is_answered_from_what_it_brought(client):
    """Precert's own records stand in only for what the call cannot do without."""
    from tests.test_crd_conformance import sandbox, searchset

    body = order_sign(service_request("fh-3", "70551"), prefetch={"coverage": searchset(sandbox("Coverage", "cov-001"))})
    r = post(client, body)
    assert r.status_code == 200, r.text
    assert pa_needed(r.json()) == ["auth-needed"]
    calls = client.get("/admin/crd/calls", params={"hookInstance": body["hookInstance"]}, headers={"Accept": "application/json"}).json()["calls"]
    assert not calls[0]["fetched"]
