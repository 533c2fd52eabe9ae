"""PAS benchmark: Claim/$submit with the PAS Referral example (auto-approved path) against the real
server, beside two floors measured in the same run: the plain floor (same body parsed, fixed JSON)
and the durable-write floor (same body parsed and one document inserted into the same database
with the same write concern, w majority and journal).

Every request carries a fresh Bundle identifier, Claim identifier and order (ServiceRequest)
identifier, as a real EHR sends. The database is grown between rounds by submitting through the
API, so the figures are reported at several stored sizes and growth is visible.

Run: python bench/bench_pas.py [--duration 4] [--sizes 0,2000,8000]
"""

from __future__ import annotations

import argparse
import json
import time

from pymongo import MongoClient

from harness import (HEADER, Scenario, cleanup, load, load_average, machine, peak_rss_mb, row, start_database,
                     start_durable_floor, start_floor, start_precert, temp_data_dir, write_report)
from tests.support import example

DB_NAME = "precert"


def submit_body() -> bytes:
    bundle = example("hl7.fhir.us.davinci-pas-2.2.1", "Bundle-ReferralAuthorizationBundleExample.json")
    bundle["identifier"] = {"system": "urn:bench:bundle", "value": "b-{{uuid}}"}
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Claim":
            for ident in res.get("identifier", []):
                ident["value"] = "claim-{{uuid}}"
        if res["resourceType"] == "ServiceRequest":
            res["identifier"] = [{"system": "urn:bench:order", "value": "order-{{uuid}}"}]
    return json.dumps(bundle).encode()


def stored(client: MongoClient) -> tuple[int, int]:
    db = client[DB_NAME]
    return db["resources"].estimated_document_count(), db["pas_cases"].estimated_document_count()


def seed(port: int, sc: Scenario, client: MongoClient, target_cases: int) -> float:
    """Submit through the API (closed loop, 16 connections) until the database holds ``target_cases`` cases."""
    began = time.monotonic()
    while stored(client)[1] < target_cases and time.monotonic() - began < 600:
        missing = target_cases - stored(client)[1]
        load(port, sc, connections=16, duration=max(1.0, min(30.0, missing / 150)))
    return time.monotonic() - began


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rate", type=float, default=50)
    ap.add_argument("--sizes", default="0,2000,8000", help="cases stored before each round, comma-separated")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    body = submit_body()
    sc = Scenario("POST /fhir/Claim/$submit", "POST", "/fhir/Claim/$submit", body)
    data = temp_data_dir()
    db = start_database(data)
    client = MongoClient(db.uri, tz_aware=True)
    precert, pport = start_precert(data / "precert", mongodb_uri=db.uri)
    floor, fport = start_floor()
    durable, dport = start_durable_floor(db.uri)
    lines = ["# PAS benchmark: Claim/$submit", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; {load_average()} at the start.", "",
             "One uvicorn worker each. Precert and the durable-write floor share one embedded SecantusDB on disk, "
             "both writing with w majority, journal true. Each Precert request: validation, rules, one transaction "
             "writing the case, Claim and ClaimResponse with their history records. Fresh Bundle, Claim and order "
             f"identifiers per request; body {len(body)} bytes. Ratios are to floors measured in the same round.", ""]
    try:
        for size in sizes:
            took = seed(pport, sc, client, size)
            resources, cases = stored(client)
            lines += [f"## Database holding {resources:,} resources and {cases:,} cases", "",
                      f"(seeded through the API in {took:.0f} s; {load_average()})", "",
                      f"Open loop at {args.rate:.0f} requests/s for {args.duration:.0f} s (latency from the scheduled start):", "", HEADER]
            f_open = load(fport, sc, rate=args.rate, duration=args.duration, connections=args.connections)
            d_open = load(dport, sc, rate=args.rate, duration=args.duration, connections=args.connections)
            p_open = load(pport, sc, rate=args.rate, duration=args.duration, connections=args.connections)
            lines.append(row(f"floor @ {args.rate:.0f}/s", f_open, rss=peak_rss_mb(floor.pid)))
            lines.append(row(f"durable-write floor @ {args.rate:.0f}/s", d_open, rss=peak_rss_mb(durable.pid)))
            lines.append(row(f"Precert @ {args.rate:.0f}/s", p_open, f_open, peak_rss_mb(precert.pid)))
            lines += ["", f"Closed loop, {args.connections} connections, {args.duration:.0f} s after 1 s warm-up:", "", HEADER]
            f = load(fport, sc, connections=args.connections, duration=args.duration)
            d = load(dport, sc, connections=args.connections, duration=args.duration)
            p = load(pport, sc, connections=args.connections, duration=args.duration)
            lines.append(row("floor", f, rss=peak_rss_mb(floor.pid)))
            lines.append(row("durable-write floor", d, f, peak_rss_mb(durable.pid)))
            lines.append(row("Precert $submit", p, f, peak_rss_mb(precert.pid)))
            lines += ["", f"$submit: {100 * p['throughput'] / f['throughput']:.1f}% of the floor, "
                      f"{100 * p['throughput'] / d['throughput']:.1f}% of the durable-write floor (target 50%); "
                      f"p99 at {args.rate:.0f}/s {p_open['p99_ms']:.1f} ms (target under 50 ms).", ""]
    finally:
        precert.stop()
        floor.stop()
        durable.stop()
        client.close()
        db.stop()
        cleanup(data)
    print("\n".join(lines))
    print(f"\nwritten to {write_report('pas', lines)}")


if __name__ == "__main__":
    main()
