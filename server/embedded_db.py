"""The embedded database: SecantusDB, a MongoDB wire-protocol server, run as a child process.

SecantusDB is GPL-2.0, so it is run as a separate program and never imported. It is started in its
own session so that a Ctrl-C aimed at ``precert serve`` does not reach it before Precert has
finished its own shutdown; Precert then stops it with SIGTERM and waits.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("precert.embedded_db")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _command(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    raise RuntimeError(
        f"the embedded database program '{name}' was not found; install Precert with pip "
        "(it depends on secantusdb) or set PRECERT_MONGODB_URI to a MongoDB server"
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    os.setsid()
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EmbeddedDatabase:
    """A SecantusDB server on loopback, on a data directory (or ``:memory:``)."""

    def __init__(self, storage_path: str | Path, port: int | None = None, command: str = "secantusd-py"):
        self.storage_path = str(storage_path)
        self.port = port or free_port()
        self.command = command
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self, timeout: float = 30.0) -> None:
        if self.storage_path != ":memory:":
            Path(self.storage_path).mkdir(parents=True, exist_ok=True)
            self.log_path = Path(self.storage_path) / "secantusd.log"
            out = open(self.log_path, "ab")
        else:
            out = subprocess.DEVNULL
        args = [_command(self.command), "--host", "127.0.0.1", "--port", str(self.port), "--storage-path", self.storage_path]
        self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedded database exited at start (code {self.process.returncode}); see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    log.info("embedded database listening on 127.0.0.1:%s (%s)", self.port, self.storage_path)
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the embedded database did not start listening in time")

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded database did not stop in %.0fs; killing it", timeout)
            proc.kill()
            proc.wait()
