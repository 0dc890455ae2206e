"""Fixtures for the store tests: each store the conformance suite runs against.

``store_factory`` is parametrized by backend; each test gets its own,
initially empty database. Adding a backend is one more parameter here (and
its skip-unless-reachable check), nothing else::

    params=["sqlite", "postgres", "redis"]

    if request.param == "postgres":
        dsn = postgres_dsn_or_skip()          # fail instead of skipping when CI=true
        schema = f"covey_test_{uuid4().hex}"  # isolation: a schema per test
        return lambda: PostgresStore(dsn, schema=schema)
    if request.param == "redis":
        url = redis_url_or_skip()
        prefix = f"covey-test:{uuid4().hex}"  # isolation: a key prefix per test
        return lambda: RedisStore(url, prefix=prefix)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from covey.store.base import Store
from covey.store.sqlite import SQLiteStore
from covey.testing.conformance import StoreFactory

STORES = ["sqlite"]  # later: "postgres", "redis"


@pytest.fixture(params=STORES)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Opens this test's store: a new, not yet entered store object on the same database per call."""
    if request.param == "sqlite":
        path = tmp_path / "covey.db"
        return lambda: SQLiteStore(path)
    raise AssertionError(f"no store factory for {request.param!r}")


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[Store]:
    """This test's store, entered."""
    async with store_factory() as store:
        yield store
