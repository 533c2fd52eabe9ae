"""``ValueSet/$expand`` for the value sets the DTR templates bind (DTR payer SHALL).

Every Precert value set enumerates its codes, so expansion is a filter over the compose: the
current version (or ``valueSetVersion``), active codes only, ``expansion.timestamp`` = now. Value
sets stored through the REST API with enumerated ``compose`` are expanded the same way.
"""

from __future__ import annotations

import uuid

from questionnaires.catalog import expansion_contains, get_catalog
from server.dtr.common import parse_parameters
from server.fhir.errors import FHIRError, bad_request, not_found
from server.fhir.operations import OperationCall, operation
from server.fhir.repository import Repository
from server.fhir.responses import fhir_response
from server.storage import fhir_instant, utcnow

DEFINITION = {
    "resourceType": "OperationDefinition",
    "id": "ValueSet-expand",
    "url": "http://hl7.org/fhir/OperationDefinition/ValueSet-expand",
    "name": "Expand",
    "status": "active",
    "kind": "operation",
    "code": "expand",
    "resource": ["ValueSet"],
    "system": False,
    "type": True,
    "instance": True,
    "parameter": [
        {"name": "url", "use": "in", "min": 0, "max": "1", "type": "uri"},
        {"name": "valueSetVersion", "use": "in", "min": 0, "max": "1", "type": "string"},
        {"name": "filter", "use": "in", "min": 0, "max": "1", "type": "string"},
        {"name": "offset", "use": "in", "min": 0, "max": "1", "type": "integer"},
        {"name": "count", "use": "in", "min": 0, "max": "1", "type": "integer"},
        {"name": "return", "use": "out", "min": 1, "max": "1", "type": "ValueSet"},
    ],
}
MAX_COUNT = 1000


def expand(valueset: dict, text_filter: str | None = None, offset: int = 0, count: int | None = None) -> dict:
    contains = expansion_contains(valueset)
    if any(inc.get("filter") or inc.get("valueSet") or not inc.get("concept") for inc in valueset.get("compose", {}).get("include", [])):
        raise FHIRError.single(422, "too-costly", f"ValueSet {valueset.get('url', '')[:200]} is not an enumerated value set; Precert cannot expand it")
    if text_filter:
        needle = text_filter.lower()
        contains = [c for c in contains if needle in c["code"].lower() or needle in c.get("display", "").lower()]
    total = len(contains)
    page = contains[offset: offset + count if count is not None else None]
    expansion = {"identifier": f"urn:uuid:{uuid.uuid4()}", "timestamp": fhir_instant(utcnow()), "total": total}
    if offset:
        expansion["offset"] = offset
    parameters = []
    if text_filter:
        parameters.append({"name": "filter", "valueString": text_filter})
    if parameters:
        expansion["parameter"] = parameters
    expansion["contains"] = page
    out = {k: v for k, v in valueset.items() if k not in ("meta", "expansion")}
    out["expansion"] = expansion
    return out


def _int(name: str, text: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise bad_request(f"{name} must be a whole number", name) from None
    if value < 0:
        raise bad_request(f"{name} must not be negative", name)
    return value


async def _expand(call: OperationCall):
    args: dict[str, str] = {}
    for key, value in call.query:
        if key in ("url", "valueSetVersion", "filter", "offset", "count"):
            args[key] = value
    if call.body is not None:
        params = parse_parameters(call.body, "expand")
        for p in params.params:
            if p.name in ("url", "valueSetVersion", "filter") and isinstance(p.value, str):
                args[p.name] = p.value
            elif p.name in ("offset", "count") and isinstance(p.value, int):
                args[p.name] = str(p.value)
            elif p.name == "valueSet":
                raise FHIRError.single(422, "not-supported", "expanding a ValueSet given in the request is not supported; name it by url")
    # The caller's repository: a value set it may not see answers as unknown; expanding one needs
    # no ValueSet read scope beyond the operation's own.
    repo = Repository.of(call.request)
    valueset = None
    if call.resource_id is not None:
        stored = await repo.read("ValueSet", call.resource_id, scoped=False)
        if stored is None or stored.deleted:
            raise not_found(f"ValueSet/{call.resource_id} is not known")
        valueset = stored.resource
    else:
        url = args.get("url")
        if not url:
            raise bad_request("$expand needs the 'url' of the value set (or use ValueSet/[id]/$expand)", "url")
        if len(url) > 1000:
            raise bad_request("url is too long", "url")
        canonical = url if "|" in url or not args.get("valueSetVersion") else f"{url}|{args['valueSetVersion']}"
        valueset = get_catalog().valueset(canonical)
        if valueset is None:
            found, _ = await repo.search("ValueSet", {"k.url": canonical.split("|")[0]}, count=5, with_total=False, scoped=False)
            candidates = [f.resource for f in found]
            version = canonical.split("|")[1] if "|" in canonical else None
            candidates = [c for c in candidates if version is None or c.get("version") == version]
            valueset = candidates[0] if candidates else None
        if valueset is None:
            raise not_found(f"ValueSet {url[:200]} is not known")
    offset = _int("offset", args["offset"]) if "offset" in args else 0
    count = min(_int("count", args["count"]), MAX_COUNT) if "count" in args else None
    text_filter = args.get("filter")
    if text_filter is not None and len(text_filter) > 200:
        raise bad_request("filter is too long", "filter")
    return fhir_response(expand(valueset, text_filter, offset, count))


operation("expand", ("ValueSet",), DEFINITION, instance_level=True, methods=("GET", "POST"), scopes=(("ValueSet", "r"),))(_expand)
