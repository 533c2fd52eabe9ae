"""Health checks for load balancers and operators."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from server.auth.guard import GuardedRoute
from server.auth import policy

router = APIRouter(route_class=GuardedRoute)


@router.get("/health/live")
@policy.requires(policy.PUBLIC_REQ)
async def live() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/health/ready")
@policy.requires(policy.PUBLIC_REQ)
async def ready(request: Request) -> JSONResponse:
    state = request.app.state.precert
    embedded = state.embedded
    # A dead embedded database is known without asking it; a frozen one fails the timed ping.
    ok = (embedded is None or embedded.alive) and await state.storage.ping()
    return JSONResponse({"status": "ok" if ok else "unavailable", "database": ok}, status_code=200 if ok else 503)
