"""Which PAS version a request speaks, so that the answer is valid for it.

One endpoint serves PAS 2.0.1 and 2.2.1 clients. The version is decided, first match wins, from:

1. the pinned base URL the client called (``/fhir/pas-2.0.1/...``, ``/fhir/pas-2.2.1/...``);
2. the request itself: a versioned profile in ``meta.profile`` (``...|2.0.1``), else elements and
   extensions that only one version defines or that one version's profiles forbid (see
   :func:`request_evidence`); evidence for both versions at once is no evidence;
3. for ``$inquire``, the version the inquired-about request was answered in;
4. the calling client's registered default (``pas_version`` of its SMART registration);
5. the server default, ``PRECERT_PAS_VERSION`` (2.2.1 unless set).
"""

from __future__ import annotations

from typing import Iterable

from server.pas.constants import PAS, SD, V201, V221
from server import settings

VERSIONS = (V201, V221)

# Extensions and profiles that exist only in 2.2.1 (from the two packages' StructureDefinitions).
ONLY_221 = {SD + name for name in (
    "extension-TransmissionIdentifiers", "extension-admissionDates", "extension-dischargeDate",
    "extension-documentInformation", "extension-itemCategory", "extension-revenueCode",
    "extension-authorizedProviderType", "extension-claimResponseReviewer", "profile-documentreference",
    "profile-quantity", "profile-subscription",
)}
# ... and only in 2.0.1.
ONLY_201 = {SD + "extension-paLineNumber"}

MEMBER_TYPE = ("http://terminology.hl7.org/CodeSystem/v2-0203", "MB")


def server_default() -> str:
    value = settings.pas_version()
    return value if value in VERSIONS else V221


def pinned(path_version: str | None) -> str | None:
    return path_version if path_version in VERSIONS else None


def _walk(value, urls: set[str], profiles: list[str]) -> None:
    if isinstance(value, dict):
        url = value.get("url")
        if isinstance(url, str):
            urls.add(url)
        meta = value.get("meta")
        if isinstance(meta, dict):
            profiles.extend(p for p in _l(meta.get("profile")) if isinstance(p, str))
        for v in value.values():
            if isinstance(v, (dict, list)):
                _walk(v, urls, profiles)
    elif isinstance(value, list):
        for v in value:
            _walk(v, urls, profiles)


def _declared(profiles: Iterable[str]) -> str | None:
    for p in profiles:
        if not p.startswith(PAS):
            continue
        if p.endswith("|2.0.1") or p.endswith("|2.0.0"):
            return V201
        if p.endswith(("|2.2.1", "|2.2.0", "|2.1.0")):
            return V221
    return None


def _d(value) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value) -> list:
    return value if isinstance(value, list) else []


def _resources(bundle: dict) -> list[dict]:
    return [e["resource"] for e in _l(bundle.get("entry")) if isinstance(e, dict) and isinstance(e.get("resource"), dict)]


def request_evidence(bundle: dict) -> tuple[str | None, list[str]]:
    """(version, reasons) that the request Bundle itself implies, or (None, reasons) when it says
    nothing or contradicts itself."""
    urls: set[str] = set()
    profiles: list[str] = []
    _walk(bundle, urls, profiles)
    declared = _declared(profiles)
    if declared:
        return declared, [f"a profile declares version {declared}"]
    for221: list[str] = [f"uses {u.rsplit('/', 1)[-1]} (2.2.1 only)" for u in sorted(urls & ONLY_221)]
    for201: list[str] = [f"uses {u.rsplit('/', 1)[-1]} (2.0.1 only)" for u in sorted(urls & ONLY_201)]
    # The request is not yet known to be well-formed: every element is read defensively.
    resources = _resources(bundle)
    claims = [r for r in resources if r.get("resourceType") == "Claim"]
    claim = claims[0] if claims else {}
    if len(claims) == 2:
        for221.append("carries the prior Claim beside the update (2.2.1)")
    header = {e.get("url") for e in _l(claim.get("extension")) if isinstance(e, dict)}
    if header & {SD + "extension-authorizationNumber", SD + "extension-administrationReferenceNumber"}:
        for221.append("authorization or case number on the Claim header (2.2.1)")
    for item in _l(claim.get("item")):
        if not isinstance(item, dict):
            continue
        item_exts = {e.get("url") for e in _l(item.get("extension")) if isinstance(e, dict)}
        if SD + "extension-communicatedDiagnosis" in item_exts:
            for221.append("communicatedDiagnosis on a Claim item (2.2.1)")
        if SD + "extension-reviewAction" in item_exts:
            for201.append("reviewAction on a Claim item (2.0.1)")
    for info in _l(claim.get("supportingInfo")):
        if not isinstance(info, dict):
            continue
        codes = {c.get("code") for c in _l(_d(info.get("category")).get("coding")) if isinstance(c, dict)}
        if "dischargeDates" in codes and "timingPeriod" in info:
            for201.append("a discharge period (2.2.1 allows a date only)")
    coverage = None
    for ins in _l(claim.get("insurance")):
        if isinstance(ins, dict) and ins.get("focal") is True:
            ref = _d(ins.get("coverage")).get("reference")
            coverage = next((r for r in resources if r.get("resourceType") == "Coverage"
                             and isinstance(ref, str) and ref.endswith(f"Coverage/{r.get('id')}")), None)
    if coverage is None:
        coverage = next((r for r in resources if r.get("resourceType") == "Coverage"), None)
    if coverage is not None:
        typed = any(
            isinstance(i, dict) and any(
                isinstance(c, dict) and (c.get("system"), c.get("code")) == MEMBER_TYPE for c in _l(_d(i.get("type")).get("coding")))
            for i in _l(coverage.get("identifier"))
        )
        if not typed:
            for201.append("the Coverage has no member identifier typed MB (2.2.1 requires one)")
        if len(_l(coverage.get("payor"))) > 1:
            for201.append("the Coverage names more than one payor (2.2.1 allows one)")
    if for221 and not for201:
        return V221, for221
    if for201 and not for221:
        return V201, for201
    return None, for221 + for201


def negotiate(*, pinned_version: str | None, evidence: str | None, case_version: str | None = None,
              client_default: str | None = None) -> str:
    for candidate in (pinned_version, evidence, case_version, client_default):
        if candidate in VERSIONS:
            return candidate
    return server_default()
