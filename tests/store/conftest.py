"""Fixtures for the store tests: each store the conformance suite runs against.

``store_factory`` is parametrized by backend; each test gets its own,
initially empty database (a file, a PostgreSQL schema, a Redis key prefix).
A backend plugs in with one entry in ``FACTORIES``: an async context manager
that yields the test's factory and cleans its database up afterwards. It
finds its server with :mod:`covey.testing.servers`, which skips the test
when the server is absent, or fails it under ``CI=true``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from covey.store.base import CommitBatch, CommitResult, Store
from covey.store.sqlite import SQLiteStore
from covey.testing.conformance import StoreFactory
from tests.store.backend_postgres import postgres_factory
from tests.store.backend_redis import redis_factory


@asynccontextmanager
async def sqlite_factory(tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """A fresh SQLite file per test."""
    path = tmp_path / "covey.db"
    yield lambda: SQLiteStore(path)


class JournalingSQLiteStore(SQLiteStore):
    """SQLite committing as the runner's hand-off does: inline, small batches as journal rows."""

    async def commit(self, batch: CommitBatch) -> CommitResult:
        result = self.commit_now(batch)
        return result if result is not None else await super().commit(batch)


@asynccontextmanager
async def sqlite_journal_factory(tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """A fresh SQLite file per test, written through journal rows where a batch allows."""
    path = tmp_path / "covey.db"
    yield lambda: JournalingSQLiteStore(path)


FACTORIES: dict[str, Callable[[Path], AbstractAsyncContextManager[StoreFactory]]] = {
    "sqlite": sqlite_factory,
    "sqlite-journal": sqlite_journal_factory,
    "postgres": postgres_factory,
    "redis": redis_factory,
}


@pytest.fixture(params=sorted(FACTORIES))
async def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens this test's store: a new, not yet entered store object on the same database per call."""
    async with FACTORIES[request.param](tmp_path) as factory:
        yield factory


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[Store]:
    """This test's store, entered."""
    async with store_factory() as store:
        yield store
