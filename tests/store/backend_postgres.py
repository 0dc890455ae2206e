"""The PostgreSQL backend of the store tests: a schema of its own per test, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from covey.store.postgres import PostgresStore
from covey.testing.conformance import StoreFactory
from covey.testing.servers import postgres_url


def unique_schema() -> str:
    """A schema name no other test uses."""
    return f"covey_test_{uuid.uuid4().hex[:16]}"


async def drop_schema(url: str, schema: str) -> None:
    """Drop a test's schema and everything in it."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@asynccontextmanager
async def postgres_factory(tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """A fresh schema per test on the test server (skipped without one, failed under CI=true)."""
    url = postgres_url()
    schema = unique_schema()
    try:
        yield lambda: PostgresStore(url, schema=schema)
    finally:
        await drop_schema(url, schema)
