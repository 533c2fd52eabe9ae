"""One embedded MongoDB wire-protocol server and one Precert server per test session.

With ``PRECERT_MONGODB_URI`` set, the tests run against that MongoDB instead of starting SecantusDB.
"""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

from server.app import create_app
from server.embedded_db import EmbeddedDatabase
from server.settings import Settings
from tests.support import ThreadedServer


@pytest.fixture(scope="session")
def mongodb_uri(tmp_path_factory):
    uri = os.environ.get("PRECERT_MONGODB_URI")
    if uri:
        yield uri
        return
    db = EmbeddedDatabase(tmp_path_factory.mktemp("secantus"))
    db.start()
    yield db.uri
    db.stop()


@pytest.fixture(scope="session")
def settings(mongodb_uri) -> Settings:
    return Settings(mongodb_uri=mongodb_uri, db_name=f"precert_test_{uuid.uuid4().hex[:8]}", load_sandbox=True)


@pytest.fixture(scope="session")
def server(settings):
    srv = ThreadedServer(create_app(settings)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30, headers={"Accept": "application/fhir+json"}) as c:
        yield c


@pytest.fixture
def db(monkeypatch, mongodb_uri) -> list[str]:
    """The ``precert`` command-line arguments for a fresh database of its own (``--mongodb-uri``, and
    ``PRECERT_DB_NAME`` set), in sandbox mode."""
    monkeypatch.setenv("PRECERT_DB_NAME", f"precert_cli_{uuid.uuid4().hex[:8]}")
    monkeypatch.delenv("PRECERT_MODE", raising=False)
    return ["--mongodb-uri", mongodb_uri]


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:12]


# An app with authentication enforced, one per test module that asks for it (security tests).
@pytest.fixture(scope="module")
def srv(mongodb_uri):
    from server.auth.testing import secured_app
    from tests.support import ThreadedServer

    server = ThreadedServer(secured_app(mongodb_uri)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(srv):
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def harness(srv, http):
    from server.auth.testing import Harness

    return Harness(http, srv.url)
