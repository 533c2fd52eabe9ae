"""A failing database and a crashed server: the real server as its own process, its embedded
database frozen (SIGSTOP) and killed (SIGKILL) under load, and a restart right after a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.pas_support import FHIR
from tests.support import ROOT, free_port

FIGURES: dict[str, float] = {}


def serve(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PRECERT_MONGODB_URI"}
    out = open(log, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--data-dir", str(data_dir), "--no-sandbox"],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    out.close()
    return proc


def wait_ready(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"precert serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"precert serve did not become ready:\n{log.read_text()[-3000:]}")


def db_pid(data_dir: Path) -> int:
    return json.loads((data_dir / "db" / "precert-embedded-db.json").read_text())["db_pid"]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Load:
    """Clients reading and writing without pause; every answer's status is kept."""

    def __init__(self, base: str, patient_id: str, clients: int = 3):
        self.base, self.patient_id = base, patient_id
        self.statuses: list[tuple[float, int, float]] = []  # (sent at, status, seconds taken)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, i: int) -> None:
        # A request the server holds past its database timeout (5 s) and then some is one a client
        # gives up on: at 8 s it counts as dropped (-1), which no test accepts.
        with httpx.Client(base_url=self.base, timeout=8) as c:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    if i % 2:
                        r = c.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Load"}]}, headers=FHIR)
                    else:
                        r = c.get(f"/fhir/Patient/{self.patient_id}")
                    status = r.status_code
                    if status == 503:
                        assert r.headers.get("retry-after"), "a 503 says when to retry"
                        assert r.json()["resourceType"] == "OperationOutcome"
                except httpx.HTTPError:
                    status = -1  # a dropped connection, or a request held past the client's 8 s
                self.statuses.append((sent, status, time.monotonic() - sent))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(40)

    def answered(self, n: int, after: float = 0.0, timeout: float = 30) -> None:
        """Wait (polling, with a deadline) until ``n`` requests sent after ``after`` have answered."""
        deadline = time.monotonic() + timeout
        while len(self.since(after)) < n:
            assert time.monotonic() < deadline, f"the load got {len(self.since(after))} answers in {timeout} s"
            time.sleep(0.02)

    def since(self, moment: float) -> list[tuple[float, int, float]]:
        return [s for s in self.statuses if s[0] >= moment]


def first_503_after(load: Load, moment: float, timeout: float) -> float:
    """Seconds from ``moment`` to the first 503 answered after it, whenever its request was sent: a
    request in flight when the database froze is the one a client sees fail first (the requests sent
    after it wait behind it, a database timeout later)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answered = [sent + took - moment for sent, status, took in list(load.statuses)
                    if status == 503 and sent + took >= moment]
        if answered:
            return min(answered)
        time.sleep(0.05)
    raise AssertionError(f"no 503 answered within {timeout} s; saw {sorted({s for _, s, _ in load.since(moment)})}")


def ready_status_within(port: int, want: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).status_code == want:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"/health/ready did not answer {want} within {timeout} s")


@pytest.fixture
def running(tmp_path):
    data_dir, port, log = tmp_path / "data", free_port(), tmp_path / "serve.log"
    proc = serve(data_dir, port, log)
    wait_ready(port, proc, log)
    yield data_dir, port, log, proc
    try:
        os.kill(db_pid(data_dir), signal.SIGCONT)
    except (OSError, ValueError):
        pass
    stop(proc)


def test_a_frozen_database_answers_503_quickly_and_readiness_follows_it(running):
    data_dir, port, log, proc = running
    base = f"http://127.0.0.1:{port}"
    pid = httpx.post(f"{base}/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR).json()["id"]
    with Load(base, pid) as load:
        load.answered(5)  # load established before the fault
        frozen = time.monotonic()
        os.kill(db_pid(data_dir), signal.SIGSTOP)
        try:
            FIGURES["frozen: first 503"] = first_503_after(load, frozen, timeout=10)
            FIGURES["frozen: ready 503"] = ready_status_within(port, 503, timeout=5)
            assert httpx.get(f"{base}/health/live", timeout=5).status_code == 200
        finally:
            os.kill(db_pid(data_dir), signal.SIGCONT)
        FIGURES["thawed: ready 200"] = ready_status_within(port, 200, timeout=15)
    during = load.since(frozen)
    assert during and all(status in (200, 201, 503) for _, status, _ in during), sorted({s for _, s, _ in during})
    assert httpx.get(f"{base}/fhir/Patient/{pid}", timeout=10).status_code == 200
    print(FIGURES)


def test_a_killed_database_answers_503_is_logged_and_is_restarted(running):
    data_dir, port, log, proc = running
    base = f"http://127.0.0.1:{port}"
    pid = httpx.post(f"{base}/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR).json()["id"]
    first_db = db_pid(data_dir)
    with Load(base, pid) as load:
        load.answered(5)
        killed = time.monotonic()
        os.kill(first_db, signal.SIGKILL)
        FIGURES["killed: back to ready"] = ready_status_within(port, 200, timeout=30)
        load.answered(5, after=time.monotonic())  # some load served by the restarted database
    during = load.since(killed)
    assert during and all(status in (200, 201, 503) for _, status, _ in during), sorted({s for _, s, _ in during})
    assert proc.poll() is None, "the server runs on with its database restarted"
    assert db_pid(data_dir) != first_db
    text = log.read_text()
    assert "the embedded database (pid %d) died" % first_db in text
    assert httpx.get(f"{base}/fhir/Patient/{pid}", timeout=10).status_code == 200, "what was acknowledged is still there"
    print(FIGURES)


def test_serve_comes_up_right_after_its_process_group_is_killed(tmp_path):
    data_dir, port, log = tmp_path / "data", free_port(), tmp_path / "serve.log"
    proc = serve(data_dir, port, log)
    wait_ready(port, proc, log)
    pid = httpx.post(f"http://127.0.0.1:{port}/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR).json()["id"]
    orphan = db_pid(data_dir)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert Path(f"/proc/{orphan}").exists(), "the database lives in its own session and outlives the kill"
    again = serve(data_dir, port, log)
    try:
        FIGURES["restart after SIGKILL: ready"] = wait_ready(port, again, log)
        assert httpx.get(f"http://127.0.0.1:{port}/fhir/Patient/{pid}", timeout=10).status_code == 200
        assert not Path(f"/proc/{orphan}").exists() or b"secantusd" not in Path(f"/proc/{orphan}/cmdline").read_bytes()
    finally:
        stop(again)
    print(FIGURES)


def test_a_database_of_another_live_server_is_never_ended(tmp_path):
    from server.embedded_db import EmbeddedDatabase

    data_dir = tmp_path / "data"
    port, log = free_port(), tmp_path / "serve.log"
    proc = serve(data_dir, port, log)
    try:
        wait_ready(port, proc, log)
        theirs = db_pid(data_dir)
        with pytest.raises(RuntimeError, match="in use by Precert process"):
            EmbeddedDatabase(data_dir / "db").start()
        assert Path(f"/proc/{theirs}").exists()
        assert httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).status_code == 200
    finally:
        stop(proc)


def test_acknowledged_writes_wait_for_the_journal_on_a_majority(server):
    storage = server.app.state.precert.storage
    assert storage.client.write_concern.document == {"w": "majority", "j": True}
