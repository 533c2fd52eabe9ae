"""The sandbox: a demo payer with plans, members and providers, loaded idempotently at start.

Every id and identifier here is fixed and listed in the README, so an EHR developer can write them
into requests. The payer also answers to the identifiers used by the Da Vinci PAS examples (insurer
"MARYLAND CAPITAL INSURANCE COMPANY", member JOE SMITH, 12345678901), so the official example
Bundles can be submitted unchanged.
"""

from __future__ import annotations

import logging

import orjson

from server.npi import NPI, npi
from server.sandbox_charts import chart_resources
from server.fhir.repository import Repository
from server.storage import VersionConflict

log = logging.getLogger("precert.sandbox")

MEMBER_ID_SYSTEM = "http://precert.example.org/sid/member-id"
PAYER_ID_SYSTEM = "http://precert.example.org/sid/payer-id"
PAYER_ID = "precert-demo-payer"
MB = "http://terminology.hl7.org/CodeSystem/v2-0203"

PLANS = {
    "gold-ppo": {"plan": "GOLD-PPO", "name": "Precert Gold PPO", "group": "GRP-1001", "network": "PPO"},
    "silver-hmo": {"plan": "SILVER-HMO", "name": "Precert Silver HMO", "group": "GRP-2002", "network": "HMO"},
}

# (id, family, given, gender, birthDate, plan, member id, coverage status, coverage end)
MEMBERS = [
    ("pat-001", "Rivera", "Ana", "female", "1958-03-14", "gold-ppo", "PCM000001", "active", None),
    ("pat-002", "Okafor", "Daniel", "male", "1947-11-02", "gold-ppo", "PCM000002", "active", None),
    ("pat-003", "Chen", "Mei", "female", "1985-06-21", "silver-hmo", "PCM000003", "active", None),
    ("pat-004", "Johansson", "Erik", "male", "1972-01-30", "silver-hmo", "PCM000004", "active", None),
    ("pat-005", "Patel", "Priya", "female", "1990-09-09", "gold-ppo", "PCM000005", "active", None),
    ("pat-006", "Brown", "Marcus", "male", "2012-04-17", "silver-hmo", "PCM000006", "active", None),
    ("pat-007", "Nguyen", "Linh", "female", "1939-12-25", "gold-ppo", "PCM000007", "active", None),
    ("pat-008", "Garcia", "Luis", "male", "1966-07-04", "silver-hmo", "PCM000008", "active", None),
    ("pat-009", "Smith", "Olivia", "female", "2001-02-11", "gold-ppo", "PCM000009", "active", None),
    ("pat-010", "Kowalski", "Jan", "male", "1955-05-05", "silver-hmo", "PCM000010", "cancelled", "2025-12-31"),
    ("pat-011", "Haddad", "Nadia", "female", "1979-10-12", "gold-ppo", "PCM000011", "active", None),
    ("pat-012", "Williams", "Jerome", "male", "1950-08-19", "gold-ppo", "PCM000012", "active", None),
]

PROVIDER_ORGS = [
    ("org-clinic", "Precert Demo Family Clinic", npi("23456789")),
    ("org-hospital", "Precert Demo General Hospital", npi("34567890")),
]

PRACTITIONERS = [
    ("prac-001", "Alvarez", "Sofia", npi("45678901"), "org-clinic", "207Q00000X", "Family Medicine"),
    ("prac-002", "Kim", "David", npi("56789012"), "org-hospital", "207X00000X", "Orthopaedic Surgery"),
    ("prac-003", "Osei", "Grace", npi("67890123"), "org-hospital", "207RP1001X", "Pulmonary Disease"),
    ("prac-004", "Lindqvist", "Hanna", npi("78901234"), "org-clinic", "2084P0800X", "Psychiatry"),
]


def payer_organization() -> dict:
    return {
        "resourceType": "Organization",
        "id": PAYER_ID,
        "identifier": [
            {"system": PAYER_ID_SYSTEM, "value": "PRECERT01"},
            # The insurer identifier used by the Da Vinci PAS examples.
            {"system": NPI, "value": "789312"},
        ],
        "active": True,
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "pay", "display": "Payer"}]}],
        "name": "Precert Demo Health Plan",
        "alias": ["MARYLAND CAPITAL INSURANCE COMPANY"],
        "telecom": [{"system": "phone", "value": "+1-555-0100", "use": "work"}],
    }


