"""Reading and checking PAS request Bundles ($submit and $inquire).

The checks are those of the PAS request profiles that a payer relies on: a collection Bundle with
identifier and timestamp, the Claim first, every reference resolvable inside the Bundle, no
duplicates, unique sequences. Every problem is collected and reported in one OperationOutcome with
its FHIRPath expression; nothing is stored for a request that fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from server.fhir.errors import FHIRError, issue
from server.fhir.validation import validate_resource
from server.pas.constants import (
    CERT_TYPE_CS, EXT_CERT_TYPE, EXT_INFO_CANCELLED, EXT_INFO_CHANGED, EXT_REQUESTED_SERVICE,
    EXT_CLAIM_ENCOUNTER,
)
from server.pas.versions import request_evidence


@dataclass
class Entry:
    index: int
    full_url: str
    resource: dict

    @property
    def type(self) -> str:
        return self.resource.get("resourceType", "")

    @property
    def id(self) -> str | None:
        return self.resource.get("id")


def unwrap(body: Any) -> dict:
    """The request Bundle, sent bare or as the ``resource`` parameter of a Parameters."""
    if not isinstance(body, dict):
        raise FHIRError.single(400, "structure", "the body must be a PAS request Bundle (a JSON object)")
    if body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            if isinstance(p, dict) and p.get("name") == "resource" and isinstance(p.get("resource"), dict):
                return p["resource"]
        raise FHIRError.single(400, "required", "the Parameters has no 'resource' parameter holding the request Bundle", "Parameters.parameter")
    if body.get("resourceType") != "Bundle":
        got = str(body.get("resourceType"))[:64]
        raise FHIRError.single(400, "invalid", f"expected a PAS request Bundle, got {got}", "resourceType")
    return body


class PasBundle:
    def __init__(self, bundle: dict):
        self.bundle = bundle
        self.entries: list[Entry] = []
        for i, e in enumerate(bundle.get("entry") or []):
            if isinstance(e, dict) and isinstance(e.get("resource"), dict):
                self.entries.append(Entry(i, str(e.get("fullUrl") or ""), e["resource"]))

    @property
    def claim_entry(self) -> Entry | None:
        return self.entries[0] if self.entries and self.entries[0].type == "Claim" else None

    @property
    def claim(self) -> dict:
        return self.claim_entry.resource if self.claim_entry else {}

    @property
    def identifier(self) -> dict:
        ident = self.bundle.get("identifier")
        return ident if isinstance(ident, dict) else {}

    def resolve(self, ref: Any, source: Entry | None = None) -> Entry | None:
        """The entry a Reference (or reference string) points to, by FHIR's Bundle rules."""
        if isinstance(ref, dict):
            ref = ref.get("reference")
        if not isinstance(ref, str) or not ref or ref.startswith("#"):
            return None
        for e in self.entries:
            if e.full_url and e.full_url == ref:
                return e
        if ref.startswith(("urn:uuid:", "urn:oid:")):
            return None
        parts = ref.rstrip("/").split("/")
        if len(parts) < 2:
            return None
        rtype, rid = parts[-2], parts[-1]
        # Relative to the referencing entry's base, then any entry of that type and id.
        if source is not None and source.full_url.startswith("http") and "://" not in ref:
            base = source.full_url.rsplit("/", 2)[0]
            for e in self.entries:
                if e.full_url == f"{base}/{rtype}/{rid}":
                    return e
        for e in self.entries:
            if e.type == rtype and (e.id == rid or e.full_url.endswith(f"/{rtype}/{rid}")):
                return e
        return None

    def resource(self, ref: Any, source: Entry | None = None) -> dict | None:
        e = self.resolve(ref, source or self.claim_entry)
        return e.resource if e else None


