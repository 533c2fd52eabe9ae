"""Installs Prior Authorization Support: the Claim operations, and case storage (the staff review API is server.review.api)."""

from __future__ import annotations

from fastapi import FastAPI

from capability.statement import claim as claim_capability
from server.events import ResourceWritten
from server.pas import (
    attachments,  # noqa: F401 (registers $submit-attachment)
    cases,
    operations,  # registers $submit and $inquire
)
from server.pas.service import PasService


def install(app: FastAPI) -> None:
    app.include_router(operations.pinned_router)

    async def start(state) -> None:
        await cases.ensure_indexes(state.storage)
        await cases.purge_expired(state.storage)
        service = state.services["pas"] = PasService(state)
        state.events.on(ResourceWritten, service.forget_members)

    app.state.startup_steps.append(start)
    claim_capability("http://hl7.org/fhir/us/davinci-pas/CapabilityStatement/IntermediaryCapabilities")
