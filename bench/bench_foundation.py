"""Foundation benchmark: GET /fhir/Patient/{id} and POST /fhir/Claim (the PAS Referral example
Claim) against the real server on the embedded database, each beside the floor.

Run: python bench/bench_foundation.py [--duration 8]
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
    args = ap.parse_args()

    claim = example("hl7.fhir.us.davinci-pas-2.0.1", "Claim-ReferralAuthorizationExample.json")
    claim.pop("id", None)
    claim_body = json.dumps(claim).encode()
    scenarios = [
        Scenario("GET /fhir/Patient/{id}", "GET", "/fhir/Patient/pat-001"),
        Scenario("POST /fhir/Claim (PAS example Claim)", "POST", "/fhir/Claim", claim_body),
    ]
    data = temp_data_dir()
    precert, pport = start_precert(data)
    floor, fport = start_floor()
    lines = [f"# Foundation benchmark", "", f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; "
             f"closed loop, {args.connections} connections, {args.duration:.0f} s per scenario after 1 s warm-up; "
             "one uvicorn worker each; Precert on the embedded SecantusDB (durable, on disk).", "", HEADER]
    try:
        for sc in scenarios:
            f = load(fport, sc, connections=args.connections, duration=args.duration)
            p = load(pport, sc, connections=args.connections, duration=args.duration)
            lines.append(row(f"floor: {sc.name}", f, rss=peak_rss_mb(floor.pid)))
            lines.append(row(f"Precert: {sc.name}", p, f, peak_rss_mb(precert.pid)))
    finally:
        precert.stop()
        floor.stop()
        cleanup(data)
    print("\n".join(lines))
    print(f"\nwritten to {write_report('foundation', lines)}")


if __name__ == "__main__":
    main()
