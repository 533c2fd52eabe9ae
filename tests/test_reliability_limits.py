"""Every input is bounded before it costs: body size per route, stalled bodies, JSON depth and
width, and the size of the OperationOutcome that answers a body full of mistakes.

How long an unrelated read takes meanwhile is measured in ``bench/bench_hostile.py``; here, only
that it is answered, and rightly, while the hostile or heavy bodies are refused or checked."""

from __future__ import annotations

import concurrent.futures
import socket
import threading

import httpx
import orjson
import pytest

from server.app import create_app
from tests.pas_support import FHIR, pas_request
from tests.support import ThreadedServer


def test_a_body_declared_over_the_route_limit_is_refused_with_413_before_it_is_read(client):
    # /auth/token takes small forms only; a declared 1 MB body is refused from its header.
    with socket.create_connection(("127.0.0.1", client.base_url.port), timeout=10) as sock:
        sock.sendall(
            b"POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 1048576\r\n\r\n"
        )
        head = sock.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head
    assert "application/problem+json" in head


def test_a_fhir_body_over_the_limit_is_refused_with_an_operation_outcome(client):
    r = client.post("/fhir/Patient", content=b"[" + b"0," * (6 * 1024 * 1024) + b"0]", headers=FHIR)
    assert r.status_code == 413
    assert r.json()["resourceType"] == "OperationOutcome"


def test_json_nested_too_deep_is_refused_with_413(client):
    deep = '{"resourceType":"Patient","extension":' + "[" * 200 + "]" * 200 + "}"
    r = client.post("/fhir/Patient", content=deep, headers=FHIR)
    assert r.status_code == 413
    assert "nesting exceeds the limit of 64 levels" in r.json()["issue"][0]["diagnostics"]


def test_an_array_longer_than_the_limit_is_refused_with_413(client):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [0] * 20_000}
    r = client.post("/fhir/Claim/$submit", content=orjson.dumps(bundle), headers=FHIR)
    assert r.status_code == 413
    assert "array exceeds the limit of 10000 elements" in r.json()["issue"][0]["diagnostics"]


def test_a_body_with_thousands_of_mistakes_gets_a_capped_outcome_that_says_so(client):
    patient = {"resourceType": "Patient", "name": [{"family": 7} for _ in range(5000)]}
    r = client.post("/fhir/Patient", json=patient, headers=FHIR)
    assert r.status_code == 400
    issues = r.json()["issue"]
    assert len(issues) <= 101
    assert "not listed" in issues[-1]["diagnostics"]
    assert len(r.content) < 100_000


def test_an_unrelated_read_is_not_held_up_while_worst_case_bodies_are_refused(client):
    patient = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Quick"}]}, headers=FHIR).json()
    worst = orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": [0] * (1024 * 1024 - 20)})
    assert len(worst) > 2 * 1024 * 1024
    stop = threading.Event()

    def hammer() -> int:
        sent = 0
        with httpx.Client(base_url=str(client.base_url), timeout=60) as c:
            while not stop.is_set():
                assert c.post("/fhir/Claim/$submit", content=worst, headers=FHIR).status_code == 413
                sent += 1
        return sent

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        attackers = [pool.submit(hammer) for _ in range(2)]
        with httpx.Client(base_url=str(client.base_url), timeout=60) as c:
            for _ in range(40):
                r = c.get(f"/fhir/Patient/{patient['id']}")
                assert r.status_code == 200 and r.json()["id"] == patient["id"]
        stop.set()
        assert sum(a.result() for a in attackers) > 0


@pytest.fixture(scope="module")
def impatient(settings):
    srv = ThreadedServer(create_app(settings.with_overrides(body_read_timeout=0.5, load_sandbox=False))).start()
    yield srv
    srv.stop()


def test_a_stalled_body_is_refused_with_408_and_the_connection_closed(impatient):
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=10) as sock:
        sock.sendall(b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\nContent-Length: 100\r\n\r\n{\"res")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.decode("latin-1")
    assert head.startswith("HTTP/1.1 408"), head
    assert "OperationOutcome" in head


def test_a_valid_submission_still_passes_the_guard(client):
    from tests.pas_support import submit

    assert submit(client, pas_request("2.2.1")).status_code == 200


def _large_valid_submission(items: int = 2000) -> bytes:
    bundle = pas_request("2.2.1")
    claim = bundle["entry"][0]["resource"]
    template = claim["item"][0]
    claim["item"] = [{**template, "sequence": i + 1} for i in range(items)]
    return orjson.dumps(bundle)


def test_an_unrelated_read_is_not_held_up_while_a_large_valid_claim_is_checked(client):
    patient = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Quick"}]}, headers=FHIR).json()
    big = _large_valid_submission()
    stop = threading.Event()

    def submitter() -> int:
        sent = 0
        with httpx.Client(base_url=str(client.base_url), timeout=120) as c:
            while not stop.is_set():
                assert c.post("/fhir/Claim/$submit", content=big, headers=FHIR).status_code < 500
                sent += 1
        return sent

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        worker = pool.submit(submitter)
        with httpx.Client(base_url=str(client.base_url), timeout=60) as c:
            for _ in range(40):
                r = c.get(f"/fhir/Patient/{patient['id']}")
                assert r.status_code == 200 and r.json()["id"] == patient["id"]
        stop.set()
        assert worker.result() > 0
