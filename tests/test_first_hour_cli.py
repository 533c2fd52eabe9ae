"""The ``precert`` command fails with one clear line and a non-zero exit, run as a user runs it."""

from __future__ import annotations

import fcntl
import socket
import subprocess
import sys
import time

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


def _self_signed(tmp_path):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_serve_speaks_https_with_the_given_certificate(tmp_path, mongodb_uri):
    import httpx

    cert_file, key_file = _self_signed(tmp_path)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--mongodb-uri", mongodb_uri,
                             "--tls-cert", str(cert_file), "--tls-key", str(key_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = proc.stdout.readline()
        assert banner.startswith("Precert ") and f"https://127.0.0.1:{port}/" in banner
        seen = []
        for line in proc.stdout:  # listening once uvicorn says so
            seen.append(line)
            if "Uvicorn running on" in line:
                break
        assert "Uvicorn running on" in seen[-1], "".join(seen)
        deadline = time.monotonic() + 60  # the supervisor listens first; its workers start after
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/health/live", verify=str(cert_file), timeout=30)
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_serve_refuses_a_certificate_without_its_key(tmp_path):
    cert_file, _ = _self_signed(tmp_path)
    r = precert("serve", "--port", str(free_port()), "--tls-cert", str(cert_file))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["precert: --tls-cert and --tls-key go together"]
