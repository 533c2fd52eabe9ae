"""The benchmarks cannot rot unnoticed: ``bench/run --quick --dry-run`` imports every benchmark
module and builds every request it sends, without starting a server or measuring anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_run_builds_every_scenario_without_running_one():
    out = subprocess.run(["sh", str(ROOT / "bench" / "run"), "--quick", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    names = [line.split(":", 1)[0] for line in out.stdout.splitlines() if not line.startswith("plan:")]
    assert names == ["crd", "dtr", "get_patient", "post_claim", "submit"]
    assert "sizes=[0, 2000]" in out.stdout


def test_every_request_body_is_json_with_fresh_identifiers_per_request():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import suite
    finally:
        sys.path.remove(str(ROOT / "bench"))
    for name, sc in suite.SCENARIOS.items():
        if sc.body:
            json.loads(sc.body)
            assert b"{{uuid}}" in sc.body, name


def test_the_seeder_writes_whole_members_with_distinct_ids():
    from bench.seed import resources

    items = list(resources(12, "t"))
    assert [t for t, _, _ in items[:5]] == ["Patient", "Coverage", "ServiceRequest", "Claim", "ClaimResponse"]
    assert len({(t, i) for t, _, i in items}) == 12
