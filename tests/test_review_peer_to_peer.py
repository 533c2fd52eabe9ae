"""The peer-to-peer discussion offered with a clinical denial is payer configuration
(``payer.peer_to_peer``: contact and window), shown in the ClaimResponse's processNote and on the case."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import replace

import httpx
import pytest

from server.app import create_app
from server.pas.reasons import DEFAULT_PEER_TO_PEER, peer_to_peer_offer
from server.rules.loader import RulesError, load_directory
from tests.pas_support import FHIR, pas_request
from tests.support import ThreadedServer
from tests.test_review_support import RATIONALE, SURGICAL, case_number, npi
from tests.test_rules import SANDBOX

CONTACT = "Dr Rao's peer-to-peer desk, +1-555-0199, weekdays 8-5 ET"


def rules_with(tmp_path, block: str):
    target = tmp_path / "rules"
    shutil.copytree(SANDBOX, target)
    payer = target / "payer.yaml"
    text = payer.read_text()
    start = text.index("  peer_to_peer:\n")
    end = text.index("  contact:\n", start)
    payer.write_text(text[:start] + block + text[end:])
    return target


def test_without_configuration_the_default_offer_stands():
    assert peer_to_peer_offer(None) == DEFAULT_PEER_TO_PEER
    assert peer_to_peer_offer({"window_days": 5}) == {**DEFAULT_PEER_TO_PEER, "window_days": 5}


@pytest.mark.parametrize("block, words", [
    ("  peer_to_peer: {window_days: 0}\n", "payer.peer_to_peer.window_days: '0' is not a whole number of days (1 to 60)"),
    ("  peer_to_peer: {window_days: soon}\n", "payer.peer_to_peer.window_days: 'soon'"),
    ("  peer_to_peer: {phone: 123}\n", "payer.peer_to_peer: must be a mapping with contact and/or window_days"),
    ("  peer_to_peer: {contact: ''}\n", "payer.peer_to_peer.contact"),
])
def test_a_bad_peer_to_peer_configuration_is_refused(tmp_path, block, words):
    with pytest.raises(RulesError) as exc:
        load_directory(rules_with(tmp_path, block))
    assert any(words in e for e in exc.value.errors), exc.value.errors


def test_a_clinical_denial_offers_the_configured_contact_and_window(tmp_path, settings, monkeypatch):
    rules = rules_with(tmp_path, f'  peer_to_peer:\n    contact: "{CONTACT}"\n    window_days: 5\n')
    monkeypatch.setenv("PRECERT_RULES_DIR", str(rules))
    srv = ThreadedServer(create_app(replace(settings, db_name=f"precert_p2p_{uuid.uuid4().hex[:8]}"))).start()
    monkeypatch.delenv("PRECERT_RULES_DIR")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            r = http.post("/fhir/Claim/$submit", json=pas_request("2.2.1", SURGICAL, provider_npi=npi()), headers=FHIR)
            assert r.status_code == 200, r.text
            number = case_number(r.json())
            token = http.post("/staff/login", json={"username": "director", "password": "director-sandbox"}).json()["token"]
            director = {"Authorization": f"Bearer {token}"}
            r = http.post(f"/review/api/cases/{number}/decision", headers=director,
                          json={"action": "deny", "reason": {"code": "medical-necessity"}, "rationale": RATIONALE, "credentials": "MD"})
            assert r.status_code == 200, r.text
            case = r.json()
            assert case["peer_to_peer"]["contact"] == CONTACT and case["peer_to_peer"]["window_days"] == 5
            response = http.get(f"/fhir/ClaimResponse/{case['claim_response_id']}", headers={"Accept": "application/fhir+json"}).json()
            notes = " ".join(n["text"] for n in response["processNote"])
            assert CONTACT in notes and "within 5 days of this decision" in notes
            page = http.get(f"/review/cases/{number}", headers=director).text
            assert "+1-555-0199" in page
    finally:
        srv.stop()


def test_the_x12_reason_codes_are_marked_as_placeholders(client):
    from tests.test_review_support import staff_headers

    reasons = client.get("/review/api/denial-reasons", headers=staff_headers(client)).json()
    assert reasons and all(r["x12"] and r["x12_placeholder"] is True for r in reasons)
