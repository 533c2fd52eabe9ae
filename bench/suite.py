"""Every benchmark in one run (``bench/run``): CRD order-sign, DTR ``$questionnaire-package``,
``GET /fhir/Patient/{id}``, ``POST /fhir/Claim`` and PAS ``$submit``, each beside the floor measured
in the same round (``$submit`` also beside the durable-write floor), the open-loop tails (CRD at
100 requests/s, ``$submit`` at 50 requests/s), and CRD at one worker against two.

One embedded SecantusDB on disk serves Precert and the durable-write floor. Before each size the
database is grown to that many stored resources (and one case per five) through Storage
(``bench/seed.py``), so growth with the data is visible. Every request carries fresh identifiers,
as an EHR sends: a new hookInstance and draft-order ids (CRD), a new order id (DTR), a new Bundle,
Claim and order identifier (PAS). Each figure is the median of ``--rounds`` rounds; each round
measures the floor just before Precert, and ratios are taken within the round, since the machine
is shared.

Writes ``bench/results/summary.md`` (each figure beside its target) and ``bench/results/details.md``
(every round).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace

from harness import (BENCH, HEADER, ROOT, Scenario, cleanup, load, load_average, machine, peak_rss_mb, row, start_database,
                     start_durable_floor, start_floor, start_precert, temp_data_dir, write_report)
from seed import seed_uri
from server.dtr.examples import home_oxygen_request
from tests.support import CRD_FIXTURES, example

DB_NAME = "precert"
DTR_PATH = "/fhir/Questionnaire/$questionnaire-package"


# ---------------------------------------------------------------------- request bodies
def crd_body() -> bytes:
    request = json.loads((CRD_FIXTURES / "CRDServiceRequest.json").read_text())
    request["hookInstance"] = "{{uuid}}"
    for n, entry in enumerate(request["context"]["draftOrders"]["entry"]):
        entry["resource"]["id"] = f"order{n}-{{{{uuid}}}}"
    return json.dumps(request).encode()


def dtr_body() -> bytes:
    request = home_oxygen_request()
    for p in request["parameter"]:
        if p["name"] == "order":
            p["resource"]["id"] = "devreq-{{uuid}}"
            p["resource"]["identifier"] = [{"system": "urn:bench:order", "value": "{{uuid}}"}]
    return json.dumps(request).encode()


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


def claim_body() -> bytes:
    claim = example("hl7.fhir.us.davinci-pas-2.0.1", "Claim-ReferralAuthorizationExample.json")
    claim.pop("id", None)
    claim["identifier"] = [{"system": "urn:bench:claim", "value": "{{uuid}}"}]
    return json.dumps(claim).encode()


FHIR_JSON = ["Content-Type: application/fhir+json"]
SCENARIOS = {
    "crd": Scenario("CRD order-sign (CRDServiceRequest.json, prefetch)", "POST", "/cds-services/order-sign-crd", crd_body(), ["Content-Type: application/json"]),
    "dtr": Scenario("DTR $questionnaire-package (home oxygen)", "POST", DTR_PATH, dtr_body(), FHIR_JSON),
    "get_patient": Scenario("GET /fhir/Patient/{id}", "GET", "/fhir/Patient/pat-001"),
    "post_claim": Scenario("POST /fhir/Claim (PAS example Claim)", "POST", "/fhir/Claim", claim_body(), FHIR_JSON),
    "submit": Scenario("PAS Claim/$submit (Referral example)", "POST", "/fhir/Claim/$submit", submit_body(), FHIR_JSON),
}
# Throughput targets: the least ratio to the floor (``durable`` for $submit).
RATIO_TARGETS = {"crd": 0.50, "dtr": 0.50, "get_patient": 0.35, "submit": 0.50}
OPEN_LOOPS = {"crd": (100, 20.0), "submit": (50, 50.0)}  # rate, p99 target in ms
WORKERS_TARGET = 1.5


@dataclass
class Plan:
    sizes: list[int]
    rounds: int
    duration: float
    open_duration: float
    connections: int
    workers: bool
    plans: bool
    only: tuple[str, ...] = tuple(SCENARIOS)
    report: str = ""


def plan_of(args) -> Plan:
    return replace(_plan_of(args), report=args.report or "")


def _plan_of(args) -> Plan:
    only = tuple(n for n in (args.only or ",".join(SCENARIOS)).split(",") if n)
    unknown = [n for n in only if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    if args.quick:
        return Plan([int(s) for s in (args.seed or "0,2000").split(",")], 1, 2, 3, args.connections, "crd" in only, False, only)
    return Plan([int(s) for s in (args.seed or "0,10000,50000").split(",")], args.rounds, args.duration, args.open_duration,
                args.connections, not args.no_workers and "crd" in only, not args.no_plans, only)


# ---------------------------------------------------------------------- measuring
def median_rounds(rounds: list[dict]) -> dict:
    """The round with the median ratio (so a figure and its ratio come from one round)."""
    ordered = sorted(rounds, key=lambda r: r["ratio"])
    return ordered[len(ordered) // 2]


def closed(name: str, pport: int, fport: int, dport: int | None, plan: Plan, details: list[str], pid: int) -> dict:
    sc = SCENARIOS[name]
    rounds = []
    for n in range(plan.rounds):
        f = load(fport, sc, connections=plan.connections, duration=plan.duration)
        d = load(dport, sc, connections=plan.connections, duration=plan.duration) if dport else None
        p = load(pport, sc, connections=plan.connections, duration=plan.duration)
        details.append(row(f"round {n + 1}: floor: {sc.name}", f))
        if d:
            details.append(row(f"round {n + 1}: durable-write floor", d, f))
        details.append(row(f"round {n + 1}: Precert: {sc.name}", p, f, peak_rss_mb(pid)))
        base = d or f
        rounds.append({"precert": p, "floor": f, "durable": d, "ratio": p["throughput"] / base["throughput"] if base["throughput"] else 0,
                       "floor_ratio": p["throughput"] / f["throughput"] if f["throughput"] else 0})
    return median_rounds(rounds)


def open_loop(name: str, pport: int, plan: Plan, details: list[str], pid: int) -> dict:
    sc = SCENARIOS[name]
    rate, _ = OPEN_LOOPS[name]
    runs = []
    for n in range(plan.rounds):
        p = load(pport, sc, rate=rate, duration=plan.open_duration, connections=plan.connections)
        details.append(row(f"round {n + 1}: Precert @ {rate}/s: {sc.name}", p, rss=peak_rss_mb(pid)))
        runs.append(p)
    return sorted(runs, key=lambda r: r["p99_ms"])[len(runs) // 2]


def stored_counts(uri: str) -> tuple[int, int]:
    from pymongo import MongoClient

    with MongoClient(uri) as client:
        db = client[DB_NAME]
        return db["resources"].estimated_document_count(), db["pas_cases"].estimated_document_count()


def grow_to(uri: str, size: int, seeded: int) -> int:
    """Seed until ``size`` resources have been seeded in all (one case per five)."""
    if size > seeded:
        asyncio.run(seed_uri(uri, DB_NAME, size - seeded, (size - seeded) // 5))
    return max(size, seeded)


def workers_comparison(uri: str, data, plan: Plan, details: list[str]) -> dict:
    """CRD closed loop at one worker and at two, alternating, on the same database."""
    sc = SCENARIOS["crd"]
    one, p1 = start_precert(data / "w1", mongodb_uri=uri, workers=1)
    two, p2 = start_precert(data / "w2", mongodb_uri=uri, workers=2)
    try:
        load(p2, sc, connections=4, duration=4)  # each worker loads its IG packages
        rounds = []
        for n in range(plan.rounds):
            a = load(p1, sc, connections=plan.connections, duration=plan.duration)
            b = load(p2, sc, connections=plan.connections * 2, duration=plan.duration)
            details.append(row(f"round {n + 1}: CRD, 1 worker", a))
            details.append(row(f"round {n + 1}: CRD, 2 workers", b))
            rounds.append({"one": a, "two": b, "ratio": b["throughput"] / a["throughput"] if a["throughput"] else 0})
        return median_rounds(rounds)
    finally:
        one.stop()
        two.stop()


# ---------------------------------------------------------------------- reporting
def verdict(ok: bool, miss: str) -> str:
    return "met" if ok else f"**missed** ({miss})"


def summary_rows(size_label: str, res: dict) -> list[str]:
    out = []
    for name, target in RATIO_TARGETS.items():
        if name not in res["closed"]:
            continue
        r = res["closed"][name]
        ratio = r["ratio"]
        against = "durable-write floor" if name == "submit" else "floor"
        extra = f"; {100 * r['floor_ratio']:.1f}% of the plain floor" if name == "submit" else ""
        out.append(f"| {size_label} | {SCENARIOS[name].name} | ≥ {100 * target:.0f}% of {against} | "
                   f"{r['precert']['throughput']:.0f} req/s, {100 * ratio:.1f}%{extra} | "
                   f"{verdict(ratio >= target, f'by {100 * (target - ratio):.1f} points')} |")
    if "post_claim" in res["closed"]:
        r = res["closed"]["post_claim"]
        out.append(f"| {size_label} | {SCENARIOS['post_claim'].name} | reported | {r['precert']['throughput']:.0f} req/s, "
                   f"{100 * r['ratio']:.1f}% of floor | - |")
    for name, (rate, p99) in OPEN_LOOPS.items():
        if name not in res["open"]:
            continue
        o = res["open"][name]
        out.append(f"| {size_label} | {SCENARIOS[name].name} @ {rate} req/s | p99 < {p99:.0f} ms | p99 {o['p99_ms']:.1f} ms "
                   f"(p50 {o['p50_ms']:.1f}, p95 {o['p95_ms']:.1f}) | {verdict(o['p99_ms'] < p99, 'by %.1f ms' % (o['p99_ms'] - p99))} |")
    return out


def run(plan: Plan) -> None:
    data = temp_data_dir()
    db = start_database(data)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = [f"{started}; {machine()}; {load_average()} at the start. One uvicorn worker each unless said; Precert "
            "and the durable-write floor share one embedded SecantusDB on disk (w majority, journal). "
            f"Closed loop: {plan.connections} connections, {plan.duration:.0f} s after 1 s warm-up; open loop: "
            f"{plan.open_duration:.0f} s, latency from the scheduled start; median of {plan.rounds} round(s). "
            "The machine is shared with other work: only ratios within one round compare.", ""]
    details = ["# Benchmark details", "", *head]
    summary = ["# Benchmark summary", "", *head,
               "| stored | scenario | target | measured (median round) | |", "|---|---|---|---|---|"]
    precert, pport = start_precert(data / "precert", mongodb_uri=db.uri)
    floor, fport = start_floor()
    durable, dport = start_durable_floor(db.uri)
    seeded = 0
    try:
        for name in plan.only:  # warm-up: imports, rules, connection pools
            load(pport, SCENARIOS[name], connections=2, duration=3)
        for size in plan.sizes:
            seeded = grow_to(db.uri, size, seeded)
            resources, cases = stored_counts(db.uri)
            label = f"{resources:,} resources, {cases:,} cases"
            details += ["", f"## {label} ({load_average()})", "", HEADER]
            res: dict = {"closed": {}, "open": {}}
            for name in plan.only:
                res["closed"][name] = closed(name, pport, fport, dport if name == "submit" else None, plan, details, precert.pid)
            for name in (n for n in OPEN_LOOPS if n in plan.only):
                res["open"][name] = open_loop(name, pport, plan, details, precert.pid)
            summary += summary_rows(label, res)
            print(f"{label}: done ({load_average()})", flush=True)
        if plan.workers:
            details += ["", f"## CRD at 1 and 2 workers ({load_average()})", "", HEADER]
            w = workers_comparison(db.uri, data, plan, details)
            summary.append(f"| {label} | CRD order-sign, 2 workers vs 1 | ≥ {WORKERS_TARGET}× | {w['two']['throughput']:.0f} vs "
                           f"{w['one']['throughput']:.0f} req/s, {w['ratio']:.2f}× | "
                           f"{verdict(w['ratio'] >= WORKERS_TARGET, 'by %.2f×' % (WORKERS_TARGET - w['ratio']))} |")
    finally:
        precert.stop()
        floor.stop()
        durable.stop()
        db.stop()
        cleanup(data)
    summary += ["", f"Finished {time.strftime('%H:%M UTC', time.gmtime())}; {load_average()}."]
    if plan.plans:
        summary += ["", query_plans(max(plan.sizes))]
    print("\n".join(summary))
    prefix = f"{plan.report}-" if plan.report else ""
    print(f"\nwritten to {write_report(prefix + 'summary', summary)} and {write_report(prefix + 'details', details)}")


def query_plans(size: int) -> str:
    """tests/test_query_plans.py at the largest size: every hot-path query an index look-up."""
    env = {**os.environ, "PRECERT_PLAN_RESOURCES": str(size)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "tests/test_query_plans.py"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    last = (out.stdout.strip().splitlines() or ["(no output)"])[-1]
    return f"Query plans over {size:,} stored resources (tests/test_query_plans.py): {last}"


def main() -> None:
    ap = argparse.ArgumentParser(description="Run every Precert benchmark and write bench/results/.")
    ap.add_argument("--quick", action="store_true", help="a short smoke run: one round of 2 s, sizes 0 and 2,000")
    ap.add_argument("--dry-run", action="store_true", help="build every request and print the plan; start nothing")
    ap.add_argument("--seed", help="stored resources before each size, comma-separated (default 0,10000,50000)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--open-duration", type=float, default=15)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--only", help=f"scenarios to run, comma-separated ({', '.join(SCENARIOS)}); default all")
    ap.add_argument("--report", help="write bench/results/REPORT-summary.md and REPORT-details.md instead")
    ap.add_argument("--no-workers", action="store_true", help="skip CRD at 1 vs 2 workers")
    ap.add_argument("--no-plans", action="store_true", help="skip the query-plan check at the largest size")
    args = ap.parse_args()
    plan = plan_of(args)
    if args.dry_run:
        for name, sc in SCENARIOS.items():
            print(f"{name}: {sc.method} {sc.path} ({len(sc.body or b'')} bytes)")
        print(f"plan: {plan}")
        return
    run(plan)


if __name__ == "__main__":
    main()
