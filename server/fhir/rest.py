"""The FHIR REST surface at ``/fhir``: CRUD, history, search and operation dispatch.

Each route declares what it needs beside its registration (``@policy.requires``): the interaction's
scope on the route's resource type, or, for ``$operations``, the scopes the operation was registered with."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from server.auth.guard import GuardedRoute
from capability.statement import capability_statement
from server.auth import policy
from server.fhir.errors import FHIRError, bad_request, gone, not_found
from server.fhir.jsonio import read_fhir_json
from server.fhir.operations import OperationCall, registry
from server.fhir.repository import Repository
from server.fhir.resources import PROVIDERS
from server.fhir.responses import base_url, check_format, fhir_response, resource_headers, stored_response
from server.fhir.search import parse_search
from server.fhir.search_params import params_for, reference_keys, values_at
from server.fhir.validation import ID_RE, is_resource_type, validate_resource
from server.storage import VersionConflict, criteria_filter, fhir_instant, sort_spec, utcnow

router = APIRouter(route_class=GuardedRoute, prefix="/fhir")

_ETAG_RE = re.compile(r'^(?:W/)?"?(\d+)"?$')


def state(request: Request):
    return request.app.state.precert


def provider_for(rtype: str, interaction: str):
    provider = PROVIDERS.get(rtype)
    if provider is None:
        if is_resource_type(rtype):
            raise FHIRError.single(404, "not-supported", f"Precert does not serve {rtype} resources")
        raise FHIRError.single(404, "not-supported", f"'{rtype[:64]}' is not a FHIR resource type")
    if interaction not in provider.interactions:
        raise FHIRError.single(405, "not-supported", f"{interaction} is not supported on {rtype}")
    return provider


def check_id(rid: str) -> str:
    if not ID_RE.match(rid):
        raise bad_request(f"'{rid[:64]}' is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)", "id")
    return rid


def parse_version(text: str, what: str) -> int:
    m = _ETAG_RE.match(text.strip())
    if not m:
        raise bad_request(f"{what} '{text[:40]}' is not a version (expected W/\"n\")")
    return int(m.group(1))


def prefer_minimal(request: Request) -> bool:
    return "return=minimal" in request.headers.get("prefer", "")


# ---------------------------------------------------------------------- capability
@router.get("/metadata")
@policy.requires(policy.PUBLIC_REQ)
async def metadata(request: Request) -> Response:
    check_format(request)

    return fhir_response(capability_statement(request.app, base_url(request)))


# ---------------------------------------------------------------------- operations
async def dispatch_operation(request: Request, rtype: str | None, rid: str | None, name: str) -> Response:
    check_format(request)
    if rtype is not None and rtype not in PROVIDERS and registry.find(name, rtype, instance=rid is not None) is None:
        provider_for(rtype, "read")
    op = registry.find(name, rtype, instance=rid is not None)
    if op is None:
        where = f"{rtype}/{rid}" if rid else rtype or "the system level"
        raise FHIRError.single(404, "not-supported", f"operation ${name[:64]} is not supported on {where}")
    if request.method not in op.methods:
        raise FHIRError.single(405, "not-supported", f"${name} does not accept {request.method}")
    body = None
    if request.method == "POST":
        body = await read_fhir_json(request, state(request).settings.max_body_bytes)
    call = OperationCall(request, rtype, rid, body, list(request.query_params.multi_items()))
    return await op.handler(call)


@router.api_route("/${name}", methods=["GET", "POST"])
@policy.requires(policy.FhirOperation())
async def system_operation(request: Request, name: str) -> Response:
    return await dispatch_operation(request, None, None, name)


@router.api_route("/{rtype}/${name}", methods=["GET", "POST"])
@policy.requires(policy.FhirOperation())
async def type_operation(request: Request, rtype: str, name: str) -> Response:
    return await dispatch_operation(request, rtype, None, name)


@router.api_route("/{rtype}/{rid}/${name}", methods=["GET", "POST"])
@policy.requires(policy.FhirOperation(instance=True))
async def instance_operation(request: Request, rtype: str, rid: str, name: str) -> Response:
    return await dispatch_operation(request, rtype, check_id(rid), name)


# ---------------------------------------------------------------------- search
async def run_search(request: Request, rtype: str, items: list[tuple[str, str]]) -> dict:
    """A searchset Bundle (as a dict with pre-serialized resource fragments).

    Matches and included resources all come through the request's :class:`Repository`, so each is
    narrowed to the caller's organization and to the resource types its scopes may read.
    """
    repo = Repository.of(request)
    settings = state(request).settings
    req = parse_search(rtype, items, default_count=settings.default_page_size, max_count=settings.max_page_size)
    criteria = criteria_filter(req.criteria) or None
    base = base_url(request)
    if req.summary_count:
        _, total = await repo.search(rtype, criteria, count=0 or 1, with_total=True)
        found: list = []
    else:
        found, total = await repo.search(
            rtype, criteria, sort=sort_spec(req.sort) or None, offset=req.offset, count=req.count, with_total=req.total
        )
    entries = [
        {"fullUrl": f"{base}/{r.type}/{r.id}", "resource": orjson.Fragment(r.json), "search": {"mode": "match"}}
        for r in found
    ]
    if req.includes and found:
        refs: list[str] = []
        for r in found:
            resource = r.resource
            for src, pname, target in req.includes:
                param = params_for(src)[pname]
                for path in param.paths:
                    for value in values_at(resource, path):
                        for key in reference_keys(value):
                            if key.count("/") == 1 and (target is None or key.startswith(target + "/")):
                                refs.append(key)
        seen = {f"{r.type}/{r.id}" for r in found}
        for inc in await repo.read_many(k for k in refs if k not in seen):
            entries.append({"fullUrl": f"{base}/{inc.type}/{inc.id}", "resource": orjson.Fragment(inc.json), "search": {"mode": "include"}})
    if req.revincludes and found:
        keys = [f"{r.type}/{r.id}" for r in found]
        for src, pname in req.revincludes:
            if src not in PROVIDERS:
                continue
            rev, _ = await repo.search(src, {f"k.{pname}": {"$in": keys}}, count=settings.max_page_size, with_total=False)
            for inc in rev:
                entries.append({"fullUrl": f"{base}/{inc.type}/{inc.id}", "resource": orjson.Fragment(inc.json), "search": {"mode": "include"}})

    def page_link(relation: str, offset: int) -> dict:
        params = [(k, v) for k, v in items if k not in ("_getpagesoffset", "_count")]
        params += [("_count", str(req.count)), ("_getpagesoffset", str(offset))]
        return {"relation": relation, "url": f"{base}/{rtype}?{urlencode(params)}"}

    links = [{"relation": "self", "url": f"{base}/{rtype}" + (f"?{urlencode(items)}" if items else "")}]
    if not req.summary_count:
        if req.offset > 0:
            links.append(page_link("first", 0))
            links.append(page_link("previous", max(0, req.offset - req.count)))
        more = (total is not None and req.offset + len(found) < total) or (total is None and len(found) == req.count)
        if more and req.count > 0:
            links.append(page_link("next", req.offset + req.count))
    bundle: dict = {
        "resourceType": "Bundle",
        "type": "searchset",
        "meta": {"lastUpdated": fhir_instant(utcnow())},
    }
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return bundle


@router.get("/{rtype}")
@policy.requires(policy.FhirInteraction("search-type", "s"))
async def search_type(request: Request, rtype: str) -> Response:
    check_format(request)
    provider_for(rtype, "search-type")
    return fhir_response(await run_search(request, rtype, list(request.query_params.multi_items())))


@router.post("/{rtype}/_search")
@policy.requires(policy.FhirInteraction("search-type", "s"))
async def search_post(request: Request, rtype: str) -> Response:
    check_format(request)
    provider_for(rtype, "search-type")
    ctype = request.headers.get("content-type", "")
    if "application/x-www-form-urlencoded" not in ctype:
        raise FHIRError.single(415, "not-supported", "POST _search takes application/x-www-form-urlencoded parameters")
    body = (await request.body())[: state(request).settings.max_body_bytes]
    try:
        form = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise bad_request("the search form is not UTF-8") from None
    items = list(request.query_params.multi_items()) + form
    return fhir_response(await run_search(request, rtype, items))


# ---------------------------------------------------------------------- create
@router.post("/{rtype}")
@policy.requires(policy.FhirInteraction("create", "c"))
async def create(request: Request, rtype: str) -> Response:
    check_format(request)
    provider_for(rtype, "create")
    st = state(request)
    resource = await read_fhir_json(request, st.settings.max_body_bytes)
    await run_in_threadpool(validate_resource, resource, rtype)
    base = base_url(request)
    if_none_exist = request.headers.get("if-none-exist")
    if if_none_exist:
        items = parse_qsl(if_none_exist.split("?", 1)[-1], keep_blank_values=True)
        if not items:
            raise bad_request("If-None-Exist must hold search parameters, e.g. identifier=system|value")
        req = parse_search(rtype, items, default_count=2, max_count=2)
        found, _ = await Repository.of(request).search(rtype, criteria_filter(req.criteria) or None, scoped=False, count=2, with_total=False)
        if len(found) > 1:
            raise FHIRError.single(412, "duplicate", f"If-None-Exist matched {len(found)} {rtype} resources; the criteria must be more selective")
        if found:
            return stored_response(found[0], 200, base, location=True)
    stored = await Repository.of(request).create(rtype, resource)
    if prefer_minimal(request):
        return fhir_response(None, 201, resource_headers(stored, base, True))
    return stored_response(stored, 201, base, location=True)


# ---------------------------------------------------------------------- read / vread / history
def _known(stored, rtype: str, rid: str):
    if stored is None:
        raise not_found(f"{rtype}/{rid} is not known")
    return stored


@router.get("/{rtype}/{rid}")
@policy.requires(policy.FhirInteraction("read", "r"))
async def read(request: Request, rtype: str, rid: str) -> Response:
    check_format(request)
    provider_for(rtype, "read")
    check_id(rid)
    stored = _known(await Repository.of(request).read(rtype, rid), rtype, rid)
    if stored.deleted:
        raise gone(f"{rtype}/{rid} was deleted")
    inm = request.headers.get("if-none-match")
    if inm and inm.strip() in (stored.etag, f'"{stored.version}"'):
        return Response(status_code=304, headers={"ETag": stored.etag})
    return stored_response(stored)


@router.get("/{rtype}/{rid}/_history/{vid}")
@policy.requires(policy.FhirInteraction("vread", "r"))
async def vread(request: Request, rtype: str, rid: str, vid: str) -> Response:
    check_format(request)
    provider_for(rtype, "vread")
    check_id(rid)
    if not vid.isdigit():
        raise bad_request(f"version '{vid[:20]}' is not a whole number")
    repo = Repository.of(request)
    _known(await repo.read(rtype, rid), rtype, rid)
    stored = await repo.vread(rtype, rid, int(vid))
    if stored is None:
        raise not_found(f"{rtype}/{rid} has no version {vid}")
    if stored.deleted:
        raise gone(f"version {vid} of {rtype}/{rid} is a deletion")
    return stored_response(stored)


@router.get("/{rtype}/{rid}/_history")
@policy.requires(policy.FhirInteraction("history-instance", "r"))
async def history(request: Request, rtype: str, rid: str) -> Response:
    check_format(request)
    provider_for(rtype, "history-instance")
    check_id(rid)
    versions = _known(await Repository.of(request).history(rtype, rid), rtype, rid)
    base = base_url(request)
    entries = []
    for v in versions:
        entry: dict = {"fullUrl": f"{base}/{rtype}/{rid}"}
        if not v.deleted:
            entry["resource"] = orjson.Fragment(v.json)
        entry["request"] = {"method": "DELETE" if v.deleted else ("POST" if v.version == 1 else "PUT"), "url": f"{rtype}/{rid}"}
        entry["response"] = {"status": "204" if v.deleted else ("201" if v.version == 1 else "200"), "etag": v.etag, "lastModified": fhir_instant(v.last_updated)}
        entries.append(entry)
    bundle = {"resourceType": "Bundle", "type": "history", "total": len(entries), "link": [{"relation": "self", "url": f"{base}/{rtype}/{rid}/_history"}], "entry": entries}
    return fhir_response(bundle)


# ---------------------------------------------------------------------- update / delete
@router.put("/{rtype}/{rid}")
@policy.requires(policy.FhirInteraction("update", "u"))
async def update(request: Request, rtype: str, rid: str) -> Response:
    check_format(request)
    provider_for(rtype, "update")
    check_id(rid)
    st = state(request)
    resource = await read_fhir_json(request, st.settings.max_body_bytes)
    await run_in_threadpool(validate_resource, resource, rtype)
    body_id = resource.get("id")
    if body_id is None:
        raise bad_request(f"the {rtype} in the body has no id; it must be '{rid}'", f"{rtype}.id")
    if body_id != rid:
        raise bad_request(f"the body's id '{str(body_id)[:64]}' does not match '{rid}' in the URL", f"{rtype}.id")
    if_match = request.headers.get("if-match")
    expected = parse_version(if_match, "If-Match") if if_match else None
    repo = Repository.of(request)
    existing, allowed = await repo.existing(rtype, rid)
    if not allowed:
        raise not_found(f"{rtype}/{rid} is not known")
    try:
        stored, created = await repo.update(rtype, rid, resource, expected)
    except VersionConflict as exc:
        if expected is not None:
            raise FHIRError.single(412, "conflict", f"If-Match names version {expected} but {rtype}/{rid} is at version {exc.current or existing.version if existing else 'none'}") from None
        raise FHIRError.single(409, "conflict", f"{rtype}/{rid} was changed by another request at the same time; retry") from None
    base = base_url(request)
    if prefer_minimal(request):
        return fhir_response(None, 201 if created else 200, {"ETag": stored.etag, "Location": f"{base}/{rtype}/{rid}/_history/{stored.version}"})
    return stored_response(stored, 201 if created else 200, base, location=True)


@router.delete("/{rtype}/{rid}")
@policy.requires(policy.FhirInteraction("delete", "d"))
async def delete(request: Request, rtype: str, rid: str) -> Response:
    check_format(request)
    provider_for(rtype, "delete")
    check_id(rid)
    repo = Repository.of(request)
    _, allowed = await repo.existing(rtype, rid)
    if not allowed:
        raise not_found(f"{rtype}/{rid} is not known")
    deleted = await repo.delete(rtype, rid)
    if deleted is not None:
        return Response(status_code=204, headers={"ETag": deleted.etag})
    return Response(status_code=204)
