"""Fixtures for the distributed tests: a store and bus combination per parameter, isolated per test.

Each test gets a store URL with its own PostgreSQL schema or Redis key prefix
(removed afterwards) and a bus URL; the bus's topics are kept apart by the
same name. Servers are found with :mod:`covey.testing.servers`: absent ones
skip the test on a laptop and fail it under ``CI=true``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from covey.bench.backends import drop_postgres_schema, drop_redis_prefix
from covey.testing.servers import amqp_url, postgres_url, redis_url

# The support module's checks assert; rewritten like a test's, a failure there shows the values compared.
pytest.register_assert_rewrite("tests.distributed.support")


@dataclass(frozen=True)
class Backend:
    """A store and bus pair as a user would give them."""

    name: str
    store: str
    bus: str | None


#: Every shared-store combination issue 4 names: the seed's Redis + RabbitMQ, and each store alone.
COMBINATIONS = ["postgres", "redis", "redis+amqp", "postgres+amqp"]


@pytest.fixture(params=COMBINATIONS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A fresh store (and bus) for this test."""
    store_kind, _, bus_kind = str(request.param).partition("+")
    name = f"covey_t{uuid.uuid4().hex[:12]}"
    bus = amqp_url() if bus_kind == "amqp" else None
    if store_kind == "postgres":
        base = postgres_url()
        yield Backend(request.param, f"{base}?schema={name}", bus)
        await drop_postgres_schema(base, name)
    else:
        base = redis_url()
        yield Backend(request.param, f"{base}?prefix={name}", bus)
        await drop_redis_prefix(base, name)
