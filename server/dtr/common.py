"""What every DTR operation shares: reading Parameters, the DTR version a caller speaks, and the
extension and code-system names that differ between DTR 2.0.1 and 2.2."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.fhir.errors import FHIRError, bad_request, issue
from server import settings

DTR = "http://hl7.org/fhir/us/davinci-dtr/"
DTR_SD = DTR + "StructureDefinition/"
EXT_QR_CONTEXT = DTR_SD + "qr-context"
EXT_QR_COVERAGE = DTR_SD + "qr-coverage"
EXT_INTENDED_USE = DTR_SD + "intendedUse"
EXT_ORIGIN = DTR_SD + "information-origin"

V201 = "2.0.1"
V22 = "2.2"

# Names of the $questionnaire-package output parameters, per version (dtr.md §2.4).
PACKAGE_PARAM = {V201: "PackageBundle", V22: "packagebundle"}
OUTCOME_PARAM = {V201: "operationOutcome", V22: "outcome"}
# information-origin codes for answers Precert fills in itself.
ORIGIN_CODE = {V201: "auto", V22: "auto-server"}
ORIGIN_SYSTEM = {V201: DTR + "CodeSystem/temp", V22: DTR + "CodeSystem/dtr-informationorigin-codes"}
# DocReason (intendedUse) code system: CRD 2.0.1 "temp", CRD 2.1+ coverage-information-codes.
DOC_REASON_SYSTEM = {V201: "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp",
                     V22: "http://hl7.org/fhir/us/davinci-crd/CodeSystem/coverage-information-codes"}
DOC_REASON_DISPLAY = {
    "withpa": "Include in prior authorization",
    "withclaim": "Include with claim",
    "withorder": "Include with order",
    "retain-doc": "Retain documentation",
}

MAX_PARAMETERS = 200
MAX_CANONICAL = 1000


def default_version() -> str:
    """The DTR version answered when a request does not say (``PRECERT_DTR_VERSION``, default
    2.0.1, which the Inferno DTR test kit and most deployed clients speak)."""
    value = settings.dtr_version() or V201
    return V22 if value.startswith(("2.1", "2.2")) else V201


def requested_version(params: dict | None, query: list[tuple[str, str]]) -> str:
    """The DTR version of the caller: a ``dtr-version`` query parameter, else the version suffix of
    the input Parameters' declared profile (``...|2.2.0``), else the configured default."""
    for key, value in query:
        if key == "dtr-version":
            if value.startswith(("2.1", "2.2")):
                return V22
            if value.startswith("2.0"):
                return V201
            raise bad_request(f"dtr-version '{value[:20]}' is not supported; use 2.0.1 or 2.2", "dtr-version")
    profiles = ((params or {}).get("meta") or {}).get("profile") if isinstance(params, dict) else None
    for profile in profiles if isinstance(profiles, list) else []:
        if isinstance(profile, str) and "|" in profile and profile.startswith(DTR_SD):
            version = profile.rsplit("|", 1)[1]
            if version.startswith(("2.1", "2.2")):
                return V22
            if version.startswith("2.0"):
                return V201
    return default_version()


@dataclass
class Param:
    name: str
    value_key: str | None
    value: object
    resource: dict | None
    index: int


@dataclass
class ParsedParameters:
    params: list[Param] = field(default_factory=list)
    raw: dict = field(default_factory=dict)

    def named(self, *names: str) -> list[Param]:
        wanted = set(names)
        return [p for p in self.params if p.name in wanted]


def parse_parameters(body, operation: str) -> ParsedParameters:
    """A Parameters body, checked for shape; every problem becomes a 400 OperationOutcome."""
    if not isinstance(body, dict):
        raise bad_request(f"${operation} takes a Parameters resource (a JSON object)")
    rtype = body.get("resourceType")
    if rtype != "Parameters":
        raise bad_request(f"${operation} takes a Parameters resource, not {str(rtype)[:40] if rtype else 'a body without resourceType'}", "Parameters")
    raw = body.get("parameter", [])
    if not isinstance(raw, list):
        raise bad_request("Parameters.parameter must be an array", "Parameters.parameter", code="structure")
    if len(raw) > MAX_PARAMETERS:
        raise FHIRError.single(413, "too-costly", f"${operation} accepts at most {MAX_PARAMETERS} parameters")
    out = ParsedParameters(raw=body)
    problems = []
    for i, p in enumerate(raw):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
            problems.append(issue("required", f"{where} needs a name", where))
            continue
        value_keys = [k for k in p if k.startswith("value")]
        resource = p.get("resource")
        if resource is not None and (not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str)):
            problems.append(issue("structure", f"{where} ({p['name'][:40]}) has a resource without resourceType", where))
            continue
        key = value_keys[0] if value_keys else None
        out.params.append(Param(p["name"], key, p.get(key) if key else None, resource, i))
    if problems:
        raise FHIRError(400, problems)
    return out


def canonical_value(p: Param) -> str:
    """A canonical from valueCanonical (or the valueUri / valueString some clients send)."""
    if p.value_key not in ("valueCanonical", "valueUri", "valueUrl", "valueString") or not isinstance(p.value, str):
        raise bad_request(f"parameter '{p.name}' needs a valueCanonical", f"Parameters.parameter[{p.index}]")
    value = p.value.strip()
    if not value or len(value) > MAX_CANONICAL or any(ch.isspace() for ch in value):
        raise bad_request(f"parameter '{p.name}' is not a canonical URL", f"Parameters.parameter[{p.index}]")
    return value


def origin_extension(version: str) -> dict:
    return {"url": EXT_ORIGIN, "extension": [{"url": "source", "valueCode": ORIGIN_CODE[version]}]}
