"""The demo EHR (sandbox only): a page at ``/demo-ehr`` that plays the provider's side of a prior
authorization in the browser, against this server's public endpoints, the way an EHR integration would.

The page holds the EHR's records (the sandbox members, their coverage, charts and clinicians, from
:func:`ehr_records`) and calls Precert over HTTP like any client: CDS Hooks ``order-select`` and
``order-sign`` with prefetch built from those records, ``Questionnaire/$questionnaire-package``, the
package's ELM run in the browser by cql-execution (``static/demo-ehr/cql-bundle.js``, built from npm
by ``questionnaires/tools/build-demo-bundle.mjs`` and served from here, never from a CDN), PAS
``Claim/$submit`` and ``Claim/$inquire``, and a rest-hook ``Subscription``.

A browser cannot receive a rest-hook, so the Subscription's endpoint is the EHR's inbox here
(``POST /demo-ehr/inbox/{box}``), which the page polls (``GET``). That keeps the notification the real
one, sent by the subscription service with its handshake and event bundles; polling ``$inquire`` instead
would show the decision but never prove the notification. The inbox is kept in the database (the
``demo_ehr_inbox`` collection, bounded per box and in age) so it works with several workers.

In production mode none of these routes exist (404). In an open sandbox (authentication not
enforced) the page needs no credential. With authentication enforced (``PRECERT_REQUIRE_AUTH=true``),
``POST /demo-ehr/token`` mints the page a short-lived access token for the sandbox client of the
ordering clinician's organization (``sandbox-clinic`` or ``sandbox-hospital``): their private keys are
published in ``docs/sandbox-keys/``, so anyone could obtain the same token from ``/auth/token``, and
production refuses those clients. Likewise ``POST /demo-ehr/hook-token`` signs the page a one-use CDS
Hooks JWT with the demo EHR key (``cds_hooks/demo_ehr_private_key.pem``, published and trusted only
outside production).
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

import jwt
import orjson
from fastapi import FastAPI, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from cds_hooks.config import DEMO_EHR_ISS, DEMO_EHR_JWKS_FILE
from cds_hooks.discovery import SERVICE_HOOK
from server.auth import policy
from server.auth.guard import GuardedApp
from server.errors import PrecertError
from server.sandbox import sandbox_resources
from server.sandbox_charts import chart_resources
from server.storage import utcnow

PREFIX = "/demo-ehr"
ASSETS = PREFIX + "/assets"
STATIC = Path(__file__).parent / "static" / "demo-ehr"
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape())
INBOX = "demo_ehr_inbox"
BOX_ID = re.compile(r"^[A-Za-z0-9-]{8,64}$")
MAX_NOTIFICATION_BYTES = 2 * 1024 * 1024
KEEP_PER_BOX = 50
KEEP_FOR = timedelta(days=1)


def ehr_records() -> list[dict]:
    """What the demo EHR holds: the sandbox members (not the PAS example member), their Coverage,
    the clinicians and organizations, and each member's chart."""
    keep = [r for r in sandbox_resources()
            if not (r["id"].startswith("pas-example") or r["id"] == "cov-pas-example")]
    return keep + chart_resources()


@lru_cache(maxsize=1)
def _records_json() -> bytes:
    # The records are fixed data: serialised once per process.
    return orjson.dumps({"resources": ehr_records()})


# The sandbox SMART clients, by the provider organization they act for (server.auth.clients).
SANDBOX_CLIENT_FOR = {"org-clinic": "sandbox-clinic", "org-hospital": "sandbox-hospital"}
TOKEN_SCOPE = "system/*.cruds"
TOKEN_SECONDS = 300
DEMO_EHR_KEY = DEMO_EHR_JWKS_FILE.with_name("demo_ehr_private_key.pem")
DEMO_EHR_KID = "precert-demo-ehr-es384"


def _problem(status: int, code: str, message: str) -> PrecertError:
    return PrecertError(status, message, code)


# The page and its assets hold no patient data of Precert's; the inbox holds what this sandbox sent to
# a demo endpoint (synthetic members only). Outside the sandbox these routes do not exist (404).
OPEN = policy.Requirement(policy.PUBLIC, phi=False)


@policy.requires(OPEN)
async def page(request: Request) -> HTMLResponse:
    svc = request.app.state.precert.services.get("auth")
    enforcing = bool(svc is not None and svc.enforcing)
    return HTMLResponse(TEMPLATES.get_template("demo_ehr.html").render(assets=ASSETS, enforcing=enforcing))


@policy.requires(OPEN)
async def records(request: Request) -> Response:
    return Response(_records_json(), media_type="application/json")


