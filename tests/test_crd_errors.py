"""Every way a hook call can be wrong gets a clear 4xx with an OperationOutcome, never a 500."""

from __future__ import annotations

import copy

import pytest
import respx

from tests.test_crd_conformance import APPOINTMENT, call, fresh, collection, hook_body, order_sign, sandbox, searchset, service_request

GOOD = order_sign(service_request("e-1", "70551"))


def post(client, body, service="order-sign-crd", **kw):
    if isinstance(body, (bytes, str)):
        return client.post(f"/cds-services/{service}", content=body, headers={"Content-Type": "application/json", **kw.pop("headers", {})}, **kw)
    return client.post(f"/cds-services/{service}", json=body, **kw)


def outcome(r, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "error"
    return body["issue"][0]["diagnostics"]


def mutate(fn):
    body = copy.deepcopy(GOOD)
    fn(body)
    return body


@pytest.mark.parametrize("raw,text", [
    (b"{not json", "not valid JSON"),
    (b"", "empty"),
    (b"[1, 2]", "JSON object"),
    (b'"order-sign"', "JSON object"),
])
def test_unreadable_bodies_are_400(client, raw, text):
    assert text in outcome(post(client, raw), 400)


@pytest.mark.parametrize("change,text", [
    (lambda b: b.pop("hook"), "'hook' is required"),
    (lambda b: b.update(hook="order-select"), "answers 'order-sign'"),
    (lambda b: b.pop("hookInstance"), "'hookInstance' is required"),
    (lambda b: b.update(hookInstance=""), "'hookInstance' is required"),
    (lambda b: b.pop("context"), "'context' must be a JSON object"),
    (lambda b: b.update(context=[]), "'context' must be a JSON object"),
    (lambda b: b["context"].pop("patientId"), "context.patientId is required"),
    (lambda b: b["context"].update(patientId=42), "context.patientId must be a non-empty string"),
    (lambda b: b["context"].pop("userId"), "context.userId is required"),
    (lambda b: b["context"].update(draftOrders={"resourceType": "Patient"}), "context.draftOrders must be a FHIR Bundle"),
    (lambda b: b["context"]["draftOrders"].update(entry=[{"fullUrl": "x"}]), "has no resource"),
    (lambda b: b.update(fhirAuthorization={"access_token": "t", "token_type": "Bearer"}), "'fhirServer' is required"),
    (lambda b: b.update(fhirServer="ftp://ehr"), "'fhirServer' must be an http(s) URL"),
    (lambda b: b.update(fhirServer="https://ehr", fhirAuthorization={"token_type": "Bearer"}), "access_token"),
    (lambda b: b.update(prefetch=[]), "'prefetch' must be a JSON object"),
    (lambda b: b["prefetch"].update(coverage="Coverage/1"), "prefetch.coverage must be a FHIR resource"),
    (lambda b: b.update(extension=[]), "'extension' must be a JSON object"),
    (lambda b: b.update(extension={"davinci-crd.requestedVersion": "3.0"}), "CRD version '3.0' is not supported"),
    (lambda b: b.update(extension={"davinci-crd.configuration": [1]}), "'davinci-crd.configuration' must be a JSON object"),
])
def test_invalid_cds_hooks_content_is_400(client, change, text):
    assert text in outcome(post(client, mutate(change)), 400)


def test_crd_rule_breaches_are_422(client):
    only_patient = mutate(lambda b: b["context"].update(draftOrders=collection(sandbox("Patient", "pat-001"))))
    assert "holds no" in outcome(post(client, only_patient), 422)
    searchset_orders = mutate(lambda b: b["context"]["draftOrders"].update(type="searchset"))
    assert "type 'collection'" in outcome(post(client, searchset_orders), 422)

    select = hook_body("order-select", {"userId": "Practitioner/prac-001", "patientId": "pat-001",
                                        "draftOrders": collection(service_request("e-2", "70551")), "selections": ["ServiceRequest/other"]})
    assert "not in draftOrders" in outcome(post(client, select, "order-select-crd"), 422)

    booked = hook_body("appointment-book", {"userId": "Practitioner/prac-001", "patientId": "pat-001",
                                            "appointments": collection(dict(APPOINTMENT, status="booked"))})
    assert "'proposed'" in outcome(post(client, booked, "appointment-book-crd"), 422)

    dispatch = hook_body("order-dispatch", {"patientId": "pat-001", "dispatchedOrders": ["Patient/pat-001"], "performer": "Organization/x"})
    assert "orders are" in outcome(post(client, dispatch, "order-dispatch-crd"), 422)


def test_missing_dispatch_orders_is_400(client):
    body = hook_body("order-dispatch", {"patientId": "pat-001", "performer": "Organization/x"})
    assert "dispatchedOrders is required" in outcome(post(client, body, "order-dispatch-crd"), 400)


def test_no_prefetch_and_no_fhir_server_is_412_outside_the_sandbox(client, server):
    """(The sandbox reads its own records instead: tests/test_first_hour_crd.py.)"""
    config = server.app.state.precert.services["crd"].config
    config.sandbox = False
    try:
        body = order_sign(service_request("e-3", "70551"), prefetch=None)
        assert "no fhirServer" in outcome(post(client, body), 412)
    finally:
        config.sandbox = True


def test_an_unreachable_fhir_server_is_412_for_essential_data(client):
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.get(url__startswith="https://ehr.example.org/").respond(503)
        body = order_sign(service_request("e-4", "70551"), prefetch=None, fhirServer="https://ehr.example.org/fhir",
                          fhirAuthorization={"access_token": "t", "token_type": "Bearer"})
        assert "HTTP 503" in outcome(post(client, body), 412)


def test_dispatched_order_that_cannot_be_found_is_412(client):
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.get(url__startswith="https://ehr.example.org/").respond(json=searchset())
        body = hook_body("order-dispatch", {"patientId": "pat-001", "dispatchedOrders": ["ServiceRequest/nowhere"], "performer": "Organization/x"},
                         {"coverage": searchset(sandbox("Coverage", "cov-001"))}, fhirServer="https://ehr.example.org/fhir")
        assert "could not be obtained" in outcome(post(client, body, "order-dispatch-crd"), 412)


def test_unknown_service_is_404(client):
    assert "no CDS service" in outcome(post(client, GOOD, "no-such-service"), 404)


def test_oversized_body_is_413(client):
    body = b'{"hook": "order-sign", "pad": "' + b"x" * (6 * 1024 * 1024) + b'"}'
    outcome(post(client, body), 413)


def test_non_json_content_type_is_415(client):
    assert "Content-Type" in outcome(client.post("/cds-services/order-sign-crd", content=b"<xml/>", headers={"Content-Type": "application/xml"}), 415)


def test_hostile_strings_are_answered_safely(client):
    evil = "<script>alert(1)</script>'; db.dropDatabase(); {{7*7}} $where"
    body = mutate(lambda b: b.update(hookInstance=evil))
    body["context"]["draftOrders"]["entry"][0]["resource"]["code"]["coding"][0].update(code=evil, display=evil)
    r = post(client, body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert call(client, GOOD).status_code == 200  # nothing was broken


def test_unknown_context_fields_are_ignored(client):
    body = mutate(lambda b: b["context"].update(somethingNew={"x": 1}, selections="ignored on order-sign"))
    assert post(client, body).status_code == 200


def test_errors_are_audited(client):
    body = mutate(lambda b: b["context"].pop("patientId"))
    post(client, body)
    rec = fresh(client).get("/admin/crd/calls", params={"hookInstance": body["hookInstance"]}).json()["calls"][0]
    assert rec["status"] == 400 and rec["response"]["resourceType"] == "OperationOutcome"


def test_an_internal_failure_is_answered_as_a_technical_problem_not_a_500(client, server, monkeypatch):
    import cds_hooks.service as service

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(service, "evaluation_input", broken)
    r = call(client, order_sign(service_request("e-5", "70551")))
    assert r.status_code == 200
    assert "technical problem" in r.json()["cards"][0]["detail"]


def test_feedback_is_stored(client):
    body = {"feedback": [
        {"card": "0b8d5a9a-6b1e-4c4f-9a51-1c1d1b0c0a11", "outcome": "accepted", "acceptedSuggestions": [{"id": "s-1"}],
         "outcomeTimestamp": "2026-01-15T10:05:31Z"},
        {"card": "0b8d5a9a-6b1e-4c4f-9a51-1c1d1b0c0a12", "outcome": "overridden",
         "overrideReason": {"reason": {"system": "http://example.org", "code": "x", "display": "Not relevant"}, "userComment": "ok"},
         "outcomeTimestamp": "2026-01-15T10:06:00Z"}]}
    r = client.post("/cds-services/order-sign-crd/feedback", json=body)
    assert r.status_code == 200 and r.json() == {}


@pytest.mark.parametrize("body,text", [
    ({}, "feedback is"),
    ({"feedback": []}, "feedback is"),
    ({"feedback": [{"outcome": "accepted"}]}, "card"),
    ({"feedback": [{"card": "c", "outcome": "maybe", "outcomeTimestamp": "t"}]}, "outcome must be"),
    ({"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "t"}]}, "acceptedSuggestions"),
    ({"feedback": [{"card": "c", "outcome": "overridden"}]}, "outcomeTimestamp"),
])
def test_bad_feedback_is_400(client, body, text):
    assert text in outcome(client.post("/cds-services/order-sign-crd/feedback", json=body), 400)


def test_crd_2_2_strict_payer_identification_is_400(client, server):
    """CRD hook-13 (on by default in production): the one Coverage must name this payer by identifier."""
    config = server.app.state.precert.services["crd"].config
    saved = config.require_payer_identifier
    config.require_payer_identifier = True
    try:
        ext = {"davinci-crd.requestedVersion": "2.2"}
        body = order_sign(service_request("e-strict", "70551"), extension=ext)  # sandbox Coverage: payor by reference only
        assert "payor.identifier" in outcome(post(client, body), 400)
        cov = sandbox("Coverage", "cov-001")
        cov["payor"] = [{"identifier": {"system": "http://precert.example.org/sid/payer-id", "value": "PRECERT01"}}]
        ok = order_sign(service_request("e-strict2", "70551"), prefetch={"coverage": searchset(cov)}, extension=ext)
        assert post(client, ok).status_code == 200
        two = order_sign(service_request("e-strict3", "70551"), prefetch={"coverage": searchset(cov, dict(cov, id="cov-x"))}, extension=ext)
        assert "exactly one" in outcome(post(client, two), 400)
        assert post(client, order_sign(service_request("e-strict4", "70551"))).status_code == 200  # 2.0 requests are not held to it
    finally:
        config.require_payer_identifier = saved
