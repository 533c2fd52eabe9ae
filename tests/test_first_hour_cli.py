"""The ``precert`` command fails with one clear line and a non-zero exit, run as a user runs it."""

from __future__ import annotations

import fcntl
import socket
import subprocess
import sys

from tests.support import free_port


def precert(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_walkthrough_without_a_server_says_it_cannot_reach_it():
    port = free_port()
    r = precert("walkthrough", "--base-url", f"http://127.0.0.1:{port}")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"precert: cannot reach Precert at http://127.0.0.1:{port} (ConnectError); start it with `precert serve` or pass --base-url"]


def test_serve_on_a_port_in_use_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = precert("serve", "--port", str(port), "--data-dir", str(tmp_path))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"precert: port {port} on 127.0.0.1 is not available")


def test_serve_on_a_locked_data_directory_says_it_is_in_use(tmp_path):
    (tmp_path / "db").mkdir()
    with open(tmp_path / "db" / "WiredTiger.lock", "w+b") as held:  # what a running server holds
        fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = precert("serve", "--port", str(free_port()), "--data-dir", str(tmp_path))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "is in use by another Precert server" in r.stderr.strip().splitlines()[-1]


def test_a_bad_option_is_refused_with_exit_status_2():
    r = precert("serve", "--no-such-option")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == "precert: error: unrecognized arguments: --no-such-option"


def test_walkthrough_verbose_prints_each_request_and_response(server):
    r = precert("walkthrough", "--base-url", server.url, "--verbose")
    assert r.returncode == 0, r.stderr
    assert f"   > POST {server.url}/cds-services/order-sign-crd" in r.stdout
    assert "   < 200 application/json" in r.stdout
