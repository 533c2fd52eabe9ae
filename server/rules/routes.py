"""Installs this capability into the app (routes, start-up steps, hooks)."""

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Nothing to install yet."""
