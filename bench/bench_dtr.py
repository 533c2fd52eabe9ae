"""DTR benchmark: Questionnaire/$questionnaire-package for a home oxygen order (DeviceRequest
E0424, sandbox member pat-001) against the real server, from a separate load-generating process,
beside the floor (same request body) measured in the same run.

Each request: Parameters parsing and checks, Coverage and DeviceRequest validation, one payer-rules
evaluation, the draft QuestionnaireResponse; the Questionnaire, Libraries and expanded ValueSets are
served from JSON serialized once. The response is the full package (about 30 KB).

Run: python bench/bench_dtr.py [--duration 8] [--rate 50] [--connections 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx

from harness import HEADER, Scenario, cleanup, load, machine, peak_rss_mb, row, start_floor, start_precert, temp_data_dir, write_report
from server.dtr.examples import home_oxygen_request

PATH = "/fhir/Questionnaire/$questionnaire-package"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rate", type=float, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    body = json.dumps(home_oxygen_request()).encode()
    sc = Scenario("POST /fhir/Questionnaire/$questionnaire-package (home oxygen E0424)", "POST", PATH, body,
                  ["Content-Type: application/fhir+json"])
    data = temp_data_dir()
    precert, pport = start_precert(data)
    floor, fport = start_floor()
    try:
        check = httpx.post(f"http://127.0.0.1:{pport}{PATH}", content=body, headers={"Content-Type": "application/fhir+json"}, timeout=30)
        assert check.status_code == 200, check.text[:500]
        size = len(check.content)
        lines = ["# DTR benchmark: Questionnaire/$questionnaire-package", "",
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; one uvicorn worker each; Precert on the "
                 f"embedded SecantusDB on disk; request body {len(body)} bytes, response {size} bytes (the floor answers "
                 "a fixed 90-byte body after parsing the same request).", "",
                 f"Open loop at {args.rate:.0f} requests/s for {args.duration:.0f} s (latency counted from the scheduled start):", "", HEADER]
        f_open = load(fport, sc, rate=args.rate, duration=args.duration, connections=args.connections)
        p_open = load(pport, sc, rate=args.rate, duration=args.duration, connections=args.connections)
        lines.append(row(f"floor @ {args.rate:.0f}/s", f_open, rss=peak_rss_mb(floor.pid)))
        lines.append(row(f"Precert @ {args.rate:.0f}/s", p_open, f_open, peak_rss_mb(precert.pid)))
        lines += ["", f"Closed loop, {args.connections} connections, {args.rounds} alternating rounds of {args.duration:.0f} s "
                  "(floor, Precert, reference; the machine is shared, so each Precert figure is set against the floor "
                  "measured just before it and the median ratio is the result):", "", HEADER]
        # Reference: the same route answering a 400 (dtr-1: no order, questionnaire or context) with a
        # ~200-byte OperationOutcome: what the server stack costs before any DTR work or a large reply.
        bad = json.dumps({"resourceType": "Parameters", "parameter": [{"name": "coverage", "resource": home_oxygen_request()["parameter"][0]["resource"]}]}).encode()
        ref_sc = Scenario("reference", "POST", PATH, bad, ["Content-Type: application/fhir+json"])
        ratios, ref_ratios = [], []
        for n in range(1, args.rounds + 1):
            f = load(fport, sc, connections=args.connections, duration=args.duration)
            p = load(pport, sc, connections=args.connections, duration=args.duration)
            ref = load(pport, ref_sc, connections=args.connections, duration=args.duration)
            lines.append(row(f"round {n}: floor", f, rss=peak_rss_mb(floor.pid)))
            lines.append(row(f"round {n}: Precert", p, f, peak_rss_mb(precert.pid)))
            lines.append(row(f"round {n}: reference, same route answering 400 (stack cost only)", ref, f, peak_rss_mb(precert.pid)))
            ratios.append(p["throughput"] / f["throughput"])
            ref_ratios.append(ref["throughput"] / f["throughput"])
        ratio = 100 * statistics.median(ratios)
        lines += ["", f"Targets: p95 at {args.rate:.0f}/s under 30 ms (measured {p_open['p95_ms']:.1f} ms: "
                  f"{'met' if p_open['p95_ms'] < 30 else 'missed'}); maximum throughput at least 50% of the floor's "
                  f"(median of the rounds {ratio:.1f}%, rounds {', '.join(f'{100 * r:.0f}%' for r in ratios)}: "
                  f"{'met' if ratio >= 50 else 'missed'}). The reference reached a median "
                  f"{100 * statistics.median(ref_ratios):.0f}% of the floor."]
    finally:
        precert.stop()
        floor.stop()
        cleanup(data)
    print("\n".join(lines))
    print(f"\nwritten to {write_report('dtr', lines)}")


if __name__ == "__main__":
    main()
