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
