"""Seed a Precert database with a realistic volume of stored resources and prior-authorization
cases, written through :class:`server.storage.Storage` (the documents and search keys the server
itself writes) rather than through the API, so tens of thousands take seconds, not minutes.

Each member brings a Patient, a Coverage, a ServiceRequest, a Claim and its ClaimResponse (five
resources) and one case; none shares an identifier with the sandbox members the benchmarks use, so
the seeded records only make the collections and their indexes as large as a payer's.

Run: python bench/seed.py --uri mongodb://127.0.0.1:PORT --db precert --resources 50000 [--cases 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymongo  # noqa: E402

from server.storage import Storage, utcnow  # noqa: E402

MEMBER_SYSTEM = "urn:precert:seed:member"
ORDER_SYSTEM = "urn:precert:seed:order"
CLAIM_SYSTEM = "urn:precert:seed:claim"
PER_MEMBER = 5


def member_resources(run: str, i: int) -> list[tuple[str, dict, str]]:
    """The five resources of seeded member ``i``: Patient, Coverage, ServiceRequest, Claim, ClaimResponse."""
    m = f"{run}-{i}"
    patient = {"resourceType": "Patient", "identifier": [{"system": MEMBER_SYSTEM, "value": m}],
               "name": [{"family": f"Seed{i}", "given": ["Member"]}], "gender": "female" if i % 2 else "male",
               "birthDate": f"{1940 + i % 60}-0{1 + i % 9}-1{i % 10}"}
    coverage = {"resourceType": "Coverage", "status": "active", "identifier": [{"system": MEMBER_SYSTEM, "value": m}],
                "subscriberId": m, "beneficiary": {"reference": f"Patient/p-{m}"},
                "payor": [{"display": "Seed payer"}], "period": {"start": "2024-01-01"}}
    order = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
             "identifier": [{"system": ORDER_SYSTEM, "value": m}], "subject": {"reference": f"Patient/p-{m}"},
             "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": str(70000 + i % 3000)}]}}
    claim = {"resourceType": "Claim", "status": "active", "use": "preauthorization",
             "identifier": [{"system": CLAIM_SYSTEM, "value": m}], "patient": {"reference": f"Patient/p-{m}"},
             "created": "2025-06-01T10:00:00Z", "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": f"Coverage/c-{m}"}}],
             "item": [{"sequence": 1, "productOrService": order["code"]}]}
    response = {"resourceType": "ClaimResponse", "status": "active", "use": "preauthorization", "outcome": "complete",
                "identifier": [{"system": CLAIM_SYSTEM, "value": f"r-{m}"}], "patient": {"reference": f"Patient/p-{m}"},
                "request": {"reference": f"Claim/cl-{m}"}, "created": "2025-06-01T10:00:01Z"}
    return [("Patient", patient, f"p-{m}"), ("Coverage", coverage, f"c-{m}"), ("ServiceRequest", order, f"o-{m}"),
            ("Claim", claim, f"cl-{m}"), ("ClaimResponse", response, f"cr-{m}")]


def resources(count: int, run: str) -> Iterator[tuple[str, dict, str]]:
    """``count`` resources, whole members first (five each), as (type, resource, id)."""
    made = 0
    i = 0
    while made < count:
        for item in member_resources(run, i)[: count - made]:
            yield item
            made += 1
        i += 1


def case_document(run: str, i: int) -> dict:
    """A decided case for seeded member ``i``, shaped as ``PasService`` writes one."""
    m = f"{run}-{i}"
    received = utcnow() - timedelta(minutes=i)
    return {
        "_id": f"PASEED{run}{i:07d}".upper(), "key": f"-|{CLAIM_SYSTEM}|{m}|{secrets.token_hex(8)}", "owner": None,
        "version": "2.2.1", "status": "decided" if i % 10 else "pended", "urgency": "standard", "received": received,
        "due": received + timedelta(days=7), "retain_until": received + timedelta(days=200),
        "decided": received if i % 10 else None, "auth_number": f"AUTHSEED{i}", "request": b"{}", "response": b"{}",
        "response_id": f"cr-{m}", "claim_id": f"cl-{m}",
        "decisions": [{"sequence": 1, "action": "A1", "summary": "seeded", "codes": [], "reason": "", "trace": []}],
        "errors": [], "member_ids": [f"{MEMBER_SYSTEM}|{m}", m], "provider_ids": ["1234567890"], "sender_ids": [],
        "claim_keys": [f"{CLAIM_SYSTEM}|{m}"], "auth_numbers": [f"AUTHSEED{i}"], "codes": [str(70000 + i % 3000)],
        "categories": [], "patient_id": f"p-{m}", "coverage_id": f"c-{m}", "prior": None, "superseded_by": None,
        "reviewed_by_human": False, "assignee": None, "history": [],
    }


async def seed(storage: Storage, resource_count: int, case_count: int = 0, run: str | None = None) -> tuple[int, int]:
    """Add ``resource_count`` resources and ``case_count`` cases; returns how many of each were written."""
    run = run or secrets.token_hex(3)
    written = await storage.bulk_load(resources(resource_count, run))
    cases = storage.collection("pas_cases")
    done = 0
    for start in range(0, case_count, 500):
        batch = [case_document(run, i) for i in range(start, min(case_count, start + 500))]
        with pymongo.timeout(120):
            await cases.insert_many(batch, ordered=False)
        done += len(batch)
    return written, done


async def seed_uri(uri: str, db_name: str, resource_count: int, case_count: int) -> tuple[int, int]:
    storage = Storage(uri, db_name)
    storage.connect()
    try:
        return await seed(storage, resource_count, case_count)
    finally:
        await storage.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uri", required=True)
    ap.add_argument("--db", default="precert")
    ap.add_argument("--resources", type=int, default=50_000)
    ap.add_argument("--cases", type=int, help="cases to add (default: one per five resources)")
    args = ap.parse_args()
    cases = args.cases if args.cases is not None else args.resources // PER_MEMBER
    began = time.monotonic()
    written, done = asyncio.run(seed_uri(args.uri, args.db, args.resources, cases))
    print(f"seeded {written:,} resources and {done:,} cases in {time.monotonic() - began:.1f} s")


if __name__ == "__main__":
    main()
