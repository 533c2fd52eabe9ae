"""A staff member's own NPI, set from the command line or the admin API, is the reviewer a PAS 2.2.1
decision names (``claimResponseReviewer.reviewerNPI``)."""

from __future__ import annotations

import json
import uuid

import httpx

from server.cli import main
from tests.pas_support import claim_response, pas_request, submit
from tests.test_review_support import staff_headers

NPI = "1234567893"  # ten digits with a valid check digit
OTHER_NPI = "1922334457"


def test_the_command_line_sets_changes_and_refuses_a_staff_npi(db, tmp_path, capsys):
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    assert main(["staff", "add", *db, "drkim", "--role", "medical-director", "--licence", "MD", "--npi", NPI,
                 "--password-file", str(pw)]) == 0
    assert json.loads(capsys.readouterr().out)["npi"] == NPI
    assert main(["staff", "update", *db, "drkim", "--npi", OTHER_NPI]) == 0
    assert json.loads(capsys.readouterr().out)["npi"] == OTHER_NPI
    assert main(["staff", "update", *db, "drkim", "--npi", "1234567890"]) == 2  # the check digit is wrong
    assert "npi:" in capsys.readouterr().err
    assert main(["staff", "add", *db, "drno", "--role", "reviewer", "--licence", "RN", "--npi", "12345",
                 "--password-file", str(pw)]) == 2
    assert main(["staff", "update", *db, "drkim", "--npi", ""]) == 0
    assert json.loads(capsys.readouterr().out)["npi"] == ""


def _problem_naming_npi(r) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "npi" in r.json()["detail"]


def test_a_physician_reviewer_created_with_an_npi_is_named_on_the_decision(client):
    admin = staff_headers(client, "admin")
    name = f"dr-{uuid.uuid4().hex[:6]}"
    password = "a long enough password"
    _problem_naming_npi(client.post("/admin/auth/staff", headers=admin, json={
        "username": name, "password": password, "roles": ["medical-director"], "licence": "MD", "npi": "1234567890"}))
    r = client.post("/admin/auth/staff", headers=admin, json={
        "username": name, "password": password, "roles": ["medical-director"], "licence": "MD", "npi": NPI})
    assert r.status_code == 201 and r.json()["npi"] == NPI
    _problem_naming_npi(client.patch(f"/admin/auth/staff/{name}", headers=admin, json={"npi": 1234567893}))
    listed = {u["username"]: u for u in client.get("/admin/auth/staff", headers=admin).json()["staff"]}
    assert listed[name]["npi"] == NPI

    signed_in = httpx.post(str(client.base_url).rstrip("/") + "/staff/login", json={"username": name, "password": password}, timeout=30)
    assert signed_in.status_code == 200, signed_in.text
    director = {"Authorization": f"Bearer {signed_in.json()['token']}"}
    body = submit(client, pas_request("2.2.1", "Bundle-SurgicalRequestBundleExample.json")).json()
    cr = claim_response(body)
    number = next(e for e in cr["item"][0]["extension"] if e["url"].endswith("administrationReferenceNumber"))["valueString"].rsplit("-", 1)[0]
    decided = client.post(f"/review/api/cases/{number}/decision", json={"action": "approve"}, headers=director)
    assert decided.status_code == 200, decided.text
    stored = client.get(f"/fhir/ClaimResponse/{cr['id']}").json()
    reviewer = next(e for e in stored.get("extension", []) if e["url"].endswith("extension-claimResponseReviewer"))
    named = {s["url"]: s for s in reviewer["extension"]}["reviewerNPI"]["valueIdentifier"]
    assert named["system"] == "http://hl7.org/fhir/sid/us-npi" and named["value"] == NPI
