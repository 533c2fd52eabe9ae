"""The front door: ``GET /`` says what this server is and where everything lives, and ``/docs`` serves
Swagger UI from the ``swagger-ui-bundle-v2`` package (Swagger UI 5, which reads OpenAPI 3.1) so the API docs work with no network."""

from __future__ import annotations

import html
import warnings
from collections import Counter
from pathlib import Path

import swagger_ui_bundle
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles

from server import __version__
from server.auth import policy
from server.auth.guard import GuardedApp

TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape())
# The Markdown guides ship beside the package in a source checkout; an installed wheel has none.
DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"
ASSETS = "/docs/assets"
OPENAPI = "/openapi.json"


def _guides() -> list[str]:
    return sorted(p.stem for p in DOCS_DIR.glob("*.md")) if DOCS_DIR.is_dir() else []


def _mode(request: Request) -> tuple[str, bool]:
    state = getattr(request.app.state, "precert", None)
    settings = request.app.state.settings
    svc = state.services.get("auth") if state is not None else None
    return settings.mode, bool(svc is not None and svc.enforcing)


@policy.requires(policy.PUBLIC_REQ)
async def front_door(request: Request) -> HTMLResponse:
    mode, enforcing = _mode(request)
    page = TEMPLATES.get_template("front.html").render(
        version=__version__, mode=mode, enforcing=enforcing, open_sandbox=mode == "sandbox" and not enforcing,
        guides=_guides())
    return HTMLResponse(page)


@policy.requires(policy.DOCS_REQ)
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=OPENAPI, title="Precert API",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon-32x32.png")


@policy.requires(policy.PUBLIC_REQ)
async def guide(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _guides():
        return HTMLResponse("<!doctype html><title>Not found</title><p>No such guide.</p>", status_code=404)
    text = (DOCS_DIR / f"{name}.md").read_text(encoding="utf-8")
    if "text/markdown" in request.headers.get("accept", ""):
        return PlainTextResponse(text, media_type="text/markdown")
    body = (f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(name)} · Precert docs</title>"
            f"<p><a href='/'>Precert</a> › docs › {html.escape(name)}</p><pre style='white-space:pre-wrap'>"
            f"{html.escape(text)}</pre></html>")
    return HTMLResponse(body)


def openapi_with_unique_ids(app: FastAPI):
    """FastAPI gives every method of a multi-method route (``PUT``/``PATCH``/``DELETE`` on one path)
    the same operation id, and warns. Build the document once, naming each such operation for its own
    method, so clients generated from it get one function per operation."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Duplicate Operation ID")
                schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                     routes=app.routes)
            counts = Counter(op.get("operationId") for ops in schema["paths"].values() for op in ops.values())
            for ops in schema["paths"].values():
                for method, op in ops.items():
                    oid = op.get("operationId")
                    if counts[oid] > 1:
                        op["operationId"] = f"{oid.rsplit('_', 1)[0]}_{method}"
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def install(app: FastAPI) -> None:
    """Called last by the app factory, after every router is mounted."""


    app.openapi = openapi_with_unique_ids(app)

    @policy.requires(policy.DOCS_REQ)
    async def openapi_document(request: Request) -> Response:
        return JSONResponse(app.openapi())

    app.add_api_route("/", front_door, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route(OPENAPI, openapi_document, methods=["GET"], include_in_schema=False)
    app.add_api_route("/guide/{name}", guide, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS, GuardedApp(StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), policy.DOCS_REQ), name="swagger-ui")
