"""Code systems as rule authors name them, and how incoming Codings are matched to them.

EHRs and the Da Vinci examples spell the same code system several ways (HCPCS alone has three URLs in
circulation), so rules name a system by a short alias and every incoming Coding is normalised to the
alias before lookup. CPT is HCPCS Level I, so ``cpt`` and ``hcpcs`` are one family: a rule written for
``cpt 99213`` matches a Coding that says HCPCS, and the other way round.
"""

from __future__ import annotations

# alias -> the URIs that mean it. The first URI is the canonical one used in output.
SYSTEMS: dict[str, tuple[str, ...]] = {
    "cpt": ("http://www.ama-assn.org/go/cpt", "https://www.ama-assn.org/go/cpt", "urn:oid:2.16.840.1.113883.6.12"),
    "hcpcs": (
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "https://bluebutton.cms.gov/resources/codesystem/hcpcs",
        "http://terminology.hl7.org/CodeSystem/HCPCS",
        "urn:oid:2.16.840.1.113883.6.285",
    ),
    "icd10pcs": ("http://www.cms.gov/Medicare/Coding/ICD10", "https://www.cms.gov/Medicare/Coding/ICD10", "urn:oid:2.16.840.1.113883.6.4"),
    "icd10cm": ("http://hl7.org/fhir/sid/icd-10-cm", "urn:oid:2.16.840.1.113883.6.90"),
    "rxnorm": ("http://www.nlm.nih.gov/research/umls/rxnorm", "urn:oid:2.16.840.1.113883.6.88"),
    "ndc": ("http://hl7.org/fhir/sid/ndc", "urn:oid:2.16.840.1.113883.6.69"),
    "loinc": ("http://loinc.org", "urn:oid:2.16.840.1.113883.6.1"),
    "snomed": ("http://snomed.info/sct", "urn:oid:2.16.840.1.113883.6.96"),
    "x12-service-type": ("https://codesystem.x12.org/005010/1365", "http://codesystem.x12.org/005010/1365"),
}

# Aliases that share one code space.
FAMILY = {"cpt": "procedure", "hcpcs": "procedure"}

_BY_URI = {uri.lower().rstrip("/"): alias for alias, uris in SYSTEMS.items() for uri in uris}


def alias_for(system: str | None) -> str | None:
    """The alias for a system URI (or an alias itself), or None when the system is unknown."""
    if not system or not isinstance(system, str):
        return None
    s = system.strip()
    if s in SYSTEMS:
        return s
    return _BY_URI.get(s.lower().rstrip("/"))


def family(alias: str) -> str:
    return FAMILY.get(alias, alias)


def system_uri(alias_or_uri: str) -> str:
    return SYSTEMS[alias_or_uri][0] if alias_or_uri in SYSTEMS else alias_or_uri


def normalise_code(alias: str, code: str) -> str:
    code = code.strip()
    if alias in ("cpt", "hcpcs", "icd10pcs", "icd10cm"):
        code = code.upper()
        if alias == "icd10cm":
            code = code.replace(".", "")
    if alias == "ndc":
        code = code.replace("-", "")
    return code


def coding_key(coding: dict) -> tuple[str, str] | None:
    """(family, normalised code) for an incoming Coding, or None when it cannot be matched.

    A Coding without a system is matched as a procedure code (CPT/HCPCS), the common case for PAS
    Claim items written by hand; one with an unknown system is not matched.
    """
    code = coding.get("code") if isinstance(coding, dict) else None
    if not isinstance(code, str) or not code.strip():
        return None
    system = coding.get("system")
    if system is not None and not isinstance(system, str):
        return None
    alias = alias_for(system) if system else "hcpcs"
    if alias is None:
        return None
    return family(alias), normalise_code(alias, code)


def in_range(code: str, low: str, high: str) -> bool:
    """Alphanumeric range check for codes of one shape (``K0001``-``K0009``, ``70551``-``70553``)."""
    return len(code) == len(low) == len(high) and low <= code <= high
