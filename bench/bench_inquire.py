"""``Claim/$inquire`` for one member with many cases: the real server on its embedded database,
seeded through the API with ``--cases`` requests for the same member and provider (the PAS Referral
example), then inquiries by member and provider (up to 50 answers each) beside the floor (same body
parsed, small fixed JSON) measured in the same run.

Run: python bench/bench_inquire.py [--cases 2000] [--duration 6] [--connections 4]
"""

from __future__ import annotations

import argparse
import json
import time

from pymongo import MongoClient

from harness import (HEADER, Scenario, cleanup, load, load_average, machine, peak_rss_mb, row, start_database,
                     start_floor, start_precert, temp_data_dir, write_report)
from suite import submit_body  # the PAS Referral example with fresh identifiers, as bench/run sends it
from tests.support import example
from tests.test_pas_inquire_update import inquiry_for

DB_NAME = "precert"
REFERRAL = "Bundle-ReferralAuthorizationBundleExample.json"


def inquiry_body() -> bytes:
    inquiry = inquiry_for(example("hl7.fhir.us.davinci-pas-2.2.1", REFERRAL))
    inquiry["identifier"]["value"] = "inquiry-{{uuid}}"
    return json.dumps(inquiry).encode()


def cases_stored(client: MongoClient) -> int:
    return client[DB_NAME]["pas_cases"].estimated_document_count()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--connections", type=int, default=4)
    args = ap.parse_args()

    submit = Scenario("POST /fhir/Claim/$submit", "POST", "/fhir/Claim/$submit", submit_body())
    inquire = Scenario("POST /fhir/Claim/$inquire", "POST", "/fhir/Claim/$inquire", inquiry_body())
    data = temp_data_dir()
    db = start_database(data)
    client = MongoClient(db.uri, tz_aware=True)
    precert, pport = start_precert(data / "precert", mongodb_uri=db.uri)
    floor, fport = start_floor()
    try:
        began = time.monotonic()
        while cases_stored(client) < args.cases and time.monotonic() - began < 900:
            load(pport, submit, connections=16, duration=max(1.0, min(30.0, (args.cases - cases_stored(client)) / 150)))
        seeded = time.monotonic() - began
        f = load(fport, inquire, connections=args.connections, duration=args.duration)
        p = load(pport, inquire, connections=args.connections, duration=args.duration)
        lines = ["# PAS benchmark: Claim/$inquire for a member with many cases", "",
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; {load_average()}.", "",
                 f"{cases_stored(client):,} cases for one member and provider, seeded through the API in {seeded:.0f} s. "
                 f"Closed loop, {args.connections} connections, {args.duration:.0f} s; each inquiry answers up to 50 "
                 "matching requests. One uvicorn worker, embedded SecantusDB on disk.", "", HEADER,
                 row("floor", f, rss=peak_rss_mb(floor.pid)),
                 row("Precert $inquire", p, f, peak_rss_mb(precert.pid)), "",
                 f"$inquire median {p['p50_ms']:.0f} ms, p95 {p['p95_ms']:.0f} ms (floor median {f['p50_ms']:.1f} ms)."]
    finally:
        precert.stop()
        floor.stop()
        client.close()
        db.stop()
        cleanup(data)
    print("\n".join(lines))
    print(f"\nwritten to {write_report('inquire', lines)}")


if __name__ == "__main__":
    main()
