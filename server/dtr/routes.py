"""Installs Documentation Templates and Rules (DTR): the payer operations on the FHIR surface, the
templates as searchable Questionnaire / Library / ValueSet resources, and the staff view of the
errors DTR clients report."""

from __future__ import annotations

import copy
import logging

import orjson
from fastapi import APIRouter, FastAPI, Query, Request
from pymongo import DESCENDING
from starlette.responses import JSONResponse

from server.auth.guard import GuardedRoute, guarded
from capability.statement import claim
from questionnaires.catalog import get_catalog
from server.auth import policy
from server.dtr import adaptive, expand, log_errors, package, validate  # noqa: F401 (they register the DTR operations)
from server.dtr.context import crd_assertion_resolver, pas_case_resolver, register_context_resolver
from server.dtr.log_errors import recent_reports
from server.fhir.repository import Repository
from server.fhir.rest import dispatch_operation
from server.storage import VersionConflict

log = logging.getLogger("precert.dtr")

DTR_PAYER_CAPABILITY = "http://hl7.org/fhir/us/davinci-dtr/CapabilityStatement/dtr-payer-service"

router = APIRouter(route_class=GuardedRoute, prefix="/admin/dtr", tags=["DTR administration"])

# The DTR client's hot paths get their own plain Starlette routes, matched before the generic /fhir
# routes (which come last and would otherwise be reached only after every other capability's routes
# were tried) and without FastAPI's per-request endpoint machinery: together these were a third of
# the server's time on a package request. They dispatch exactly as the generic operation route does.
async def _questionnaire_package_route(request: Request):

    return await dispatch_operation(request, "Questionnaire", None, "questionnaire-package")


async def _next_question_route(request: Request):

    return await dispatch_operation(request, "Questionnaire", None, "next-question")


HOT_ROUTES = (
    ("/fhir/Questionnaire/$questionnaire-package", _questionnaire_package_route),
    ("/fhir/Questionnaire/$next-question", _next_question_route),
)


@router.get("/questionnaire-errors")
@policy.requires(policy.staff("administrator"))
async def questionnaire_errors(request: Request, questionnaire: str | None = Query(None, max_length=1000), limit: int = Query(50, ge=1, le=500)):
    """Errors DTR clients reported through $log-questionnaire-errors, newest first."""

    reports = await recent_reports(request.app.state.precert, questionnaire, limit)
    return JSONResponse({"count": len(reports), "reports": reports})


@router.get("/templates")
@policy.requires(policy.staff("administrator"))
async def templates(request: Request):
    """The installed documentation templates: forms, libraries, value sets and criteria."""
    catalog = get_catalog()
    out = []
    for t in catalog.templates.values():
        out.append({
            "category": t.category,
            "title": t.title,
            "questionnaire": t.canonical,
            "adaptive": f"{t.adaptive_url}|{t.questionnaire['version']}" if t.adaptive_url else None,
            "libraries": [f"{lib['url']}|{lib['version']}" for lib in t.libraries],
            "valuesets": [f"{vs['url']}|{vs['version']}" for vs in t.valuesets],
            "criteria": [{"id": c["id"], "text": c["text"], "source": c.get("source")} for c in t.criteria],
        })
    return JSONResponse({"templates": out})


def _content(resource: dict) -> bytes:
    return orjson.dumps({k: v for k, v in resource.items() if k != "meta"} | {"meta": {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}}, option=orjson.OPT_SORT_KEYS)


async def load_templates(state) -> None:
    """Store every template resource at its fixed id, writing only what changed (idempotent, safe
    to run from several workers at once)."""

    register_context_resolver(state, crd_assertion_resolver)
    register_context_resolver(state, pas_case_resolver)
    storage = state.storage
    repo = Repository.system(state, "dtr-templates")
    written = 0
    for resource in get_catalog().resources():
        rtype, rid = resource["resourceType"], resource["id"]
        existing = await repo.read(rtype, rid)
        if existing is not None and not existing.deleted and _content(existing.resource) == _content(resource):
            continue
        try:
            await repo.put(rtype, rid, copy.deepcopy(resource), reason="DTR template")
            written += 1
        except VersionConflict:  # another worker wrote it at the same moment
            pass
    await storage.collection("dtr_questionnaire_errors").create_index([("received", DESCENDING)])
    await storage.collection("dtr_questionnaire_errors").create_index([("questionnaires", 1)])
    if written:
        log.info("DTR templates: %d resources written", written)


def install(app: FastAPI) -> None:
    # Operation modules register themselves with the FHIR operation registry on import.

    get_catalog()  # fail at start-up, naming the file, if a template is broken
    claim(DTR_PAYER_CAPABILITY)
    for path, endpoint in HOT_ROUTES:
        # The scopes of the operation the path names, as on the generic operation route.
        requirement = policy.FhirOperation("Questionnaire", path.rsplit("$", 1)[1])
        app.add_route(path, guarded(requirement)(endpoint), methods=["POST"], include_in_schema=False)
    app.include_router(router)
    app.state.startup_steps.append(load_templates)
