"""Nothing is lost across a restart: a decision whose notification could not be delivered before the
server stopped is delivered after it starts again, and acknowledged submissions are still there."""

from __future__ import annotations

import httpx
import orjson

from tests.pas_support import FHIR, Receiver, actions, claim_response, notification_type, pas_request, pas_subscription
from tests.support import free_port
from tests.test_deployment import interrupt, start_cli


def test_undelivered_notification_is_sent_after_a_restart(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    receiver = Receiver()  # the EHR's endpoint is down for now
    base = f"http://127.0.0.1:{port}"
    proc = start_cli(data_dir, port)
    try:
        with httpx.Client(base_url=base, timeout=30) as c:
            org = "1987654321"
            assert c.post("/fhir/Subscription", json=pas_subscription(receiver.url, org), headers=FHIR).status_code == 201
            bundle = pas_request("2.2.1", "Bundle-SurgicalRequestBundleExample.json", provider_npi=org)
            body = c.post("/fhir/Claim/$submit", content=orjson.dumps(bundle), headers=FHIR).json()
            assert actions(body) == {1: "A4"}
            cr_id = claim_response(body)["id"]
            number = next(e for e in claim_response(body)["item"][0]["extension"] if e["url"].endswith("administrationReferenceNumber"))["valueString"].rsplit("-", 1)[0]
            token = c.post("/staff/login", json={"username": "reviewer", "password": "reviewer-sandbox"}).json()["token"]
            r = c.post(f"/review/api/cases/{number}/decision", json={"action": "approve"}, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
    finally:
        interrupt(proc)

    receiver.start()
    proc = start_cli(data_dir, port)
    try:
        events = receiver.wait_for(lambda b: notification_type(b) == "event-notification" and cr_id in orjson.dumps(b).decode(), timeout=30)
        assert len(events) == 1
        with httpx.Client(base_url=base, timeout=30) as c:
            # The acknowledged submission and its decision are there after the restart.
            assert c.get(f"/fhir/ClaimResponse/{cr_id}").json()["meta"]["versionId"] == "2"
            replay = c.post("/fhir/Claim/$submit", content=orjson.dumps(bundle), headers=FHIR)
            assert claim_response(replay.json())["id"] == cr_id
    finally:
        interrupt(proc)
        receiver.stop()
