"""Installs the payer rules: loaded at start-up, listed and reloaded through ``/admin/rules``.

- ``GET /admin/rules``: the active set (payer, network, gold cards, every rule with its codes and
  conditions), where it was loaded from, and the errors of the last failed reload, if any.
- ``POST /admin/rules/reload``: re-read the files now (200 with the new set, 422 listing the errors;
  the previous set stays active on error).
- ``POST /admin/rules/evaluate``: what the rules decide for an ``EvaluationInput`` given as JSON.
- ``GET /rules/prior-auth-list``: the services needing prior authorization (public, CMS-0057-F).
"""

from __future__ import annotations

import dataclasses
import logging

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import JSONResponse, Response

from server.auth.guard import GuardedRoute
from server.auth import policy
from server.errors import PrecertError
from server.fhir.jsonio import BodyTooLarge, MalformedJSON, parse_json, read_body
from server.rules import SANDBOX_DIR, RulesError, RulesService, get_rules
from server.rules.model import EvaluationInput

router = APIRouter(route_class=GuardedRoute)
log = logging.getLogger("precert.rules")

MAX_EVALUATE_BODY = 1024 * 1024


def _service(request: Request) -> RulesService:
    state = request.app.state.precert
    service = state.services.get("rules")
    if service is None:
        service = state.services["rules"] = RulesService()
    return service


@router.get("/admin/rules")
@policy.requires(policy.staff("administrator"))
async def list_rules(request: Request) -> Response:
    service = _service(request)
    rules = get_rules(request.app.state.precert)
    return JSONResponse({"status": service.status(), **rules.summary()})


@router.post("/admin/rules/reload")
@policy.requires(policy.staff("administrator"))
async def reload_rules(request: Request) -> Response:
    service = _service(request)
    try:
        rules = service.load()
    except RulesError as exc:
        raise PrecertError(422, "the rule files were not loaded; the previous set is still active", "invalid",
                           extra={"errors": exc.errors}) from None
    return JSONResponse({"status": service.status(), **rules.summary()})


# CMS-0057-F: the list of services that need prior authorization is published openly.
@router.get("/rules/prior-auth-list")
@policy.requires(policy.PUBLIC_REQ)
async def prior_auth_list(request: Request) -> Response:
    rules = get_rules(request.app.state.precert)
    return JSONResponse({"payer": rules.payer.name, "version": rules.version, "services": rules.prior_auth_list()})


_FIELDS = {f.name: f for f in dataclasses.fields(EvaluationInput)}
_LISTS = ("codes", "provider_ids", "diagnoses", "provider_orgs")
_DICTS = ("coverage", "patient", "order", "encounter", "location", "payer")


def _bad(message: str, status: int = 400) -> PrecertError:
    return PrecertError(status, message, "too-costly" if status == 413 else "invalid")


@router.post("/admin/rules/evaluate")
@policy.requires(policy.staff("administrator"))
async def evaluate(request: Request) -> Response:
    try:
        body = parse_json(await read_body(request, MAX_EVALUATE_BODY))
    except BodyTooLarge as exc:
        raise _bad(str(exc), 413)
    except MalformedJSON as exc:
        raise _bad(str(exc))
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object with the fields of EvaluationInput")
    unknown = sorted(k for k in body if k not in _FIELDS)
    if unknown:
        raise _bad(f"unknown field(s) {', '.join(k[:40] for k in unknown[:5])}; fields are {', '.join(_FIELDS)}")
    args: dict = {}
    for key, value in body.items():
        if value is None:
            continue
        if key in _LISTS:
            if not isinstance(value, list) or (key in ("codes", "diagnoses") and not all(isinstance(v, dict) for v in value)) \
                    or (key in ("provider_ids", "provider_orgs") and not all(isinstance(v, str) for v in value)):
                raise _bad(f"'{key}' must be a list of {'Coding objects' if key in ('codes', 'diagnoses') else 'strings'}")
        elif key in _DICTS:
            if not isinstance(value, dict):
                raise _bad(f"'{key}' must be a JSON object (a FHIR resource)")
        elif key == "quantity":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _bad("'quantity' must be a number")
        elif key == "service_date":
            if not isinstance(value, str):
                raise _bad("'service_date' must be a FHIR date string")
        args[key] = value
    if "codes" not in args:
        raise _bad("'codes' (a list of Codings) is required")
    det = get_rules(request.app.state.precert).evaluate(EvaluationInput(**args))
    return JSONResponse(det.as_dict())


def install(app: FastAPI) -> None:
    async def load_rules(state) -> None:
        service = state.services.get("rules")
        if service is None:
            service = state.services["rules"] = RulesService()
        service.load()  # invalid rules stop the start-up with every error logged
        if state.settings.mode == "production" and service.directory.resolve() == SANDBOX_DIR.resolve():
            log.warning("rules: production mode is using the sandbox rule set; set PRECERT_RULES_DIR to the payer's rules")

    app.state.startup_steps.append(load_rules)
    app.include_router(router)
