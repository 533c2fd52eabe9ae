"""CPU time of the profile validator on the requests it checks most: the PAS Referral request Bundle
(2.0.1 and 2.2.1, against the request-bundle profile of its version, as ``$submit`` checks it) and the
draft orders of the CRD order-sign fixture (``tests/fixtures/crd/CRDServiceRequest.json``: two
ServiceRequests, as a CDS Hooks call checks them, without its cache), and that call's prefetch.

In process, no server: this measures :mod:`server.fhir.profiles` alone. Warm (packages loaded,
profiles compiled, one untimed run first); prints the median and quartiles of ``--runs`` runs of CPU
time (``time.process_time``), which other work on a shared machine disturbs less than wall time.

Run: python bench/bench_validator.py [--runs 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.fhir import profiles  # noqa: E402

SD = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
REFERRAL = "Bundle-ReferralAuthorizationBundleExample.json"


def _example(package: str, suffix: str) -> dict:
    for pkg, name, res in profiles.registry().examples:
        if pkg == package and name.endswith(suffix):
            return copy.deepcopy(res)
    raise LookupError(suffix)


def cases() -> dict[str, list[tuple]]:
    order_sign = json.loads((ROOT / "tests" / "fixtures" / "crd" / "CRDServiceRequest.json").read_text())
    out = {}
    for version in ("2.0.1", "2.2.1"):
        pkg = f"hl7.fhir.us.davinci-pas-{version}"
        out[f"PAS {version} Referral request Bundle"] = [(_example(pkg, REFERRAL), SD + "profile-pas-request-bundle", pkg)]
    out["CRD order-sign draftOrders"] = [(order_sign["context"]["draftOrders"], None, None)]
    out["CRD order-sign prefetch (9 entries)"] = [(v, None, None) for v in order_sign["prefetch"].values()]
    return out


def validate_all(case: list[tuple]) -> int:
    return sum(len(profiles.errors(profiles.validate(*args))) for args in case)


def measure(case: list[tuple], runs: int) -> list[float]:
    validate_all(case)  # warm: profiles compiled, expressions cached
    times = []
    for _ in range(runs):
        t0 = time.process_time()
        validate_all(case)
        times.append((time.process_time() - t0) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3, help="rounds over all cases (interleaved, to spread noise)")
    args = ap.parse_args()
    profiles.registry()
    found = cases()
    results: dict[str, list[float]] = {name: [] for name in found}
    for _ in range(args.repeat):
        for name, case in found.items():
            results[name].append(statistics.median(measure(case, args.runs)))
    for name, medians in results.items():
        errs = validate_all(found[name])
        shown = ", ".join(f"{m:.2f}" for m in medians)
        print(f"{name:40s} median CPU ms per round: {shown}  (errors: {errs})")


if __name__ == "__main__":
    main()
