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
import time

from harness import HEADER, Scenario, cleanup, load, machine, peak_rss_mb, row, start_floor, start_precert, temp_data_dir, write_report
from tests.support import CRD_FIXTURES


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rate", type=float, default=100)
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
        f_open = load(fport, sc, rate=args.rate, duration=args.duration, connections=args.connections)
        p_open = load(pport, sc, rate=args.rate, duration=args.duration, connections=args.connections)
        lines.append(row(f"floor @ {args.rate:.0f}/s", f_open, rss=peak_rss_mb(floor.pid)))
        lines.append(row(f"Precert @ {args.rate:.0f}/s", p_open, f_open, peak_rss_mb(precert.pid)))
        lines += ["", f"Closed loop, {args.connections} connections, {args.duration:.0f} s after 1 s warm-up (maximum throughput):", "", HEADER]
        f = load(fport, sc, connections=args.connections, duration=args.duration)
        p = load(pport, sc, connections=args.connections, duration=args.duration)
        lines.append(row("floor", f, rss=peak_rss_mb(floor.pid)))
        lines.append(row("Precert", p, f, peak_rss_mb(precert.pid)))
        ok_p95 = p_open["p95_ms"] < 20
        ratio = 100 * p["throughput"] / f["throughput"] if f["throughput"] else 0
        lines += ["", f"Targets: p95 at {args.rate:.0f}/s under 20 ms (measured {p_open['p95_ms']:.1f} ms: "
                  f"{'met' if ok_p95 else 'missed'}); maximum throughput at least 50% of the floor's "
                  f"(measured {ratio:.1f}%: {'met' if ratio >= 50 else 'missed'})."]
    finally:
        precert.stop()
        floor.stop()
        cleanup(data)
    print("\n".join(lines))
    print(f"\nwritten to {write_report('crd', lines)}")


if __name__ == "__main__":
    main()
