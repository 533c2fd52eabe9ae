"""Deployment: the CLI serves on the embedded database, data survives a restart, Ctrl-C stops the
child database too, and docker-compose.yml matches the settings the app reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from server.settings import PREFIX, Settings, Variables
from tests.support import ROOT, free_port

FHIR = {"Content-Type": "application/fhir+json"}


def start_cli(data_dir: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PRECERT_MONGODB_URI"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--data-dir", str(data_dir), *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("precert serve did not become ready")


def interrupt(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0


def secantus_children(data_dir: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "secantusd" in args and str(data_dir) in args:
            found.append(args)
    return found


def test_data_survives_restart_and_ctrl_c_stops_the_database(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    proc = start_cli(data_dir, port)
    try:
        base = f"http://127.0.0.1:{port}/fhir"
        assert httpx.get(f"{base}/Patient/pat-001").status_code == 200  # sandbox loaded
        created = httpx.post(f"{base}/Patient", json={"resourceType": "Patient", "gender": "other"}, headers=FHIR)
        assert created.status_code == 201
        pid = created.json()["id"]
        assert secantus_children(data_dir)
    finally:
        interrupt(proc)
    deadline = time.monotonic() + 10
    while secantus_children(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not secantus_children(data_dir), "the embedded database outlived precert serve"

    proc = start_cli(data_dir, port)
    try:
        read = httpx.get(f"{base}/Patient/{pid}")
        assert read.status_code == 200 and read.json()["gender"] == "other"
        # Sandbox loading is idempotent: nothing rewritten on the second start.
        assert httpx.get(f"{base}/Patient/pat-001").json()["meta"]["versionId"] == "1"
    finally:
        interrupt(proc)


def test_no_sandbox_option_loads_no_demo_data(tmp_path):
    port = free_port()
    proc = start_cli(tmp_path / "empty", port, "--no-sandbox")
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/fhir/Patient/pat-001").status_code == 404
    finally:
        interrupt(proc)


def test_compose_points_precert_at_a_replica_set_mongodb():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    mongo, precert = services["mongo"], services["precert"]
    assert "--replSet" in mongo["command"] and "healthcheck" in mongo
    assert precert["depends_on"]["mongo"]["condition"] == "service_healthy"
    env = precert["environment"]
    assert "replicaSet=" in env["PRECERT_MONGODB_URI"] and "mongo:27017" in env["PRECERT_MONGODB_URI"]
    # Every PRECERT_* variable compose sets is one the app reads, with a value it accepts.
    settings = Settings.from_env({k: str(v) for k, v in env.items()})
    assert settings.mongodb_uri == env["PRECERT_MONGODB_URI"]
    assert settings.max_body_bytes == int(env["PRECERT_MAX_BODY_BYTES"])
    assert settings.base_url == env["PRECERT_BASE_URL"]
    for name in env:
        assert name.startswith(PREFIX) and name[len(PREFIX):].lower() in Variables.model_fields, \
            f"{name} is set in compose but not read by the app"
    port = precert["ports"][0].split(":")[1]
    assert port in precert["command"]


def test_image_carries_every_folder_the_server_reads_at_run_time():
    """The image installs from its source tree, so folders read by path (the IG packages the
    validator compiles, the examples `precert example` sends) must be copied, and the install editable."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    for folder in ("server", "cds_hooks", "questionnaires", "capability", "fhir-packages", "examples"):
        assert folder in copied, f"Dockerfile does not copy {folder}/"
    assert any(line.startswith("RUN pip install") and " -e ." in line for line in lines)
