"""One subscriber's dead endpoint delays no other subscriber's notifications."""

from __future__ import annotations

import socket

from tests.pas_support import FHIR, Receiver, notification_type, pas_subscription


def test_a_never_answering_endpoint_does_not_hold_up_another_subscribers_handshake(client, unique):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(8)
    dead.settimeout(15)
    live = Receiver().start()
    created = []
    try:
        r = client.post("/fhir/Subscription", json=pas_subscription(f"http://127.0.0.1:{dead.getsockname()[1]}/notify", f"dead-{unique}"), headers=FHIR)
        assert r.status_code == 201, r.text
        created.append(r.json()["id"])
        held, _ = dead.accept()  # the dead endpoint's handshake is in flight, and never answered
        assert held.recv(65536).startswith(b"POST ")

        r = client.post("/fhir/Subscription", json=pas_subscription(live.url, f"live-{unique}"), headers=FHIR)
        assert r.status_code == 201, r.text
        created.append(r.json()["id"])
        live_id = created[-1]
        got = live.wait_for(lambda b: notification_type(b) == "handshake" and live_id in str(b), timeout=9)
        assert len(got) == 1

        # The dead endpoint's request is still being held open: the live one did not wait for it.
        held.setblocking(False)
        try:
            still_open = held.recv(1) != b""
        except BlockingIOError:
            still_open = True
        assert still_open
        held.close()
    finally:
        for sid in created:
            client.delete(f"/fhir/Subscription/{sid}")
        live.stop()
        dead.close()
