"""Payer rules: the time of one evaluation (the sandbox rules, an imaging request with coverage,
patient and diagnosis), in process. The rules contract is under 1 ms per evaluation.

Run: python bench/bench_rules.py [--n 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.rules.loader import load_directory  # noqa: E402
from server.rules.model import EvaluationInput  # noqa: E402
from server.sandbox import sandbox_resources  # noqa: E402

CPT = "http://www.ama-assn.org/go/cpt"


def sandbox(rtype: str, rid: str) -> dict:
    return next(r for r in sandbox_resources() if r["resourceType"] == rtype and r["id"] == rid)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    rules = load_directory(ROOT / "server" / "rules" / "sandbox")
    inp = EvaluationInput(codes=[{"system": CPT, "code": "72148"}], coverage=sandbox("Coverage", "cov-001"),
                          patient=sandbox("Patient", "pat-001"), diagnoses=[{"code": "M54.5"}], provider_ids=["1456789019"])
    rules.evaluate(inp)
    took = []
    for _ in range(args.n):
        start = time.perf_counter()
        rules.evaluate(inp)
        took.append(time.perf_counter() - start)
    q = statistics.quantiles(took, n=100)
    print(f"rules.evaluate x{args.n}: median {statistics.median(took) * 1e6:.0f} us, p95 {q[94] * 1e6:.0f} us, "
          f"p99 {q[98] * 1e6:.0f} us (contract: under 1 ms)")


if __name__ == "__main__":
    main()
