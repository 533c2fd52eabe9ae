"""CRD benchmark: the order-sign hook with the IG's CRDServiceRequest.json (two draft orders, full
prefetch, CRD 2.2) against the real server on durable embedded storage, from a separate
load-generating process, beside the floor (same body) measured in the same run.

Each call: JSON parsing and CDS Hooks/CRD validation, the prefetch pool, one member lookup in the
payer's records per Coverage, the rules for both orders, coverage-information and cards, and one
audit record written to MongoDB before the answer.

Run: python bench/bench_crd.py [--duration 8] [--rate 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from harness import HEADER, Scenario, cleanup, load, machine, peak_rss_mb, row, start_floor, start_precert, temp_data_dir, write_report
from tests.support import CRD_FIXTURES


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    request = json.loads((CRD_FIXTURES / "CRDServiceRequest.json").read_text())
    request["hookInstance"] = "{{uuid}}"
    body = json.dumps(request).encode()
    sc = Scenario("POST /cds-services/order-sign-crd (CRDServiceRequest.json)", "POST", "/cds-services/order-sign-crd", body,
                  ["Content-Type: application/json"])
    data = temp_data_dir()
    precert, pport = start_precert(data)
    floor, fport = start_floor()
    lines = ["# CRD benchmark: order-sign", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; one uvicorn worker each; Precert on the "
             f"embedded SecantusDB on disk; request body {len(body)} bytes (the IG's CRDServiceRequest.json: two draft "
             "orders, full prefetch, CRD 2.2).", "",
             f"Open loop at {args.rate:.0f} requests/s for {args.duration:.0f} s (latency counted from the scheduled start):", "", HEADER]
    try:
        # Warm both servers (imports, first rules load, connection pools) before measuring.
        load(fport, sc, connections=2, duration=1)
        load(pport, sc, connections=2, duration=1)
        opens, closeds = [], []
        for i in range(args.rounds):
            f_open = load(fport, sc, rate=args.rate, duration=args.duration, connections=args.connections)
            p_open = load(pport, sc, rate=args.rate, duration=args.duration, connections=args.connections)
            lines.append(row(f"round {i + 1}: floor @ {args.rate:.0f}/s", f_open, rss=peak_rss_mb(floor.pid)))
            lines.append(row(f"round {i + 1}: Precert @ {args.rate:.0f}/s", p_open, f_open, peak_rss_mb(precert.pid)))
            opens.append(p_open)
        lines += ["", f"Closed loop, {args.connections} connections, {args.duration:.0f} s each (maximum throughput):", "", HEADER]
        for i in range(args.rounds):
            f = load(fport, sc, connections=args.connections, duration=args.duration)
            p = load(pport, sc, connections=args.connections, duration=args.duration)
            lines.append(row(f"round {i + 1}: floor", f, rss=peak_rss_mb(floor.pid)))
            lines.append(row(f"round {i + 1}: Precert", p, f, peak_rss_mb(precert.pid)))
            closeds.append(100 * p["throughput"] / f["throughput"] if f["throughput"] else 0)
        p95 = statistics.median(o["p95_ms"] for o in opens)
        ratio = statistics.median(closeds)
        lines += ["", f"Targets (median of {args.rounds} rounds): p95 at {args.rate:.0f}/s under 20 ms (measured {p95:.1f} ms: "
                  f"{'met' if p95 < 20 else 'missed'}); maximum throughput at least 50% of the floor's "
                  f"(measured {ratio:.1f}%: {'met' if ratio >= 50 else 'missed'}). Load average during the run: "
                  f"{os.getloadavg()[0]:.1f} (the machine is shared; see docs/crd.md for the profile)."]
    finally:
        precert.stop()
        floor.stop()
        cleanup(data)
    print("\n".join(lines))
    print(f"\nwritten to {write_report('crd', lines)}")


if __name__ == "__main__":
    main()