def _coverage(cid: str, patient_ref: str, member_id: str, plan_key: str, status: str, end: str | None, start: str = "2024-01-01") -> dict:
    plan = PLANS[plan_key]
    period = {"start": start}
    if end:
        period["end"] = end
    return {
        "resourceType": "Coverage",
        "id": cid,
        "identifier": [{"type": {"coding": [{"system": MB, "code": "MB"}]}, "system": MEMBER_ID_SYSTEM, "value": member_id}],
        "status": status,
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIP", "display": "health insurance plan policy"}]},
        "subscriber": {"reference": patient_ref},
        "subscriberId": member_id,
        "beneficiary": {"reference": patient_ref},
        "relationship": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "code": "self"}]},
        "period": period,
        "payor": [{"reference": f"Organization/{PAYER_ID}", "display": "Precert Demo Health Plan"}],
        "class": [
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "group"}]}, "value": plan["group"], "name": plan["name"]},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan"}]}, "value": plan["plan"], "name": plan["name"]},
        ],
    }


def sandbox_resources() -> list[dict]:
    out: list[dict] = [payer_organization()]
    for pid, family, given, gender, birth, plan, member_id, status, end in MEMBERS:
        out.append({
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"type": {"coding": [{"system": MB, "code": "MB"}]}, "system": MEMBER_ID_SYSTEM, "value": member_id}],
            "active": True,
            "name": [{"use": "official", "family": family, "given": [given]}],
            "gender": gender,
            "birthDate": birth,
            "address": [{"line": ["100 Demo Street"], "city": "Baltimore", "state": "MD", "postalCode": "21201", "country": "US"}],
        })
        out.append(_coverage(f"cov-{pid[4:]}", f"Patient/{pid}", member_id, plan, status, end))
    # The member of the Da Vinci PAS examples.
    out.append({
        "resourceType": "Patient",
        "id": "pas-example-subscriber",
        "identifier": [{"system": "http://example.org/MIN", "value": "12345678901"}],
        "name": [{"family": "SMITH", "given": ["JOE"]}],
        "gender": "male",
        "birthDate": "1970-01-01",
    })
    # Covered since 2000, so the examples' 2005 service dates fall inside the coverage period.
    out.append(_coverage("cov-pas-example", "Patient/pas-example-subscriber", "12345678901", "gold-ppo", "active", None, start="2000-01-01")
               | {"identifier": [{"system": "http://example.org/MIN", "value": "12345678901"}]})
    for oid, name, org_npi in PROVIDER_ORGS:
        out.append({
            "resourceType": "Organization",
            "id": oid,
            "identifier": [{"system": NPI, "value": org_npi}],
            "active": True,
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov", "display": "Healthcare Provider"}]}],
            "name": name,
            "address": [{"line": ["200 Clinic Way"], "city": "Baltimore", "state": "MD", "postalCode": "21202", "country": "US"}],
        })
    for prid, family, given, prac_npi, org, taxonomy, specialty in PRACTITIONERS:
        out.append({
            "resourceType": "Practitioner",
            "id": prid,
            "identifier": [{"system": NPI, "value": prac_npi}],
            "active": True,
            "name": [{"use": "official", "family": family, "given": [given], "prefix": ["Dr."]}],
        })
        out.append({
            "resourceType": "PractitionerRole",
            "id": f"role-{prid[5:]}",
            "active": True,
            "practitioner": {"reference": f"Practitioner/{prid}"},
            "organization": {"reference": f"Organization/{org}"},
            "code": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/practitioner-role", "code": "doctor"}]}],
            "telecom": [{"system": "phone", "value": "+1-555-0100", "use": "work"}],  # pd-1: contact details
            "specialty": [{"coding": [{"system": "http://nucc.org/provider-taxonomy", "code": taxonomy, "display": specialty}]}],
        })
    out.append({
        "resourceType": "Location",
        "id": "loc-hospital",
        "status": "active",
        "name": "Precert Demo General Hospital, Main Campus",
        "managingOrganization": {"reference": "Organization/org-hospital"},
        "address": {"line": ["300 Hospital Drive"], "city": "Baltimore", "state": "MD", "postalCode": "21203", "country": "US"},
    })
    return out


def _content(resource: dict) -> bytes:
    return orjson.dumps({k: v for k, v in resource.items() if k != "meta"}, option=orjson.OPT_SORT_KEYS)


async def load_sandbox(state) -> int:
    """Write the sandbox resources that are missing or changed. Returns how many were written."""
    repo = Repository.system(state, "sandbox-loader")
    written = 0
    for resource in sandbox_resources():
        existing = await repo.read(resource["resourceType"], resource["id"])
        if existing is not None and not existing.deleted and _content(existing.resource) == _content(resource):
            continue
        try:
            # Conditional on the version read, so two workers starting together write it once.
            if existing is None:
                await repo.add(resource["resourceType"], resource["id"], dict(resource), reason="sandbox data")
            else:
                await repo.put(resource["resourceType"], resource["id"], dict(resource), existing.version, reason="sandbox data")
        except VersionConflict:
            continue  # another worker starting at the same moment wrote it
        written += 1
    if written:
        log.info("sandbox: wrote %d resources", written)
    return written
