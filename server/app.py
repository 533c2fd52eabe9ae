"""The application factory. ``server.app:app`` is the ASGI app for uvicorn or gunicorn users.

Without ``PRECERT_MONGODB_URI`` the app starts the embedded database on ``PRECERT_DATA_DIR`` for the
life of the process; run one worker in that case, or point every worker at one MongoDB.
"""

from __future__ import annotations

import gc
import importlib
import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from server import __version__, errors, routing
from server.embedded_db import EmbeddedDatabase, exit_process
from server.auth.guard import GuardedRoute
from server.errors import PrecertError
from server.fhir import profiles
from server.fhir.rest import router as fhir_router
from server.health import router as health_router
from server.limits import RequestGuard, install_log_filter
from server.review.seed import seed_cases
from server.sandbox import load_sandbox
from server.settings import Settings
from server.state import AppState
from server.storage import Storage

log = logging.getLogger("precert")

# Capability modules, each exposing ``install(app)``. Order matters only for authentication, which
# must wrap everything else.
CAPABILITIES = (
    "server.rules.routes",
    "cds_hooks.routes",
    "server.dtr.routes",
    "server.pas.routes",
    "server.subscriptions.routes",
    "server.review.routes",
    "server.demo_ehr",
    "server.auth.routes",
    "server.fhir.validate_op",
)


def install_error_handlers(app: FastAPI) -> None:
    """Every refusal a route raises is rendered by :mod:`server.errors` for its request's surface."""

    @app.exception_handler(PrecertError)
    async def _precert_error(request: Request, exc: PrecertError):
        return errors.response(request.url.path, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        path = request.url.path
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route for {request.method} {path[:200]}"
        if exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"{request.method} is not allowed on {path[:200]}"
        return errors.response(path, PrecertError(exc.status_code, detail, headers=getattr(exc, "headers", None)))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return errors.response(request.url.path, PrecertError(400, errors.validation_detail(exc.errors()), "invalid"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return errors.response(request.url.path, PrecertError(500, "internal error; the request was not completed", "exception"))


def warm_profiles() -> threading.Thread:
    """Load the IG packages' conformance resources (seconds of work) in the background rather than
    in the first request that validates, then freeze them out of the collector too: left tracked,
    their few hundred thousand objects made every full collection pause the server for hundreds
    of milliseconds (the p99 tail of CRD and $submit)."""

    def warm() -> None:
        profiles.registry()
        gc.collect()
        gc.freeze()

    thread = threading.Thread(target=warm, name="precert-warm-profiles", daemon=True)
    thread.start()
    return thread


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        embedded = None
        uri = settings.mongodb_uri
        if uri is None:
            embedded = EmbeddedDatabase(settings.data_dir / "db", command=settings.embedded_db_command)
            embedded.start()
            embedded.supervise(exit_process)
            uri = embedded.uri
        storage = Storage(uri, settings.db_name)
        storage.connect()
        state = AppState(settings=settings, storage=storage, embedded=embedded)
        app.state.precert = state
        try:
            await storage.ensure_indexes()
            for start in app.state.startup_steps:
                await start(state)
            if settings.load_sandbox:

                await load_sandbox(state)
                await seed_cases(state)
            # Everything built at start-up (FHIR model classes, rules, templates) lives as long as the
            # process: moving it out of the collector's reach keeps full collections from pausing
            # requests for tens of milliseconds.
            gc.collect()
            gc.freeze()
            warm_profiles()
            log.info("Precert %s ready (%s mode)", __version__, settings.mode)
            yield
        finally:
            for stop in reversed(app.state.shutdown_steps):
                try:
                    await stop(state)
                except Exception:  # pragma: no cover - shutdown is best effort per step
                    log.exception("shutdown step failed")
            await storage.close()
            if embedded is not None:
                embedded.stop()

    app = FastAPI(
        title="Precert",
        version=__version__,
        description="Payer-side HL7 Da Vinci prior authorization: CRD, DTR and PAS on FHIR R4",
        lifespan=lifespan,
        docs_url=None,  # served by server.front from local assets, as is the OpenAPI document
        redoc_url=None,
        openapi_url=None,
    )
    app.router.route_class = GuardedRoute  # every route enforces the requirement declared beside it
    app.state.settings = settings
    app.state.startup_steps = []
    app.state.shutdown_steps = []
    install_error_handlers(app)


    app.include_router(health_router)
    # Each capability installs its routes, start-up steps and hooks; the FHIR router comes last so
    # its catch-all type routes never shadow a capability's more specific ones.
    for module in CAPABILITIES:
        importlib.import_module(module).install(app)
    app.include_router(fhir_router)
    importlib.import_module("server.front").install(app)
    routing.install(app)
    # Outermost: bounds every request and turns any escaped failure into a response.

    app.add_middleware(RequestGuard, fhir_limit=settings.max_body_bytes, body_read_timeout=settings.body_read_timeout)
    install_log_filter(app)
    return app


def __getattr__(name: str):
    # ``server.app:app`` is built on first access, so importing this module has no side effects.
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
