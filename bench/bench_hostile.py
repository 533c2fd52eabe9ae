"""An unrelated read while hostile or heavy bodies arrive: the p95 of ``GET /fhir/Patient/{id}``
alone, while two clients send 2 MB array bodies that are refused (413), and while one client sends
large valid claims (2,000 lines) that are checked, beside the floor (a minimal FastAPI app answering
the same GET) measured in the same run. The tests only prove the read is answered, and rightly;
how long it takes is measured here.

Run: python bench/bench_hostile.py [--duration 6]
"""

from __future__ import annotations

import argparse
import threading
import time

import httpx
import orjson

from harness import (HEADER, Scenario, cleanup, load, load_average, machine, peak_rss_mb, row, start_floor,
                     start_precert, temp_data_dir, write_report)
from tests.pas_support import pas_request

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def worst_body() -> bytes:
    return orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": [0] * (1024 * 1024 - 20)})


def large_valid_claim(items: int = 2000) -> bytes:
    bundle = pas_request("2.2.1")
    claim = bundle["entry"][0]["resource"]
    claim["item"] = [{**claim["item"][0], "sequence": i + 1} for i in range(items)]
    return orjson.dumps(bundle)


class Background:
    """``clients`` threads posting ``body`` to ``path`` without pause; the statuses are counted."""

    def __init__(self, port: int, path: str, body: bytes, clients: int):
        self.stop = threading.Event()
        self.statuses: dict[int, int] = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(port, path, body), daemon=True) for _ in range(clients)]

    def _run(self, port: int, path: str, body: bytes) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            while not self.stop.is_set():
                status = c.post(path, content=body, headers=FHIR).status_code
                with self.lock:
                    self.statuses[status] = self.statuses.get(status, 0) + 1

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(150)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--connections", type=int, default=2)
    args = ap.parse_args()
    data = temp_data_dir()
    precert, pport = start_precert(data / "precert")
    floor, fport = start_floor()
    try:
        patient = httpx.post(f"http://127.0.0.1:{pport}/fhir/Patient", headers=FHIR, timeout=30,
                             content=orjson.dumps({"resourceType": "Patient", "name": [{"family": "Quick"}]})).json()
        read = Scenario("GET /fhir/Patient/{id}", "GET", f"/fhir/Patient/{patient['id']}", headers=["Accept: application/fhir+json"])
        run = lambda port: load(port, read, connections=args.connections, duration=args.duration)  # noqa: E731
        f = run(fport)
        alone = run(pport)
        with Background(pport, "/fhir/Claim/$submit", worst_body(), clients=2) as refused:
            hostile = run(pport)
        with Background(pport, "/fhir/Claim/$submit", large_valid_claim(), clients=1) as checked:
            heavy = run(pport)
        lines = ["# An unrelated read while hostile or heavy bodies arrive", "",
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; {load_average()}.", "",
                 f"Closed loop, {args.connections} connections reading one Patient for {args.duration:.0f} s each; one "
                 "uvicorn worker, embedded database.", "", HEADER,
                 row("floor (same GET)", f, rss=peak_rss_mb(floor.pid)),
                 row("Precert read, alone", alone, f),
                 row("Precert read, 2 clients sending 2 MB arrays (refused)", hostile, f),
                 row("Precert read, 1 client sending 2,000-line claims (checked)", heavy, f, peak_rss_mb(precert.pid)), "",
                 f"Refused bodies: {refused.statuses}; checked claims: {checked.statuses}.",
                 f"p95 of the read: alone {alone['p95_ms']:.1f} ms, beside refused bodies {hostile['p95_ms']:.1f} ms, "
                 f"beside large valid claims {heavy['p95_ms']:.1f} ms; floor {f['p95_ms']:.1f} ms."]
    finally:
        precert.stop()
        floor.stop()
        cleanup(data)
    print("\n".join(lines))
    print(f"\nwritten to {write_report('hostile', lines)}")


if __name__ == "__main__":
    main()
