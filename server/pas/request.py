"""Reading and checking PAS request Bundles ($submit and $inquire).

A request is checked twice, and every problem of both is reported in one OperationOutcome with its
FHIRPath expression; nothing is stored for a request that fails:

1. against the PAS request profile of its version (``profile-pas-request-bundle`` for ``$submit``,
   ``profile-pas-inquiry-request-bundle`` for ``$inquire``, with the Claim and every entry against
   the profiles they slice in) by Precert's own validator (:mod:`server.fhir.profiles`). This replaces
   the generic ``fhir.resources`` models here: on the PAS Referral example it is the stricter of the two
   (cardinality, fixed values, slicing, bindings, invariants) and a model pass on top would only add
   time (see docs/validation.md). Only errors refuse a request: a profile of a package Precert does not
   ship (US Core) is a warning and its element is checked against its base type;
2. for what a payer relies on beyond the profiles: the Claim first, every reference resolvable
   inside the Bundle, no duplicates, unique sequences, one focal insurance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

from server.fhir import profiles
from server.fhir.errors import FHIRError, issue
from server.pas.constants import (
    CERT_TYPE_CS, EXT_CERT_TYPE, EXT_INFO_CANCELLED, EXT_INFO_CHANGED, EXT_REQUESTED_SERVICE,
    EXT_CLAIM_ENCOUNTER, SD,
)
from server.pas.versions import VERSIONS, negotiate, request_evidence

log = logging.getLogger("precert.pas")
# What an inquiry is matched on: these references must resolve in an inquiry too.
INQUIRY_KEYS = ("Claim.patient", "Claim.insurer", "Claim.provider", "Claim.insurance")
REQUEST_PROFILES = {"submit": SD + "profile-pas-request-bundle", "inquire": SD + "profile-pas-inquiry-request-bundle"}


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
        raw = bundle.get("entry")
        for i, e in enumerate(raw if isinstance(raw, list) else []):
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


def _items(value: Any) -> list:
    """An array element's items; nothing for a value of another type (the profile check reports it)."""
    return value if isinstance(value, list) else []


def claim_references(claim: dict) -> Iterator[tuple[str, Any]]:
    """(expression, reference) for every reference the PAS Claim makes."""
    for name in ("patient", "insurer", "provider", "enterer", "referral", "facility"):
        if isinstance(claim.get(name), dict):
            yield f"Claim.{name}", claim[name]
    for i, ins in enumerate(_items(claim.get("insurance"))):
        if isinstance(ins, dict) and isinstance(ins.get("coverage"), dict):
            yield f"Claim.insurance[{i}].coverage", ins["coverage"]
    for i, ct in enumerate(_items(claim.get("careTeam"))):
        if isinstance(ct, dict) and isinstance(ct.get("provider"), dict):
            yield f"Claim.careTeam[{i}].provider", ct["provider"]
    for i, si in enumerate(_items(claim.get("supportingInfo"))):
        if isinstance(si, dict) and isinstance(si.get("valueReference"), dict):
            yield f"Claim.supportingInfo[{i}].valueReference", si["valueReference"]
    for i, dx in enumerate(_items(claim.get("diagnosis"))):
        if isinstance(dx, dict) and isinstance(dx.get("diagnosisReference"), dict):
            yield f"Claim.diagnosis[{i}].diagnosisReference", dx["diagnosisReference"]
    for i, ext in enumerate(_items(claim.get("extension"))):
        if isinstance(ext, dict) and ext.get("url") == EXT_CLAIM_ENCOUNTER and isinstance(ext.get("valueReference"), dict):
            yield f"Claim.extension[{i}].valueReference", ext["valueReference"]
    for i, item in enumerate(_items(claim.get("item"))):
        if not isinstance(item, dict):
            continue
        for j, ext in enumerate(_items(item.get("extension"))):
            if isinstance(ext, dict) and ext.get("url") == EXT_REQUESTED_SERVICE and isinstance(ext.get("valueReference"), dict):
                yield f"Claim.item[{i}].extension[{j}].valueReference", ext["valueReference"]


def _is_local(ref: dict) -> bool:
    value = ref.get("reference")
    return isinstance(value, str) and bool(value) and not value.startswith("#")


def _sequence_issues(claim: dict, element: str, out: list[dict]) -> None:
    seen: dict[Any, int] = {}
    for i, item in enumerate(_items(claim.get(element))):
        if not isinstance(item, dict):
            continue
        seq = item.get("sequence")
        if not isinstance(seq, (int, str)):
            continue  # the profile check reports a sequence of the wrong type
        if seq in seen:
            out.append(issue("business-rule", f"Claim.{element}[{i}].sequence {seq} repeats Claim.{element}[{seen[seq]}].sequence; sequences must be unique", f"Claim.{element}[{i}].sequence"))
        else:
            seen[seq] = i


def profile_version(evidence: str | None, pinned: str | None, client_default: str | None) -> str | None:
    """The PAS version a request is checked against: the one it is answered in when the client says
    (pinned base, the request itself, its registered default); None, meaning "either shipped version",
    when only the server default would decide, so that a client that never said which version it
    speaks is not refused for speaking the other one."""
    if not any(v in VERSIONS for v in (pinned, evidence, client_default)):
        return None
    return negotiate(pinned_version=pinned, evidence=evidence, client_default=client_default)


