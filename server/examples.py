"""``precert example``: the request bodies in ``examples/``, each sent as its one-line ``curl`` would
send it, so a developer sees each outcome of the sandbox without writing a request.

``examples/index.json`` lists them in the order to run them (an update names the request it updates
in ``after``); ``tests/test_examples.py`` sends every one to a real server and checks the outcome
``examples/README.md`` promises, so the examples stay true as the rules and profiles change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEFAULT_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class Example:
    name: str
    path: str
    content_type: str
    outcome: str
    about: str
    after: str | None = None

    @property
    def file(self) -> Path:
        return EXAMPLES / f"{self.name}.json"

    def curl(self, base_url: str = DEFAULT_URL) -> str:
        """The one-line ``curl`` that sends it (run from the repository's root)."""
        return (f"curl -s -X POST '{base_url.rstrip('/')}{self.path}' -H 'Content-Type: {self.content_type}' "
                f"--data-binary @examples/{self.name}.json")


def catalog() -> list[Example]:
    return [Example(**item) for item in json.loads((EXAMPLES / "index.json").read_text(encoding="utf-8"))]


def find(name: str) -> Example | None:
    return next((e for e in catalog() if e.name == name), None)


def send(example: Example, base_url: str = DEFAULT_URL, timeout: float = 60, headers: dict | None = None) -> httpx.Response:
    """POST the example's body as it is on disk; raises httpx.TransportError when nothing answers."""
    with httpx.Client(base_url=base_url, timeout=timeout) as client:
        return client.post(example.path, content=example.file.read_bytes(),
                           headers={"Content-Type": example.content_type, "Accept": "application/json", **(headers or {})})


def listing() -> str:
    rows = [f"{e.name:<28} {e.about}" + (f" (after {e.after})" if e.after else "") for e in catalog()]
    return "\n".join(["Examples (precert example NAME [--url URL]):", *rows])
