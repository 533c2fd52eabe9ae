"""Benchmark harness: start real server processes, drive them from a separate load-generating
process, and report each scenario beside the floor measured in the same run (DESIGN.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from tests.support import free_port  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


class Process:
    def __init__(self, args: list[str], ready_url: str, env: dict | None = None):
        self.log = tempfile.NamedTemporaryFile(prefix="precert-bench-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(Path(self.log.name).read_text()[-2000:])
            try:
                if httpx.get(ready_url, timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{args} did not become ready")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_precert(data_dir: Path, extra_env: dict | None = None, workers: int = 1, mongodb_uri: str = "") -> tuple[Process, int]:
    """Precert on its own embedded database in ``data_dir``, or on ``mongodb_uri`` when given."""
    port = free_port()
    proc = Process([sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning", "--workers", str(workers)],
                   f"http://127.0.0.1:{port}/health/ready", {"PRECERT_MONGODB_URI": mongodb_uri, **(extra_env or {})})
    return proc, port


def start_database(data_dir: Path):
    """One embedded database (SecantusDB on disk, as ``precert serve`` starts it) that Precert and
    the durable-write floor share, so both write to the same server with the same write concern."""
    from server.embedded_db import EmbeddedDatabase

    db = EmbeddedDatabase(data_dir / "db")
    db.start()
    return db


def start_durable_floor(mongodb_uri: str) -> tuple[Process, int]:
    port = free_port()
    proc = Process([sys.executable, "-m", "uvicorn", "bench.durable_floor_app:app", "--port", str(port), "--log-level", "warning", "--no-access-log"],
                   f"http://127.0.0.1:{port}/ready", {"BENCH_FLOOR_MONGODB_URI": mongodb_uri})
    return proc, port


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def start_floor() -> tuple[Process, int]:
    port = free_port()
    proc = Process([sys.executable, "-m", "uvicorn", "bench.floor_app:app", "--port", str(port), "--log-level", "warning", "--no-access-log"],
                   f"http://127.0.0.1:{port}/ready")
    return proc, port


@dataclass
class Scenario:
    name: str
    method: str
    path: str
    body: bytes | None = None
    headers: list[str] = field(default_factory=list)


def load(port: int, sc: Scenario, *, connections: int = 16, duration: float = 8, rate: float | None = None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        if sc.body:
            f.write(sc.body)
        body_file = f.name
    args = [sys.executable, str(BENCH / "loadgen.py"), "--port", str(port), "--method", sc.method, "--path", sc.path,
            "--connections", str(connections), "--duration", str(duration)]
    if sc.body:
        args += ["--body-file", body_file]
    for h in sc.headers:
        args += ["--header", h]
    if rate:
        args += ["--rate", str(rate)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration * 4 + 60)
    os.unlink(body_file)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(label: str, r: dict, floor: dict | None = None, rss: float | None = None) -> str:
    ratio = f"{r['throughput'] / floor['throughput']:.2f}" if floor and floor["throughput"] else "-"
    return (f"| {label} | {r['throughput']:.0f} | {ratio} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{rss if rss is not None else '-'} | {r['statuses']} |")


HEADER = ("| scenario | req/s | ratio to floor | p50 ms | p95 ms | p99 ms | peak RSS MB | statuses |\n"
          "|---|---|---|---|---|---|---|---|")


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}"


def write_report(name: str, lines: list[str]) -> Path:
    out = BENCH / "results" / f"{name}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def temp_data_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="precert-bench-"))
    return d


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
