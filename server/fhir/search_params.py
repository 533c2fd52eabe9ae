"""Search parameters: declared once, used to index on write and to query on read.

Each parameter names the JSON paths it reads. Values are reduced to index keys when a resource is
stored, so a search is one indexed MongoDB query rather than a scan of stored JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
import re
from typing import Any, Iterable


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: str  # token | reference | date | string | uri | number
    paths: tuple[str, ...]
    targets: tuple[str, ...] = ()  # reference: the resource types it may point to
    documentation: str = ""


def P(name: str, type_: str, *paths: str, targets: Iterable[str] = (), doc: str = "") -> SearchParam:
    return SearchParam(name, type_, tuple(paths), tuple(targets), doc)


_REQUEST_COMMON = (
    P("identifier", "token", "identifier"),
    P("patient", "reference", "subject", targets=["Patient"]),
    P("subject", "reference", "subject"),
    P("status", "token", "status"),
    P("encounter", "reference", "encounter", targets=["Encounter"]),
    P("requester", "reference", "requester"),
    P("authored", "date", "authoredOn"),
)

_CANONICAL_COMMON = (
    P("url", "uri", "url"),
    P("version", "token", "version"),
    P("identifier", "token", "identifier"),
    P("status", "token", "status"),
    P("name", "string", "name"),
    P("title", "string", "title"),
    P("date", "date", "date"),
)

SEARCH_PARAMS: dict[str, tuple[SearchParam, ...]] = {
    "Patient": (
        P("identifier", "token", "identifier"),
        P("name", "string", "name.family", "name.given", "name.text"),
        P("family", "string", "name.family"),
        P("given", "string", "name.given"),
        P("birthdate", "date", "birthDate"),
        P("gender", "token", "gender"),
        P("general-practitioner", "reference", "generalPractitioner"),
        P("organization", "reference", "managingOrganization", targets=["Organization"]),
    ),
    "Coverage": (
        P("identifier", "token", "identifier"),
        P("patient", "reference", "beneficiary", targets=["Patient"]),
        P("beneficiary", "reference", "beneficiary", targets=["Patient"]),
        P("subscriber", "reference", "subscriber", targets=["Patient", "RelatedPerson"]),
        P("payor", "reference", "payor", targets=["Organization", "Patient", "RelatedPerson"]),
        P("status", "token", "status"),
        P("type", "token", "type"),
        P("class-value", "string", "class.value"),
        P("subscriber-id", "string", "subscriberId"),
    ),
    "Organization": (
        P("identifier", "token", "identifier"),
        P("name", "string", "name", "alias"),
        P("type", "token", "type"),
        P("active", "token", "active"),
        P("partof", "reference", "partOf", targets=["Organization"]),
    ),
    "Practitioner": (
        P("identifier", "token", "identifier"),
        P("name", "string", "name.family", "name.given", "name.text"),
        P("family", "string", "name.family"),
        P("given", "string", "name.given"),
        P("active", "token", "active"),
    ),
    "PractitionerRole": (
        P("identifier", "token", "identifier"),
        P("practitioner", "reference", "practitioner", targets=["Practitioner"]),
        P("organization", "reference", "organization", targets=["Organization"]),
        P("specialty", "token", "specialty"),
        P("role", "token", "code"),
        P("location", "reference", "location", targets=["Location"]),
        P("active", "token", "active"),
    ),
    "Location": (
        P("identifier", "token", "identifier"),
        P("name", "string", "name", "alias"),
        P("organization", "reference", "managingOrganization", targets=["Organization"]),
        P("status", "token", "status"),
        P("address-postalcode", "string", "address.postalCode"),
    ),
    "Encounter": (
        P("identifier", "token", "identifier"),
        P("patient", "reference", "subject", targets=["Patient"]),
        P("subject", "reference", "subject"),
        P("status", "token", "status"),
        P("class", "token", "class"),
        P("date", "date", "period"),
        P("location", "reference", "location.location", targets=["Location"]),
        P("service-provider", "reference", "serviceProvider", targets=["Organization"]),
    ),
    "Appointment": (
        P("identifier", "token", "identifier"),
        P("patient", "reference", "participant.actor", targets=["Patient"]),
        P("actor", "reference", "participant.actor"),
        P("status", "token", "status"),
        P("date", "date", "start"),
        P("based-on", "reference", "basedOn", targets=["ServiceRequest"]),
        P("service-type", "token", "serviceType"),
    ),
    "ServiceRequest": _REQUEST_COMMON + (
        P("code", "token", "code"),
        P("intent", "token", "intent"),
        P("performer", "reference", "performer"),
    ),
    "DeviceRequest": _REQUEST_COMMON + (
        P("code", "token", "codeCodeableConcept"),
        P("device", "reference", "codeReference", targets=["Device"]),
        P("intent", "token", "intent"),
    ),
    "MedicationRequest": _REQUEST_COMMON + (
        P("code", "token", "medicationCodeableConcept"),
        P("medication", "reference", "medicationReference", targets=["Medication"]),
        P("intent", "token", "intent"),
    ),
    "NutritionOrder": (
        P("identifier", "token", "identifier"),
        P("patient", "reference", "patient", targets=["Patient"]),
        P("status", "token", "status"),
        P("encounter", "reference", "encounter", targets=["Encounter"]),
        P("datetime", "date", "dateTime"),
        P("provider", "reference", "orderer"),
    ),
    "CommunicationRequest": (
        P("identifier", "token", "identifier"),
        P("patient", "reference", "subject", targets=["Patient"]),
        P("subject", "reference", "subject"),
        P("status", "token", "status"),
        P("requester", "reference", "requester"),
        P("authored", "date", "authoredOn"),
    ),
    "Device": (
        P("identifier", "token", "identifier"),
        P("patient", "reference", "patient", targets=["Patient"]),
        P("type", "token", "type"),
        P("status", "token", "status"),
    ),
    "Questionnaire": _CANONICAL_COMMON + (
        P("code", "token", "code", "item.code"),
        P("context-type-value", "token", "useContext.valueCodeableConcept"),
    ),
    "QuestionnaireResponse": (
        P("identifier", "token", "identifier"),
        P("patient", "reference", "subject", targets=["Patient"]),
        P("subject", "reference", "subject"),
        P("status", "token", "status"),
        P("questionnaire", "uri", "questionnaire"),
        P("authored", "date", "authored"),
        P("author", "reference", "author"),
        P("based-on", "reference", "basedOn"),
    ),
    "Library": _CANONICAL_COMMON + (P("type", "token", "type"),),
    "ValueSet": _CANONICAL_COMMON + (P("reference", "uri", "compose.include.system"),),
    "CodeSystem": _CANONICAL_COMMON + (P("system", "uri", "url"),),
    "Claim": (
        P("identifier", "token", "identifier"),
        P("patient", "reference", "patient", targets=["Patient"]),
        P("status", "token", "status"),
        P("use", "token", "use"),
        P("created", "date", "created"),
        P("insurer", "reference", "insurer", targets=["Organization"]),
        P("provider", "reference", "provider", targets=["Practitioner", "PractitionerRole", "Organization"]),
        P("enterer", "reference", "enterer", targets=["Practitioner", "PractitionerRole"]),
        P("priority", "token", "priority"),
        P("encounter", "reference", "item.encounter", targets=["Encounter"]),
    ),
    "ClaimResponse": (
        P("identifier", "token", "identifier"),
        P("patient", "reference", "patient", targets=["Patient"]),
        P("status", "token", "status"),
        P("use", "token", "use"),
        P("created", "date", "created"),
        P("request", "reference", "request", targets=["Claim"]),
        P("insurer", "reference", "insurer", targets=["Organization"]),
        P("requestor", "reference", "requestor", targets=["Practitioner", "PractitionerRole", "Organization"]),
        P("outcome", "token", "outcome"),
        P("disposition", "string", "disposition"),
    ),
    "Task": (
        P("identifier", "token", "identifier"),
        P("patient", "reference", "for", targets=["Patient"]),
        P("subject", "reference", "for"),
        P("status", "token", "status"),
        P("intent", "token", "intent"),
        P("code", "token", "code"),
        P("focus", "reference", "focus"),
        P("owner", "reference", "owner"),
        P("requester", "reference", "requester"),
        P("based-on", "reference", "basedOn"),
        P("authored-on", "date", "authoredOn"),
        P("modified", "date", "lastModified"),
    ),
    "Subscription": (
        P("status", "token", "status"),
        P("url", "uri", "channel.endpoint"),
        P("type", "token", "channel.type"),
        P("criteria", "string", "criteria"),
    ),
    "DocumentReference": (
        P("identifier", "token", "identifier", "masterIdentifier"),
        P("patient", "reference", "subject", targets=["Patient"]),
        P("subject", "reference", "subject"),
        P("status", "token", "status"),
        P("type", "token", "type"),
        P("date", "date", "date"),
        P("author", "reference", "author"),
    ),
    "AuditEvent": (
        P("date", "date", "recorded"),
        P("type", "token", "type"),
        P("subtype", "token", "subtype"),
        P("action", "token", "action"),
        P("outcome", "token", "outcome"),
        P("agent", "reference", "agent.who"),
        P("entity", "reference", "entity.what"),
        P("patient", "reference", "entity.what", targets=["Patient"]),
        P("source", "reference", "source.observer"),
    ),
    "Bundle": (
        P("identifier", "token", "identifier"),
        P("type", "token", "type"),
        P("timestamp", "date", "timestamp"),
    ),
}

COMMON_PARAMS = ("_id", "_lastUpdated")
RESULT_PARAMS = ("_count", "_sort", "_include", "_revinclude", "_total", "_format", "_getpagesoffset", "_summary", "_elements")


def params_for(resource_type: str) -> dict[str, SearchParam]:
    return {p.name: p for p in SEARCH_PARAMS.get(resource_type, ())}


# ---------------------------------------------------------------- extraction


def _walk(value: Any, parts: list[str]) -> Iterable[Any]:
    if not parts:
        if isinstance(value, list):
            yield from value
        elif value is not None:
            yield value
        return
    head, rest = parts[0], parts[1:]
    if isinstance(value, list):
        for item in value:
            yield from _walk(item, parts)
    elif isinstance(value, dict):
        if head in value:
            yield from _walk(value[head], rest)


def values_at(resource: dict, path: str) -> list[Any]:
    return list(_walk(resource, path.split(".")))


def token_keys(value: Any) -> list[str]:
    """Index strings for a token: 'system|code' and the bare 'code' (plus '|code' when no system)."""
    out: list[str] = []

    def add(system: str | None, code: Any) -> None:
        if code is None:
            return
        code = str(code).lower() if isinstance(code, bool) else str(code)
        if system:
            out.append(f"{system}|{code}")
        else:
            out.append(f"|{code}")
        out.append(code)

    if isinstance(value, dict):
        if "coding" in value:
            for coding in value.get("coding") or []:
                if isinstance(coding, dict):
                    add(coding.get("system"), coding.get("code"))
        elif "value" in value and "code" not in value:  # Identifier / ContactPoint
            add(value.get("system"), value.get("value"))
        elif "code" in value:  # Coding
            add(value.get("system"), value.get("code"))
    elif isinstance(value, (str, bool, int)):
        add(None, value)
    return out


def reference_keys(value: Any) -> list[str]:
    """'Type/id' and bare 'id' for a Reference; the canonical or URL for a uri-valued reference."""
    out: list[str] = []
    ref = value.get("reference") if isinstance(value, dict) else value if isinstance(value, str) else None
    if isinstance(ref, str) and ref:
        ref = ref.split("/_history/")[0]
        parts = ref.rstrip("/").split("/")
        if len(parts) >= 2 and not ref.startswith(("#", "urn:")):
            out.append(f"{parts[-2]}/{parts[-1]}")
            out.append(parts[-1])
        out.append(ref)
    if isinstance(value, dict) and isinstance(value.get("identifier"), dict):
        out.extend(f"identifier:{k}" for k in token_keys(value["identifier"]))
    return out


_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$")


def date_range(text: str) -> tuple[datetime, datetime] | None:
    """The instant range a FHIR date/dateTime/instant covers, in UTC."""
    m = _DATE_RE.match(text.strip()) if isinstance(text, str) else None
    if not m:
        return None
    year, month, day, hh, mm, ss, frac, tz = m.groups()
    try:
        if month is None:
            start = datetime(int(year), 1, 1, tzinfo=timezone.utc)
            end = datetime(int(year) + 1, 1, 1, tzinfo=timezone.utc)
        elif day is None:
            start = datetime(int(year), int(month), 1, tzinfo=timezone.utc)
            end = datetime(int(year) + (month == "12"), 1 if month == "12" else int(month) + 1, 1, tzinfo=timezone.utc)
        elif hh is None:
            start = datetime(int(year), int(month), int(day), tzinfo=timezone.utc)
            end = start + timedelta(days=1)
        else:
            offset = timezone.utc
            if tz and tz != "Z":
                sign = 1 if tz[0] == "+" else -1
                offset = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
            micro = int(float(frac) * 1_000_000) if frac else 0
            start = datetime(int(year), int(month), int(day), int(hh), int(mm), int(ss or 0), micro, tzinfo=offset)
            start = start.astimezone(timezone.utc)
            end = start + (timedelta(seconds=1) if ss and not frac else timedelta(microseconds=1) if frac else timedelta(minutes=1))
    except ValueError:
        return None
    return start, end - timedelta(microseconds=1)


def date_keys(value: Any) -> list[dict]:
    if isinstance(value, str):
        rng = date_range(value)
        return [{"lo": rng[0], "hi": rng[1]}] if rng else []
    if isinstance(value, dict) and ("start" in value or "end" in value):
        lo = date_range(value["start"])[0] if isinstance(value.get("start"), str) and date_range(value["start"]) else datetime.min.replace(tzinfo=timezone.utc)
        hi = date_range(value["end"])[1] if isinstance(value.get("end"), str) and date_range(value["end"]) else datetime.max.replace(tzinfo=timezone.utc)
        return [{"lo": lo, "hi": hi}]
    return []


def _normalize_string(text: str) -> str:
    return " ".join(text.lower().split())


def extract_keys(resource_type: str, resource: dict) -> tuple[dict, dict]:
    """(index keys, sort keys) for a resource, per its declared search parameters."""
    keys: dict[str, list] = {}
    sort: dict[str, Any] = {}
    for param in SEARCH_PARAMS.get(resource_type, ()):
        found: list = []
        for path in param.paths:
            for value in values_at(resource, path):
                if param.type == "token":
                    found.extend(token_keys(value))
                elif param.type == "reference":
                    found.extend(reference_keys(value))
                elif param.type == "date":
                    found.extend(date_keys(value))
                elif param.type == "string":
                    if isinstance(value, str):
                        found.append(_normalize_string(value))
                elif param.type == "uri":
                    if isinstance(value, str):
                        found.append(value)
                        if "|" in value:
                            found.append(value.split("|")[0])
        if found:
            keys[param.name] = found
            first = found[0]
            sort[param.name] = first["lo"] if isinstance(first, dict) else first
    return keys, sort
