"""Sandbox review cases: a handful of prior-authorization requests in every state a reviewer meets
(pended standard and expedited, overdue, waiting on information, approved, denied, modified,
appealed), so that the work queue, the dashboard and the public report are not empty on first look.

Each case is made the way a real one is: the PAS request (the Da Vinci surgical example, with a
sandbox member and provider) goes through :class:`server.pas.service.PasService`, and decisions
through :mod:`server.pas.decisions` as the sandbox's reviewer (RN) and medical director (MD) accounts,
with an appeal through :mod:`server.review.appeals`. Their times are then moved back (received days
ago, decided hours later), so that clocks, overdue cases and weekly trends have something to show.

Seeding happens once per database: the first worker to insert the marker document seeds; other
workers starting at the same time, and every later start, find the marker and do nothing.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import re
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

from pymongo.errors import DuplicateKeyError

from server.auth.staff import StaffPrincipal
from server.fhir.repository import Repository
from server.pas import cases as case_store
from server.pas import decisions
from server.pas.service import PasService
from server.review import appeals, clock
from server.review.workbench import payer_clocks

log = logging.getLogger("precert.sandbox")

MARKER = "review-cases-v1"
SEED_SYSTEM = "http://precert.example.org/sid/sandbox-seed"
MEMBER_ID_SYSTEM = "http://precert.example.org/sid/member-id"
NPI = "http://hl7.org/fhir/sid/us-npi"
PACKAGE = Path(__file__).resolve().parents[2] / "fhir-packages" / "hl7.fhir.us.davinci-pas-2.2.1.tgz"
EXAMPLE = "package/example/Bundle-SurgicalRequestBundleExample.json"

REVIEWER = StaffPrincipal("reviewer", ["reviewer"], "Sandbox Clinical Reviewer", None, "RN")
DIRECTOR = StaffPrincipal("director", ["medical-director", "reviewer"], "Sandbox Medical Director", None, "MD")
RATIONALE = ("The notes describe single-vessel disease with stable angina controlled on medication; no angiography or "
             "stress test documents the multivessel or left main disease the bypass criteria require.")


@dataclass
class Seed:
    """One sandbox case: who, from whom, how urgent, and what happened to it."""
    key: str
    member: tuple[str, str, str, str]  # member id, family, given, gender
    provider: tuple[str, str]  # organization name, NPI
    received_days_ago: float
    urgency: str = "standard"
    steps: list[tuple[str, dict]] = field(default_factory=list)  # (who, decision body) or ("appeal", body)
    decided_after_hours: float | None = None


# Sandbox members and providers (server.sandbox): names as the payer knows them; no birth date in
# the request, so the workbench shows the member's age from the payer's own records.
HOSPITAL = ("Precert Demo General Hospital", "1345678902")
CLINIC = ("Precert Demo Family Clinic", "1234567893")
SEEDS = [
    Seed("seed-pended", ("PCM000001", "Rivera", "Ana", "female"), HOSPITAL, 1.0),
    Seed("seed-expedited", ("PCM000002", "Okafor", "Daniel", "male"), HOSPITAL, 0.4, urgency="expedited"),
    Seed("seed-overdue", ("PCM000007", "Nguyen", "Linh", "female"), CLINIC, 9.0),
    Seed("seed-info", ("PCM000011", "Haddad", "Nadia", "female"), HOSPITAL, 2.5,
         steps=[("reviewer", {"action": "request-info", "needed": ["Cardiac catheterization report", "Cardiology consult note"]})]),
    Seed("seed-approved", ("PCM000003", "Chen", "Mei", "female"), CLINIC, 12.0, decided_after_hours=30,
         steps=[("reviewer", {"action": "approve", "note": "Criteria met on the attached catheterization report."})]),
    Seed("seed-approved-expedited", ("PCM000004", "Johansson", "Erik", "male"), HOSPITAL, 5.0, urgency="expedited",
         decided_after_hours=6, steps=[("reviewer", {"action": "approve", "note": "Urgent: left main disease documented."})]),
    Seed("seed-denied", ("PCM000005", "Patel", "Priya", "female"), CLINIC, 20.0, decided_after_hours=50,
         steps=[("director", {"action": "deny", "reason": {"code": "medical-necessity", "text": "Multivessel disease is not documented."},
                              "rationale": RATIONALE, "credentials": "MD, cardiothoracic surgery"})]),
    Seed("seed-modified", ("PCM000009", "Smith", "Olivia", "female"), HOSPITAL, 16.0, decided_after_hours=20,
         steps=[("director", {"action": "modify", "items": [{"sequence": 1, "quantity": 1, "days": 30}],
                              "note": "One procedure within 30 days.",
                              "rationale": "One procedure is supported; a repeat would need a new request with new findings.",
                              "credentials": "MD, cardiology"})]),
    Seed("seed-appealed", ("PCM000012", "Williams", "Jerome", "male"), CLINIC, 25.0, decided_after_hours=60,
         steps=[("director", {"action": "deny", "reason": {"code": "medical-necessity", "text": "Stress test results not provided."},
                              "rationale": RATIONALE, "credentials": "MD, cardiothoracic surgery"}),
                ("appeal", {"reason": "The stress test of last month shows ischemia in three territories; report attached.",
                            "appellant": "provider"})]),
]


@lru_cache(maxsize=1)
def _example() -> dict:
    with tarfile.open(PACKAGE) as tar:
        member = tar.extractfile(EXAMPLE)
        assert member is not None
        return json.load(io.TextIOWrapper(member, encoding="utf-8"))


def request_bundle(seed: Seed) -> dict:
    """The surgical example as this seed's request: its own Bundle identifier, member and provider."""
    b = copy.deepcopy(_example())
    b["identifier"] = {"system": SEED_SYSTEM, "value": seed.key}
    member_id, family, given, gender = seed.member
    org_name, org_npi = seed.provider
    claim = b["entry"][0]["resource"]
    claim["priority"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority",
                                     "code": "stat" if seed.urgency == "expedited" else "normal"}]}
    for entry in b["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Patient":
            res["identifier"] = [{"system": MEMBER_ID_SYSTEM, "value": member_id}]
            res["name"] = [{"family": family, "given": [given]}]
            res["gender"] = gender
        elif res["resourceType"] == "Coverage":
            kept = next((i["type"] for i in res.get("identifier") or [] if i.get("type")), None)
            res["identifier"] = [{**({"type": kept} if kept else {}), "system": MEMBER_ID_SYSTEM, "value": member_id}]
            res["subscriberId"] = member_id
        elif claim["provider"]["reference"] == f"Organization/{res['id']}":
            res["identifier"] = [{"system": NPI, "value": org_npi}]
            res["name"] = org_name
    return b


async def _case_for(state, seed: Seed) -> dict | None:
    key = re.compile("^-\\|" + re.escape(SEED_SYSTEM) + "\\|" + re.escape(seed.key) + "\\|")
    return await case_store.collection(state.storage).find_one({"key": {"$regex": key.pattern}}, {"request": 0, "response": 0})


async def seed_case(state, pas: PasService, seed: Seed, base: str, now: datetime) -> str | None:
    await pas.submit(request_bundle(seed), Repository.system(state, "sandbox-seed", base=base), base)
    case = await _case_for(state, seed)
    if case is None or case.get("status") != "pended":
        log.warning("sandbox: seed case %s was not pended; skipped", seed.key)
        return None
    for who, body in seed.steps:
        if who == "appeal":
            await appeals.file(state, case["_id"], body, REVIEWER.username)
        else:
            await decisions.decide(state, case["_id"], body, DIRECTOR if who == "director" else REVIEWER, base)
    # Back-date it: received days ago (its clock with it), decided some hours later.
    received = now - timedelta(days=seed.received_days_ago)
    change: dict = {"received": received,
                    "due": case_store.due_time(received, seed.urgency == "expedited", case.get("categories") or (), payer_clocks(state))}
    if seed.decided_after_hours is not None:
        change["decided"] = received + timedelta(hours=seed.decided_after_hours)
    await case_store.collection(state.storage).update_one({"_id": case["_id"]}, {"$set": change})
    return case["_id"]


async def seed_cases(state) -> int:
    """Seed the sandbox review cases once per database, after the sandbox's members and providers
    are loaded (:func:`server.sandbox.load_sandbox`). Returns how many were made: 0 outside sandbox
    mode, and when another worker or an earlier start already seeded them. (Kept here rather than
    in ``server.sandbox``, which the FHIR kernel's layer may reach and which must import no review code.)"""
    if state.settings.mode != "sandbox":
        return 0
    markers = state.storage.collection("sandbox_markers")
    try:
        await markers.insert_one({"_id": MARKER, "at": clock.now(), "status": "seeding"})
    except DuplicateKeyError:
        return 0
    pas = state.services.get("pas") or PasService(state)
    base = (state.settings.base_url or "http://localhost:8000").rstrip("/") + "/fhir"
    now = clock.now()
    made = [case_id for s in SEEDS if (case_id := await seed_case(state, pas, s, base, now))]
    await markers.update_one({"_id": MARKER}, {"$set": {"status": "done", "cases": made}})
    log.info("sandbox: seeded %d review cases", len(made))
    return len(made)
