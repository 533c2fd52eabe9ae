"""One error model: every refusal, whoever raises it (a route, the request guard, the authorization
layer, the router itself), comes back in the one shape of the surface the path belongs to."""

from __future__ import annotations

import socket

import orjson
import pytest

from server import errors
from server.errors import PrecertError
from server.fhir.errors import FHIRError, issue

PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code", "error", "message"}


def is_outcome(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/fhir+json"), r.headers["content-type"]
    body = r.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "error", body
    assert body["issue"][0]["diagnostics"]
    return body


def is_problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers["content-type"]
    body = r.json()
    assert PROBLEM_MEMBERS <= set(body), body
    assert body["status"] == status and body["type"] == errors.PROBLEM_BASE + body["code"]
    assert body["detail"] and body["error"] == body["code"] and body["message"] == body["detail"]
    return body


# ------------------------------------------------------------------------------ the router's own 404
@pytest.mark.parametrize("path", ["/fhir/Claim/x/y/z/w", "/fhir/NoSuchType/1/_history/2/x"])
def test_an_unknown_fhir_path_is_an_operation_outcome(client, path):
    is_outcome(client.get(path), 404)


def test_an_unknown_cds_hooks_path_is_an_operation_outcome(client):
    is_outcome(client.get("/cds-services/order-sign-crd/no/such"), 404)


@pytest.mark.parametrize("path", ["/review/api/no-such", "/admin/no-such", "/staff/no-such", "/rules/no-such"])
def test_an_unknown_path_elsewhere_is_a_problem(client, path):
    body = is_problem(client.get(path), 404)
    assert body["code"] == "not-found" and path in body["detail"]


def test_a_method_a_route_does_not_take_is_405_in_the_surfaces_shape(client):
    is_outcome(client.delete("/cds-services"), 405)
    is_problem(client.delete("/rules/prior-auth-list"), 405)


# ------------------------------------------------------------------------------ the request guard
class Raw:
    """A response read off a raw socket (a declared body the client never sends)."""

    def __init__(self, data: bytes):
        head, _, self.content = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_code = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        self.text = self.content.decode("utf-8", "replace")

    def json(self):
        return orjson.loads(self.content)


def declared_too_large(client, path: str) -> Raw:
    with socket.create_connection(("127.0.0.1", client.base_url.port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {64 * 1024 * 1024}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):  # the server closes the connection after refusing
            data += chunk
    return Raw(data)


@pytest.mark.parametrize("path, shape", [("/fhir/Claim", is_outcome), ("/cds-services/order-sign-crd", is_outcome),
                                         ("/admin/rules/evaluate", is_problem), ("/staff/login", is_problem)])
def test_a_body_over_the_limit_is_refused_in_the_surfaces_shape(client, path, shape):
    r = declared_too_large(client, path)
    body = shape(r, 413)
    assert r.headers.get("connection") == "close"
    assert (body.get("code") or body["issue"][0]["code"]) == "too-costly"


# ------------------------------------------------------------------------------ routes' own refusals
def test_a_domain_refusal_outside_fhir_is_a_problem_with_the_old_members_too(client):
    r = client.post("/admin/rules/evaluate", json=["not", "an", "object"])
    body = is_problem(r, 400)
    assert body["code"] == "invalid" and "JSON object" in body["message"]


def test_a_bad_query_parameter_is_a_problem_on_the_review_api(client):
    body = is_problem(client.get("/review/api/cases", params={"limit": "many"}), 400)
    assert "limit" in body["detail"]


def test_a_bad_query_parameter_is_an_operation_outcome_under_fhir(client):
    is_outcome(client.get("/fhir/Patient", params={"_count": "many"}), 400)


def test_bad_cds_hooks_feedback_names_the_element_as_the_issue_expression(client):
    r = client.post("/cds-services/order-sign-crd/feedback", json={"feedback": [{"card": "c", "outcome": "maybe", "outcomeTimestamp": "t"}]})
    body = is_outcome(r, 400)
    assert body["issue"][0]["expression"] == ["feedback[0].outcome"]


# ------------------------------------------------------------------------------ the authorization layer
def test_refusals_of_an_unauthenticated_caller_follow_the_surface(http):
    body = is_outcome(http.get("/fhir/Claim"), 401)
    assert body["issue"][0]["code"] == "login"
    body = is_problem(http.get("/admin/auth/clients", headers={"Accept": "application/json"}), 401)
    assert body["code"] == "login"
    is_problem(http.get("/review/api/cases"), 401)


def test_an_admin_api_refusal_is_a_problem(http, harness):
    body = is_problem(http.get("/admin/auth/clients/no-such-client", headers=harness.admin_headers), 404)
    assert body["detail"] == "no such client"
    body = is_problem(http.patch("/admin/auth/staff/nobody", json={"colour": "red"}, headers=harness.admin_headers), 400)
    assert "colour" in body["detail"]


def test_a_failed_sign_in_is_a_problem(http):
    body = is_problem(http.post("/staff/login", json={"username": "nobody", "password": "wrong"}), 401)
    assert body["code"] == "login"
    is_problem(http.post("/staff/login", json={"username": 7, "password": "x"}), 400)


# ------------------------------------------------------------------------------ the renderer itself
@pytest.mark.parametrize("path, surface", [("/fhir", errors.FHIR), ("/fhir/Claim/$submit", errors.FHIR),
                                           ("/cds-services", errors.CDS_HOOKS), ("/cds-services/x/feedback", errors.CDS_HOOKS),
                                           ("/fhirish", errors.PROBLEM), ("/review/api/cases", errors.PROBLEM),
                                           ("/admin/auth/clients", errors.PROBLEM), ("/", errors.PROBLEM)])
def test_each_path_has_one_surface(path, surface):
    assert errors.surface(path) == surface


def test_a_fhir_error_keeps_every_issue_under_fhir_and_joins_them_elsewhere():
    exc = FHIRError(422, [issue("required", "Claim.patient is required", "Claim.patient"),
                          issue("informational", "a note", severity="information"),
                          issue("value", "Claim.use is not a code", "Claim.use")])
    ctype, body = errors.render("/fhir/Claim", exc)
    assert ctype.startswith(b"application/fhir+json")
    assert body.count(b'"severity"') == 3
    ctype, body = errors.render("/review/api/cases/1/decision", exc)
    assert ctype == errors.PROBLEM_JSON
    assert b"Claim.patient is required; Claim.use is not a code" in body and b"a note" not in body
    assert b'"code":"required"' in body


def test_a_refusal_carries_its_expression_and_headers():
    exc = PrecertError(429, "slow down", "throttled", expression="Claim.item[0]", headers={"Retry-After": "5"})
    assert errors.response("/fhir/Claim", exc).headers["retry-after"] == "5"
    assert exc.as_issues() == [{"severity": "error", "code": "throttled", "diagnostics": "slow down", "expression": ["Claim.item[0]"]}]
    assert PrecertError(404, "gone").code == "not-found"
