"""How Storage connects and closes (docs/architecture.md, "Storage: the connection"): one mongomotor
connection per Storage under its own alias, and nothing of it left behind once closed."""

from __future__ import annotations

import uuid
import warnings

import pytest
from mongoengine import connection
from mongomotor.utils import get_sync_alias

from server.storage import Storage


async def test_closing_a_storage_closes_its_clients_and_forgets_its_aliases(mongodb_uri):
    storage = Storage(mongodb_uri, f"precert_close_{uuid.uuid4().hex[:8]}")
    other = Storage(mongodb_uri, storage.db_name)
    storage.connect()
    other.connect()
    try:
        assert await storage.ping() and await other.ping()
        sync_alias = get_sync_alias(storage.alias)
        assert connection.get_connection(sync_alias) is not connection.get_connection(get_sync_alias(other.alias))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no un-awaited close, no resource warning
            await storage.close()
        for alias in (storage.alias, sync_alias):
            with pytest.raises(connection.ConnectionFailure):
                connection.get_connection(alias)
        assert storage.client is None
        # Another application's Storage in the same process is untouched.
        assert await other.ping()
    finally:
        await other.close()