def claim_references(claim: dict) -> Iterator[tuple[str, Any]]:
    """(expression, reference) for every reference the PAS Claim makes."""
    for name in ("patient", "insurer", "provider", "enterer", "referral", "facility"):
        if isinstance(claim.get(name), dict):
            yield f"Claim.{name}", claim[name]
    for i, ins in enumerate(claim.get("insurance") or []):
        if isinstance(ins, dict) and isinstance(ins.get("coverage"), dict):
            yield f"Claim.insurance[{i}].coverage", ins["coverage"]
    for i, ct in enumerate(claim.get("careTeam") or []):
        if isinstance(ct, dict) and isinstance(ct.get("provider"), dict):
            yield f"Claim.careTeam[{i}].provider", ct["provider"]
    for i, si in enumerate(claim.get("supportingInfo") or []):
        if isinstance(si, dict) and isinstance(si.get("valueReference"), dict):
            yield f"Claim.supportingInfo[{i}].valueReference", si["valueReference"]
    for i, dx in enumerate(claim.get("diagnosis") or []):
        if isinstance(dx, dict) and isinstance(dx.get("diagnosisReference"), dict):
            yield f"Claim.diagnosis[{i}].diagnosisReference", dx["diagnosisReference"]
    for i, ext in enumerate(claim.get("extension") or []):
        if isinstance(ext, dict) and ext.get("url") == EXT_CLAIM_ENCOUNTER and isinstance(ext.get("valueReference"), dict):
            yield f"Claim.extension[{i}].valueReference", ext["valueReference"]
    for i, item in enumerate(claim.get("item") or []):
        if not isinstance(item, dict):
            continue
        for j, ext in enumerate(item.get("extension") or []):
            if isinstance(ext, dict) and ext.get("url") == EXT_REQUESTED_SERVICE and isinstance(ext.get("valueReference"), dict):
                yield f"Claim.item[{i}].extension[{j}].valueReference", ext["valueReference"]


def _is_local(ref: dict) -> bool:
    value = ref.get("reference")
    return isinstance(value, str) and bool(value) and not value.startswith("#")


def _sequence_issues(claim: dict, element: str, out: list[dict]) -> None:
    seen: dict[Any, int] = {}
    for i, item in enumerate(claim.get(element) or []):
        if not isinstance(item, dict):
            continue
        seq = item.get("sequence")
        if seq in seen:
            out.append(issue("business-rule", f"Claim.{element}[{i}].sequence {seq} repeats Claim.{element}[{seen[seq]}].sequence; sequences must be unique", f"Claim.{element}[{i}].sequence"))
        else:
            seen[seq] = i


