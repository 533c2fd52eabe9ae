"""The audit trail: accesses to PHI and authentication attempts, as AuditEvent resources that only
administrators can read."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


from server.auth.testing import ClientKey, staff_login, token_form
from server.fhir.validation import validate_resource


def events(http, harness, **params) -> list[dict]:
    resp = http.get("/fhir/AuditEvent", params={"_count": "200", **params}, headers=harness.admin_headers)
    assert resp.status_code == 200, resp.text
    return [e["resource"] for e in resp.json().get("entry", [])]


def test_a_clients_read_of_phi_is_recorded_with_who_what_when_and_outcome(http, harness):
    cid, key = harness.register(npi="1234567893")
    token = harness.token(cid, key, "system/Patient.rs")
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    assert http.get("/fhir/Patient/pat-002", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    found = [e for e in events(http, harness, agent=cid) if e.get("subtype", [{}])[0].get("code") == "read"]
    assert len(found) == 1
    event = found[0]
    validate_resource(event, "AuditEvent")
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["entity"][0]["what"] == {"reference": "Patient/pat-002"}
    agent = event["agent"][0]
    assert agent["who"]["identifier"]["value"] == cid and agent["requestor"] is True
    org = event["agent"][1]
    assert org["who"]["identifier"] == {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}
    assert org["requestor"] is False
    assert datetime.fromisoformat(event["recorded"].replace("Z", "+00:00")) >= before


def test_searches_record_their_query(http, harness):
    import base64

    cid, key = harness.register()
    token = harness.token(cid, key, "system/Patient.rs")
    http.get("/fhir/Patient", params={"family": "Rivera"}, headers={"Authorization": f"Bearer {token}"})
    searches = [e for e in events(http, harness, agent=cid) if e.get("subtype", [{}])[0].get("code") == "search-type"]
    assert base64.b64decode(searches[0]["entity"][0]["query"]).decode() == "family=Rivera"


def test_refused_requests_are_recorded_as_failures(http, harness):
    cid, key = harness.register()
    token = harness.token(cid, key, "system/Patient.rs")
    assert http.delete("/fhir/Patient/pat-003", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    refused = [e for e in events(http, harness, agent=cid, outcome="4")]
    assert any(e["action"] == "D" and "403" in e["outcomeDesc"] for e in refused)
    assert http.get("/fhir/Claim/anything").status_code == 401
    anonymous = events(http, harness, agent="anonymous", outcome="4", entity="Claim/anything")
    assert anonymous and "401" in anonymous[0]["outcomeDesc"]


def test_token_requests_are_recorded_whether_granted_or_not(http, harness, srv):
    cid, key = harness.register()
    harness.token(cid, key, "system/Claim.c")
    bad = ClientKey.generate("ES384")
    http.post("/auth/token", data=token_form(bad.assertion(cid, f"{srv.url}/auth/token"), "system/Claim.c"))
    logged = events(http, harness, agent=cid, type="110114")
    outcomes = sorted(e["outcome"] for e in logged)
    assert outcomes == ["0", "4"]
    assert all(e["type"]["code"] == "110114" for e in logged)


def test_failed_staff_sign_ins_are_recorded(http, harness):
    http.post("/staff/login", json={"username": "reviewer", "password": "guess"})
    failed = events(http, harness, agent="reviewer", outcome="4")
    assert any(e["subtype"][0]["code"] == "staff-login" for e in failed)


def test_audit_search_parameters(http, harness):
    today = datetime.now(timezone.utc).date().isoformat()
    assert events(http, harness, date=f"ge{today}")
    assert events(http, harness, date="lt2000-01-01") == []
    cid, key = harness.register()
    token = harness.token(cid, key, "system/Patient.rs")
    for pid in ("pat-004", "pat-005"):
        http.get(f"/fhir/Patient/{pid}", headers={"Authorization": f"Bearer {token}"})
    first = http.get("/fhir/AuditEvent", params={"_count": "1", "agent": cid}, headers=harness.admin_headers).json()
    assert len(first["entry"]) == 1 and first["total"] == 3
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = http.get(nxt, headers=harness.admin_headers).json()
    assert second["entry"][0]["resource"]["id"] != first["entry"][0]["resource"]["id"]
    one = first["entry"][0]["resource"]
    assert http.get(f"/fhir/AuditEvent/{one['id']}", headers=harness.admin_headers).json()["id"] == one["id"]
    assert http.get("/fhir/AuditEvent/no-such-event", headers=harness.admin_headers).status_code == 404
    for bad in ({"patient": "x"}, {"date": "yesterday"}, {"outcome": "7"}, {"_count": "many"}):
        resp = http.get("/fhir/AuditEvent", params=bad, headers=harness.admin_headers)
        assert resp.status_code == 400 and resp.json()["resourceType"] == "OperationOutcome"
    posted = http.post("/fhir/AuditEvent/_search", data={"_count": "1"}, headers=harness.admin_headers)
    assert posted.status_code == 200 and posted.json()["type"] == "searchset"
    admin_view = http.get("/admin/audit", params={"_count": "1"}, headers=harness.admin_headers)
    assert admin_view.status_code == 200 and admin_view.json()["resourceType"] == "Bundle"


def test_only_administrators_read_the_audit_trail(http, harness, srv):
    reviewer = staff_login(http, srv.url, "reviewer", "reviewer-sandbox")
    assert http.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {reviewer}"}).status_code == 403
    client = harness.client_headers(scope="system/*.cruds")
    assert http.get("/fhir/AuditEvent", headers=client).status_code in (401, 403)
    assert http.get("/admin/audit", headers=client).status_code in (401, 403)


def test_the_audit_trail_cannot_be_written_through_the_api(http, harness):
    body = {"resourceType": "AuditEvent"}
    assert http.post("/fhir/AuditEvent", json=body, headers=harness.admin_headers).status_code == 405
    some = events(http, harness)[0]["id"]
    assert http.put(f"/fhir/AuditEvent/{some}", json=body, headers=harness.admin_headers).status_code == 405
    assert http.delete(f"/fhir/AuditEvent/{some}", headers=harness.admin_headers).status_code == 405
