"""Fixtures for the bus tests: each bus the conformance suite runs against.

``bus_factory`` is parametrized by backend. Every test gets prefixes of its
own (``covey-test-<random>-<space>``), so tests never see each other's hints
on a shared server and nothing is flushed. A backend plugs in with one entry
in ``BACKENDS``: an async context manager yielding its three fixtures
(:mod:`covey.testing.bus_conformance` says what they do), cleaning up what
the test left on the server afterwards.

How each backend cuts its connections server-side (``kill_connections``):

* Redis: ``CLIENT KILL ID`` for each client named ``covey-bus:<test prefix>...``.
* PostgreSQL: ``pg_terminate_backend`` for each backend whose
  ``application_name`` is ``covey-bus:<test prefix>...``.
* RabbitMQ: ``rabbitmqctl close_connection`` for each connection named
  ``covey-bus:<test prefix>...`` (``rabbitmqctl list_connections``). Without a
  usable ``rabbitmqctl`` (not on PATH, not allowed), the test aborts the
  buses' sockets client-side instead, which the bus sees the same way.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import pytest

from covey.bus.base import Bus
from covey.bus.open import open_bus
from covey.testing.bus_conformance import PASSWORD, BusFactory, KillConnections, UnreachableBusFactory
from covey.testing.servers import amqp_url, postgres_url, redis_url


@dataclass
class Fixtures:
    """What a backend gives the conformance suite."""

    bus_factory: BusFactory
    kill_connections: KillConnections | None
    unreachable_bus_factory: UnreachableBusFactory | None


def _tag() -> str:
    return f"covey_test_{uuid.uuid4().hex[:12]}"


def _factory(make: Callable[[str], Bus], tag: str) -> BusFactory:
    def factory(space: str = "main") -> Bus:
        return make(f"{tag}_{space}")

    return factory


@asynccontextmanager
async def memory_fixtures() -> AsyncIterator[Fixtures]:
    yield Fixtures(_factory(lambda prefix: open_bus("memory://", prefix=prefix), _tag()), None, None)


@asynccontextmanager
async def redis_fixtures() -> AsyncIterator[Fixtures]:
    import redis.asyncio as redis

    url = redis_url()
    tag = _tag()

    async def kill() -> None:
        async with redis.Redis.from_url(url) as admin:
            clients = await admin.client_list()
            ours = [
                client["id"] for client in clients if client.get("name", "").startswith(f"covey-bus:{tag}")
            ]
            assert ours, "the buses have connections to cut"
            for client_id in ours:
                await admin.client_kill_filter(_id=client_id)

    unreachable = f"redis://user:{PASSWORD}@127.0.0.1:1/0"
    yield Fixtures(
        _factory(lambda prefix: open_bus(url, prefix=prefix), tag),
        kill,
        lambda: open_bus(unreachable, prefix=tag),
    )


@asynccontextmanager
async def postgres_fixtures() -> AsyncIterator[Fixtures]:
    import asyncpg  # type: ignore[import-untyped]

    url = postgres_url()
    tag = _tag()

    async def kill() -> None:
        admin = await asyncpg.connect(url)
        try:
            killed = await admin.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE $1",
                f"covey-bus:{tag}%",
            )
        finally:
            await admin.close()
        assert killed, "the buses have connections to cut"

    yield Fixtures(
        _factory(lambda prefix: open_bus(url, prefix=prefix), tag),
        kill,
        lambda: open_bus(f"postgresql://covey:{PASSWORD}@127.0.0.1:1/test", prefix=tag),
    )


async def _rabbitmqctl(*args: str) -> str | None:
    """Run rabbitmqctl; None when it is missing or refuses (not root, no cookie)."""
    if shutil.which("rabbitmqctl") is None:
        return None
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    return out.decode() if process.returncode == 0 else None


@asynccontextmanager
async def amqp_fixtures() -> AsyncIterator[Fixtures]:
    import aio_pika

    from covey.bus.amqp import AmqpBus

    url = amqp_url()
    tag = _tag()
    made: list[AmqpBus] = []

    def make(prefix: str) -> Bus:
        bus = AmqpBus(url, prefix=prefix)
        made.append(bus)
        return bus

    async def kill() -> None:
        listing = await _rabbitmqctl(
            "-q", "list_connections", "--no-table-headers", "pid", "client_properties"
        )
        if listing is None:
            # No usable rabbitmqctl: close the buses' connection objects instead, which they see as a loss too.
            lives = [bus._live for bus in made if bus._live is not None]
            assert lives, "the buses have connections to cut"
            await asyncio.gather(*(live.connection.close() for live in lives))
            return
        ours = [line.split("\t", 1)[0] for line in listing.splitlines() if f'"covey-bus:{tag}' in line]
        assert ours, "the buses have connections to cut"
        await asyncio.gather(
            *(_rabbitmqctl("close_connection", pid, "covey test: cut on purpose") for pid in ours)
        )

    try:
        yield Fixtures(
            _factory(make, tag),
            kill,
            lambda: AmqpBus(f"amqp://guest:{PASSWORD}@127.0.0.1:1/", prefix=tag),
        )
    finally:
        # The exchanges and the dead-letter queue are durable: remove this test's.
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            for prefix in {f"{tag}_{space}" for space in ("main", "other")}:
                await channel.queue_delete(f"{prefix}.dead")
                await channel.exchange_delete(f"{prefix}.hints")
                await channel.exchange_delete(f"{prefix}.dead")


BACKENDS: dict[str, Callable[[], AbstractAsyncContextManager[Fixtures]]] = {
    "memory": memory_fixtures,
    "redis": redis_fixtures,
    "amqp": amqp_fixtures,
    "postgres": postgres_fixtures,
}


@pytest.fixture(params=list(BACKENDS))
async def bus_backend(request: pytest.FixtureRequest) -> AsyncIterator[Fixtures]:
    """This test's backend: its bus factory, how to cut its connections, an unreachable bus."""
    async with BACKENDS[request.param]() as fixtures:
        yield fixtures


@pytest.fixture
def bus_factory(bus_backend: Fixtures) -> BusFactory:
    """Makes new, not yet entered buses on this test's prefixes (see covey.testing.bus_conformance)."""
    return bus_backend.bus_factory


@pytest.fixture
def kill_connections(bus_backend: Fixtures) -> KillConnections | None:
    """Cuts the connections of this test's buses server-side; None for the in-process bus."""
    return bus_backend.kill_connections


@pytest.fixture
def unreachable_bus_factory(bus_backend: Fixtures) -> UnreachableBusFactory | None:
    """Makes a bus whose server cannot be reached (its URL holds a password); None for in-process."""
    return bus_backend.unreachable_bus_factory
