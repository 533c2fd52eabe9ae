"""PAS benchmark: Claim/$submit with the PAS Referral example (auto-approved path, a fresh Bundle
identifier per request) against the real server on durable embedded storage, from a separate
load-generating process, beside the floor (same body) measured in the same run.

Run: python bench/bench_pas.py [--duration 8]
"""

from __future__ import annotations

import argparse
import json
import time

from harness import HEADER, Scenario, cleanup, load, machine, peak_rss_mb, row, start_floor, start_precert, temp_data_dir, write_report
from tests.support import example


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rate", type=float, default=50)
    args = ap.parse_args()

    bundle = example("hl7.fhir.us.davinci-pas-2.2.1", "Bundle-ReferralAuthorizationBundleExample.json")
    bundle["identifier"] = {"system": "urn:bench:bundle", "value": "{{uuid}}"}
    body = json.dumps(bundle).encode()
    sc = Scenario("POST /fhir/Claim/$submit (Referral example, auto-approved)", "POST", "/fhir/Claim/$submit", body)
    data = temp_data_dir()
    precert, pport = start_precert(data)
    floor, fport = start_floor()
    lines = ["# PAS benchmark: Claim/$submit", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; one uvicorn worker each; Precert on the "
             "embedded SecantusDB on disk (each request: validation, rules, one transaction writing the case, Claim and "
             "ClaimResponse with their history records); request body {len} bytes.".replace("{len}", str(len(body))), "",
             f"Open loop at {args.rate:.0f} requests/s for {args.duration:.0f} s (latency counted from the scheduled start):", "", HEADER]
    try:
        f_open = load(fport, sc, rate=args.rate, duration=args.duration, connections=args.connections)
        p_open = load(pport, sc, rate=args.rate, duration=args.duration, connections=args.connections)
        lines.append(row(f"floor @ {args.rate:.0f}/s", f_open, rss=peak_rss_mb(floor.pid)))
        lines.append(row(f"Precert @ {args.rate:.0f}/s", p_open, f_open, peak_rss_mb(precert.pid)))
        lines += ["", f"Closed loop, {args.connections} connections, {args.duration:.0f} s after 1 s warm-up (maximum throughput):", "", HEADER]
        f = load(fport, sc, connections=args.connections, duration=args.duration)
        p = load(pport, sc, connections=args.connections, duration=args.duration)
        lines.append(row("floor", f, rss=peak_rss_mb(floor.pid)))
        lines.append(row("Precert", p, f, peak_rss_mb(precert.pid)))
        lines += ["", f"Targets: p95 at {args.rate:.0f}/s under 50 ms (measured {p_open['p95_ms']:.1f} ms); "
                  f"maximum throughput at least 35% of the floor's (measured {100 * p['throughput'] / f['throughput']:.1f}%)."]
    finally:
        precert.stop()
        floor.stop()
        cleanup(data)
    print("\n".join(lines))
    print(f"\nwritten to {write_report('pas', lines)}")


if __name__ == "__main__":
    main()
