"""The sandbox walkthrough: one prior authorization from CRD order-sign to the reviewer's decision
and the EHR's notification, as the README tells a developer to run it."""

from server.walkthrough import run


def test_walkthrough_drives_a_prior_authorization_from_order_to_notification(server):
    lines: list[str] = []
    result = run(server.url, out=lines.append)
    assert result["crd"]["pa-needed"] == "auth-needed"
    assert result["crd"]["questionnaire"].startswith("http://precert.example.org/fhir/Questionnaire/advanced-imaging")
    assert result["dtr"] and all(result["dtr"])
    assert result["submitted"] == "A4"
    assert result["notified"] == "A1"
    assert any(line.startswith("5.") for line in lines)


def test_walkthrough_signs_its_calls_when_authentication_is_enforced(srv, http):
    """PRECERT_REQUIRE_AUTH=true: unsigned calls are refused, and the walkthrough signs with the sandbox keys."""
    assert http.get("/fhir/Patient/pat-001").status_code == 401
    assert http.post("/cds-services/order-sign-crd", json={}).status_code == 401
    lines: list[str] = []
    result = run(srv.url, out=lines.append)
    assert result["signed"] is True
    assert lines[0].startswith("0. authentication is enforced")
    assert result["crd"]["pa-needed"] == "auth-needed"
    assert result["submitted"] == "A4"
    assert result["notified"] == "A1"


def test_walkthrough_does_not_sign_against_an_open_sandbox(server):
    result = run(server.url, out=lambda line: None)
    assert result["signed"] is False
