"""Several server processes on one port: ``precert serve --workers N``.

uvicorn's supervisor forks N worker processes that share one listening socket; each builds its own
app (``create_app()``, settings from the environment) and its own database client. Nothing a request
depends on lives only in one worker's memory: cases, the notification outbox (claimed with a lease,
so each notification is sent by exactly one worker), EHR JWT and client-assertion replay records,
and staff sessions are in the database, and the short-lived member caches are invalidated across
workers through a version stamp in the database (:mod:`server.shared_cache`).

With no MongoDB configured, the supervisor itself starts the embedded database once, before the
workers, and hands them its URI; the database stops when the supervisor does, and is restarted if it
dies. The supervisor also restarts a worker that dies.
"""

from __future__ import annotations

import logging
import os

from server.embedded_db import EmbeddedDatabase, exit_process
from server.settings import Settings
from server.settings import export

log = logging.getLogger("precert.workers")

# More workers than cores only adds context switches; past eight the embedded database (one process)
# is the limit well before the workers are.
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


def worker_environment(settings: Settings, uri: str | None) -> dict[str, str]:
    """The ``PRECERT_*`` variables that make each worker's ``Settings.from_env()`` equal ``settings``."""
    env = {
        "PRECERT_DATA_DIR": str(settings.data_dir),
        "PRECERT_SANDBOX": "true" if settings.load_sandbox else "false",
        "PRECERT_MONGODB_URI": uri or "",
    }
    if settings.base_url:
        env["PRECERT_BASE_URL"] = settings.base_url
    return env


def serve_workers(settings: Settings, workers: int, **uvicorn_options) -> int:
    import uvicorn

    embedded = None
    uri = settings.mongodb_uri
    if uri is None:
        embedded = EmbeddedDatabase(settings.data_dir / "db", command=settings.embedded_db_command)
        embedded.start()
        embedded.supervise(exit_process)  # restarted if it dies; the supervisor exits if it keeps dying
        uri = embedded.uri
    export(worker_environment(settings, uri))
    try:
        uvicorn.run("server.app:create_app", factory=True, workers=workers, **uvicorn_options)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0