async def _json_object(request: Request) -> dict | None:
    """The request's JSON object body, or None when it is not one."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


@policy.requires(OPEN)
async def token(request: Request) -> Response:
    """A sandbox client's access token for the page, when authentication is enforced."""
    svc = request.app.state.precert.services.get("auth")
    if svc is None or not svc.enforcing:
        raise _problem(409, "business-rule", "authentication is not enforced: the demo EHR calls the sandbox without a token")
    body = await _json_object(request)
    if body is None:
        raise _problem(400, "invalid", "send {\"organization\": \"org-clinic\"} or org-hospital")
    org = body.get("organization")
    client_id = SANDBOX_CLIENT_FOR.get(org) if isinstance(org, str) else None
    if client_id is None:
        raise _problem(400, "invalid", f"organization must be one of {', '.join(SANDBOX_CLIENT_FOR)}")
    client = await svc.clients.get(client_id)
    if client is None or not client.active:
        raise _problem(409, "business-rule", f"the sandbox client {client_id} is not registered or not active")
    access = svc.tokens.mint(client_id, TOKEN_SCOPE, TOKEN_SECONDS)
    return JSONResponse({"access_token": access, "token_type": "bearer", "expires_in": TOKEN_SECONDS,
                         "scope": TOKEN_SCOPE, "client_id": client_id})


@policy.requires(OPEN)
async def hook_token(request: Request) -> Response:
    """A one-use CDS Hooks JWT from the demo EHR for one Precert service, when authentication is
    enforced (the CRD services then require one)."""
    svc = request.app.state.precert.services.get("auth")
    if svc is None or not svc.enforcing:
        raise _problem(409, "business-rule", "authentication is not enforced: the CDS Hooks services take calls without a JWT")
    body = await _json_object(request)
    if body is None:
        raise _problem(400, "invalid", "send {\"service\": \"order-sign-crd\"}")
    service = body.get("service")
    if not isinstance(service, str) or service not in SERVICE_HOOK:
        raise _problem(400, "invalid", f"service must be one of {', '.join(SERVICE_HOOK)}")
    # The audience is the service's public URL, as the CRD verifier computes it.
    base = (request.app.state.precert.settings.base_url or str(request.base_url)).rstrip("/")
    now = int(time.time())
    claims = {"iss": DEMO_EHR_ISS, "aud": f"{base}/cds-services/{service}", "iat": now, "exp": now + 120,
              "jti": secrets.token_urlsafe(16)}
    signed = jwt.encode(claims, DEMO_EHR_KEY.read_bytes(), algorithm="ES384", headers={"kid": DEMO_EHR_KID, "typ": "JWT"})
    return JSONResponse({"jwt": signed, "expires_in": 120})


def _collection(request: Request):
    return request.app.state.precert.storage.collection(INBOX)


@policy.requires(OPEN)
async def receive_notification(request: Request) -> Response:
    """The EHR's rest-hook endpoint: store what the subscription service sends (handshake, heartbeat,
    event notifications) for the page to read."""
    box = request.path_params["box"]
    if not BOX_ID.match(box):
        raise _problem(404, "not-found", "no such inbox")
    body = await request.body()
    if len(body) > MAX_NOTIFICATION_BYTES:
        raise _problem(413, "too-costly", "a notification is at most 2 MiB here")
    try:
        bundle = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _problem(400, "invalid", "the notification is not JSON")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise _problem(400, "invalid", "a notification is a FHIR Bundle")
    coll = _collection(request)
    now = utcnow()
    await coll.insert_one({"box": box, "received": now, "bundle": body.decode("utf-8")})
    # Bounded: old boxes age out, and a box keeps its newest notifications only.
    await coll.delete_many({"received": {"$lt": now - KEEP_FOR}})
    extra = [d["_id"] async for d in coll.find({"box": box}, {"_id": 1}).sort("received", -1).skip(KEEP_PER_BOX)]
    if extra:
        await coll.delete_many({"_id": {"$in": extra}})
    return Response(status_code=200)


@policy.requires(OPEN)
async def read_inbox(request: Request) -> Response:
    box = request.path_params["box"]
    if not BOX_ID.match(box):
        raise _problem(404, "not-found", "no such inbox")
    docs = [d async for d in _collection(request).find({"box": box}).sort("received", 1)]
    body = b'{"notifications":[' + b",".join(d["bundle"].encode("utf-8") for d in docs) + b"]}"
    return Response(body, media_type="application/json")


def install(app: FastAPI) -> None:
    """Registers the demo EHR in sandbox mode only; in production the paths do not exist (404)."""

    if app.state.settings.mode != "sandbox":
        return

    async def index_inbox(state) -> None:
        coll = state.storage.collection(INBOX)
        await coll.create_index([("box", 1), ("received", 1)])

    app.state.startup_steps.append(index_inbox)
    app.add_api_route(PREFIX, page, methods=["GET"], include_in_schema=False)
    app.add_api_route(PREFIX + "/records.json", records, methods=["GET"], include_in_schema=False)
    app.add_api_route(PREFIX + "/token", token, methods=["POST"], include_in_schema=False)
    app.add_api_route(PREFIX + "/hook-token", hook_token, methods=["POST"], include_in_schema=False)
    app.add_api_route(PREFIX + "/inbox/{box}", receive_notification, methods=["POST"], include_in_schema=False)
    app.add_api_route(PREFIX + "/inbox/{box}", read_inbox, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS, GuardedApp(StaticFiles(directory=STATIC), OPEN), name="demo-ehr-assets")
