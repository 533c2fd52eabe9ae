"""Test support: the official Da Vinci examples, and a real Precert server on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import tarfile
import threading
import time
from functools import lru_cache
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "fhir-packages"
CRD_FIXTURES = ROOT / "tests" / "fixtures" / "crd"


@lru_cache(maxsize=None)
def package_examples(package: str) -> dict[str, dict]:
    """The ``package/example/*.json`` resources of one IG package, by file name."""
    out: dict[str, dict] = {}
    with tarfile.open(PACKAGES / f"{package}.tgz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("package/example/") and member.name.endswith(".json"):
                out[member.name.rsplit("/", 1)[1]] = json.load(tar.extractfile(member))
    return out


def example(package: str, name: str) -> dict:
    return json.loads(json.dumps(package_examples(package)[name]))


ALL_PACKAGES = (
    "hl7.fhir.us.davinci-crd-2.0.1",
    "hl7.fhir.us.davinci-dtr-2.0.1",
    "hl7.fhir.us.davinci-pas-2.0.1",
    "hl7.fhir.us.davinci-pas-2.2.1",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadedServer:
    """A uvicorn server for the app in a background thread, listening on loopback."""

    def __init__(self, app, port: int | None = None):
        self.app = app
        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # The server's own event loop, kept so tests can run coroutines on it.
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> "ThreadedServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server failed to start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