def check_request(body: Any, kind: str = "submit") -> tuple[PasBundle, str | None]:
    """Parse and check a PAS request. Returns (bundle, the version the request itself implies, or
    None) or raises one FHIRError naming every problem found."""
    bundle = unwrap(body)
    # Structure and datatypes first: the checks below assume a well-formed Bundle.
    validate_resource(bundle, "Bundle")
    problems: list[dict] = []
    if bundle.get("type") != "collection":
        problems.append(issue("value", f"Bundle.type must be 'collection', not '{str(bundle.get('type'))[:40]}'", "Bundle.type"))
    ident = bundle.get("identifier")
    if not isinstance(ident, dict) or not ident.get("value"):
        problems.append(issue("required", "Bundle.identifier with a value is required: it identifies the request and makes retries safe", "Bundle.identifier"))
    if not bundle.get("timestamp"):
        problems.append(issue("required", "Bundle.timestamp is required", "Bundle.timestamp"))
    raw_entries = bundle.get("entry") or []
    if not raw_entries:
        problems.append(issue("required", "Bundle.entry is empty: the first entry must be the Claim", "Bundle.entry"))
        raise FHIRError(400, problems)
    for i, e in enumerate(raw_entries):
        if not e.get("fullUrl"):
            problems.append(issue("required", f"Bundle.entry[{i}].fullUrl is required", f"Bundle.entry[{i}].fullUrl"))
        if not isinstance(e.get("resource"), dict):
            problems.append(issue("required", f"Bundle.entry[{i}].resource is required", f"Bundle.entry[{i}].resource"))
        for forbidden in ("request", "response", "search"):
            if forbidden in e:
                problems.append(issue("structure", f"Bundle.entry[{i}].{forbidden} is not allowed in a PAS request", f"Bundle.entry[{i}].{forbidden}"))
    pas = PasBundle(bundle)
    seen_urls: dict[str, int] = {}
    seen_ids: dict[str, int] = {}
    for e in pas.entries:
        if e.full_url:
            if e.full_url in seen_urls:
                problems.append(issue("duplicate", f"Bundle.entry[{e.index}].fullUrl repeats Bundle.entry[{seen_urls[e.full_url]}]", f"Bundle.entry[{e.index}].fullUrl"))
            seen_urls.setdefault(e.full_url, e.index)
        if e.id:
            key = f"{e.type}/{e.id}"
            if key in seen_ids:
                problems.append(issue("duplicate", f"Bundle.entry[{e.index}] repeats {key} (Bundle.entry[{seen_ids[key]}]); each resource may appear once", f"Bundle.entry[{e.index}].resource"))
            seen_ids.setdefault(key, e.index)
    claim_entry = pas.claim_entry
    if claim_entry is None:
        first = pas.entries[0].type if pas.entries else "nothing"
        problems.append(issue("invalid", f"the first entry must be the Claim, not {first[:40]}", "Bundle.entry[0].resource"))
        raise FHIRError(400, problems)
    claim = claim_entry.resource
    if claim.get("use") != "preauthorization":
        problems.append(issue("value", f"Claim.use must be 'preauthorization', not '{str(claim.get('use'))[:40]}'", "Claim.use"))
    if kind == "submit" and not claim.get("item"):
        problems.append(issue("required", "Claim.item is required: a prior-authorization request names the services asked for", "Claim.item"))
    for expr, ref in claim_references(claim):
        if _is_local(ref) and pas.resolve(ref, claim_entry) is None:
            problems.append(issue("not-found", f"{expr} refers to '{str(ref.get('reference'))[:120]}', which is not in the Bundle; every referenced resource must be included", expr))
    if kind == "submit":
        for element in ("item", "supportingInfo", "careTeam", "diagnosis"):
            _sequence_issues(claim, element, problems)
        insurance = claim.get("insurance") or []
        if insurance and not any(isinstance(i, dict) and i.get("focal") is True for i in insurance):
            problems.append(issue("business-rule", "one Claim.insurance must be focal (the coverage this request is for)", "Claim.insurance"))
    coverage_entry = None
    for ins in claim.get("insurance") or []:
        if isinstance(ins, dict) and ins.get("focal") is True:
            coverage_entry = pas.resolve(ins.get("coverage"), claim_entry)
    if coverage_entry is not None and coverage_entry.type != "Coverage":
        problems.append(issue("invalid", f"the focal Claim.insurance.coverage refers to a {coverage_entry.type}, not a Coverage", "Claim.insurance.coverage"))
    patient = pas.resolve(claim.get("patient"), claim_entry)
    if patient is not None and patient.type != "Patient":
        problems.append(issue("invalid", f"Claim.patient refers to a {patient.type}, not a Patient", "Claim.patient"))
    if problems:
        raise FHIRError(400, problems)
    return pas, request_evidence(bundle)[0]


# ---------------------------------------------------------------------- item helpers
def ext_value(element: dict, url: str) -> Any:
    for ext in element.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            for key, value in ext.items():
                if key.startswith("value"):
                    return value
            return ext
    return None


def item_cancelled(item: dict) -> bool:
    for ext in item.get("modifierExtension") or []:
        if isinstance(ext, dict) and ext.get("url") == EXT_INFO_CANCELLED and ext.get("valueBoolean") is True:
            return True
    cert = ext_value(item, EXT_CERT_TYPE)
    return isinstance(cert, dict) and any(c.get("code") == "3" for c in cert.get("coding") or [])


def item_change(item: dict) -> str | None:
    value = ext_value(item, EXT_INFO_CHANGED)
    return value if isinstance(value, str) else None


def claim_cancelled(claim: dict) -> bool:
    cert = ext_value(claim, EXT_CERT_TYPE)
    return isinstance(cert, dict) and any(c.get("code") == "3" and c.get("system", CERT_TYPE_CS) == CERT_TYPE_CS for c in cert.get("coding") or [])


def prior_claim_reference(claim: dict) -> dict | None:
    for rel in claim.get("related") or []:
        if isinstance(rel, dict) and isinstance(rel.get("claim"), dict):
            return rel["claim"]
    return None
