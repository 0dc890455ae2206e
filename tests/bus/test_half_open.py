"""A bus whose connections freeze (no byte back, nothing closed) finds out, reconnects, and reports RESYNC.

Redis and PostgreSQL buses check an idle connection themselves (PING, ``SELECT
1``); the RabbitMQ bus relies on AMQP heartbeats, asked for in its URL here
(``?heartbeat=1``, so about 6 s to notice). The health-check periods are
shortened for the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import ModuleType
from urllib.parse import urlsplit, urlunsplit

import pytest

from covey.bus import amqp, postgres, redis
from covey.bus.base import RESYNC, Bus
from covey.bus.open import open_bus
from covey.testing.bus_conformance import Seen, collect, hinted
from covey.testing.servers import amqp_url, postgres_url, redis_url
from tests.bus.freezing_proxy import FreezingProxy

BACKENDS: dict[str, tuple[Callable[[], str], ModuleType, str]] = {
    "redis": (redis_url, redis, ""),
    "postgres": (postgres_url, postgres, ""),
    "amqp": (amqp_url, amqp, "heartbeat=1"),
}


async def remove_amqp_topology(url: str, prefix: str) -> None:
    """Delete the durable exchanges and dead-letter queue a RabbitMQ bus declared for ``prefix``."""
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(f"{prefix}.dead")
        await channel.exchange_delete(f"{prefix}.hints")
        await channel.exchange_delete(f"{prefix}.dead")


def through(url: str, port: int, query: str) -> str:
    """``url`` pointed at 127.0.0.1:``port`` instead of its server, with ``query`` added."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    joined = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit(parts._replace(netloc=netloc, query=joined))


@pytest.mark.parametrize("backend", list(BACKENDS))
async def test_a_frozen_connection_is_noticed_and_replaced(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    find_server, module, query = BACKENDS[backend]
    server = urlsplit(find_server())
    if hasattr(module, "HEALTH_CHECK_S"):
        monkeypatch.setattr(module, "HEALTH_CHECK_S", 0.2)
    monkeypatch.setattr(module, "CONNECT_TIMEOUT_S", 0.5)
    proxy = FreezingProxy(server.hostname or "127.0.0.1", server.port or 0)
    prefix = f"covey_test_{uuid.uuid4().hex[:12]}"
    async with proxy.running(), AsyncExitStack() as cleanup:
        if backend == "amqp":
            cleanup.push_async_callback(remove_amqp_topology, find_server(), prefix)
        bus: Bus = open_bus(through(find_server(), proxy.listen_port, query), prefix=prefix)
        async with bus:
            seen = Seen(await bus.subscribe({"ready:x"}))
            await bus.publish(["ready:x"])
            await collect(seen, {"ready:x"})
            seen.topics.clear()
            # When every connection the bus has stops answering, without closing
            assert proxy.freeze() > 0
            # Then the bus notices, reconnects (new connections pass), and says so
            await collect(seen, {RESYNC}, timeout=15)
            seen.topics.clear()
            await hinted(bus, seen, "ready:x")