def profile_problems(bundle: dict, kind: str, version: str | None) -> list[dict]:
    """The errors the PAS request profile of ``version`` (or of either version) finds in ``bundle``."""
    package = f"hl7.fhir.us.davinci-pas-{version}" if version else None
    try:
        outcome = profiles.validate(bundle, REQUEST_PROFILES[kind], package)
    except profiles.TooCostly as exc:
        raise FHIRError.single(400, "too-costly", str(exc)) from None
    found = profiles.errors(outcome)
    if kind == "inquire":
        # An inquiry writes nothing and is matched on its identifiers, which the payer checks below
        # insist on: a profile rule it breaks is noted, not refused, unless the request is malformed.
        tolerated = [i for i in found if _keys(i) and all(_tolerated_in_inquiry(k) for k in _keys(i))]
        if tolerated:
            log.warning("inquiry breaks %d rule(s) of the PAS inquiry profile (%s); answered anyway", len(tolerated),
                        ", ".join(sorted({k for i in tolerated for k in _keys(i)})))
        found = [i for i in found if i not in tolerated]
    return found


# Profile rules an inquiry may break and still be answered: what is missing, extra or out of place
# (cardinality, slices, invariants).
# Never what is malformed (a wrong type, an unknown element) or what says what the request is (a
# fixed or pattern value such as Claim.use = preauthorization).
INQUIRY_TOLERATED = frozenset({"cardinality", "slice-cardinality", "extension-context", "binding",
                               "reference-target", "slice-closed", "slice-order", "max-length", "min-value", "max-value"})


def _tolerated_in_inquiry(key: str) -> bool:
    # An invariant's issue is keyed by its constraint key (us-core-15, ...): a rule about what must
    # be present together, tolerated as cardinality is.
    return key in INQUIRY_TOLERATED or key not in profiles.KEYS


def _keys(found: dict) -> set[str]:
    return {c.get("code") for c in (found.get("details") or {}).get("coding", []) if c.get("system") == profiles.KEY_SYSTEM}


def check_request(body: Any, kind: str = "submit", *, pinned: str | None = None,
                  client_default: str | None = None) -> tuple[PasBundle, str | None]:
    """Parse and check a PAS request. Returns (bundle, the version the request itself implies, or
    None) or raises one FHIRError naming every problem found."""
    bundle = unwrap(body)
    try:
        profiles.check_cost(bundle)  # bounded work before anything walks the request
    except profiles.TooCostly as exc:
        raise FHIRError.single(400, "too-costly", str(exc)) from None
    evidence = request_evidence(bundle)[0]
    problems = profile_problems(bundle, kind, profile_version(evidence, pinned, client_default))
    if bundle.get("type") != "collection":
        problems.append(issue("value", f"Bundle.type must be 'collection', not '{str(bundle.get('type'))[:40]}'", "Bundle.type"))
    ident = bundle.get("identifier")
    if not isinstance(ident, dict) or not ident.get("value"):
        problems.append(issue("required", "Bundle.identifier with a value is required: it identifies the request and makes retries safe", "Bundle.identifier"))
    if not bundle.get("timestamp"):
        problems.append(issue("required", "Bundle.timestamp is required", "Bundle.timestamp"))
    raw_entries = bundle.get("entry") if isinstance(bundle.get("entry"), list) else []
    if not raw_entries:
        problems.append(issue("required", "Bundle.entry is empty: the first entry must be the Claim", "Bundle.entry"))
        raise FHIRError(400, problems)
    for i, e in enumerate(raw_entries):
        if not isinstance(e, dict):
            continue  # reported by the profile check
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
            if kind == "inquire" and not expr.startswith(INQUIRY_KEYS):
                # An inquiry is a query by example: PAS requires every referenced resource to be
                # included only in a request ($submit, spec-67), and an inquiry is matched on the
                # member, the provider and the identifiers, never on supporting documents, diagnoses
                # or care team. Such a reference left unresolved is noted, not refused.
                log.warning("inquiry %s refers to a resource not in the Bundle; matched without it", expr)
                continue
            problems.append(issue("not-found", f"{expr} refers to '{str(ref.get('reference'))[:120]}', which is not in the Bundle; every referenced resource must be included", expr))
    if kind == "submit":
        for element in ("item", "supportingInfo", "careTeam", "diagnosis"):
            _sequence_issues(claim, element, problems)
        insurance = _items(claim.get("insurance"))
        if insurance and not any(isinstance(i, dict) and i.get("focal") is True for i in insurance):
            problems.append(issue("business-rule", "one Claim.insurance must be focal (the coverage this request is for)", "Claim.insurance"))
    coverage_entry = None
    for ins in _items(claim.get("insurance")):
        if isinstance(ins, dict) and ins.get("focal") is True:
            coverage_entry = pas.resolve(ins.get("coverage"), claim_entry)
    if coverage_entry is not None and coverage_entry.type != "Coverage":
        problems.append(issue("invalid", f"the focal Claim.insurance.coverage refers to a {coverage_entry.type}, not a Coverage", "Claim.insurance.coverage"))
    patient = pas.resolve(claim.get("patient"), claim_entry)
    if patient is not None and patient.type != "Patient":
        problems.append(issue("invalid", f"Claim.patient refers to a {patient.type}, not a Patient", "Claim.patient"))
    if problems:
        raise FHIRError(400, problems)
    return pas, evidence


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
