"""RabbitMQ specifics: messages that are not hints are dead-lettered, and a bus's queue lives as long as the bus."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.exceptions import ChannelNotFoundEntity

from covey.bus.amqp import AmqpBus, parse_hint, routing_key
from covey.testing import wait_for
from covey.testing.bus_conformance import Seen, collect
from covey.testing.servers import amqp_url


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A prefix of this test's own; its durable exchanges and dead-letter queue are deleted afterwards."""
    name = f"covey_test_{uuid.uuid4().hex[:12]}"
    yield name
    connection = await aio_pika.connect(amqp_url())
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(f"{name}.dead")
        await channel.exchange_delete(f"{name}.hints")
        await channel.exchange_delete(f"{name}.dead")


def test_routing_keys_are_topics_or_digests_of_long_ones() -> None:
    assert routing_key("ready:a.b#*") == "ready:a.b#*"
    long = "state:" + "x" * 300
    assert routing_key(long).startswith("sha256:")
    assert len(routing_key(long)) <= 255
    assert parse_hint(long.encode(), routing_key(long)) == long
    assert parse_hint(b"\xff", "ready:x") is None
    assert parse_hint(b"ready:y", "ready:x") is None
    assert parse_hint(b"", "") is None


async def test_a_message_that_is_not_a_hint_is_dead_lettered_and_hints_still_flow(prefix: str) -> None:
    url = amqp_url()
    async with AmqpBus(url, prefix=prefix) as bus:
        seen = Seen(await bus.subscribe({"ready:x"}))
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(f"{prefix}.hints")
            # When something else publishes garbage under a topic the bus holds
            await exchange.publish(aio_pika.Message(b"\xff\xfe not UTF-8"), routing_key="ready:x")
            await exchange.publish(aio_pika.Message(b"ready:other"), routing_key="ready:x")
            await bus.publish(["ready:x"])
            # Then the hint arrives, the garbage does not, and the garbage waits in the dead-letter queue
            await collect(seen, {"ready:x"})
            dead_queue = await channel.get_queue(f"{prefix}.dead")
            dead: list[aio_pika.abc.AbstractIncomingMessage] = []

            async def both_dead() -> bool:
                message = await dead_queue.get(no_ack=True, fail=False)
                if message is not None:
                    dead.append(message)
                return len(dead) == 2

            await wait_for(both_dead, message="two dead-lettered messages")
        assert sorted(message.body for message in dead) == [b"ready:other", b"\xff\xfe not UTF-8"]
        for message in dead:
            deaths = message.headers["x-death"]
            assert isinstance(deaths, list)
            assert deaths[0]["reason"] == "rejected"  # type: ignore[index,call-overload]
        assert seen.hints() == {"ready:x"}


async def test_a_bus_queue_goes_away_with_the_bus(prefix: str) -> None:
    url = amqp_url()
    async with AmqpBus(url, prefix=prefix) as bus:
        await bus.subscribe({"inbox"})
        live = bus._live
        assert live is not None
        name = live.queue.name
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(ChannelNotFoundEntity):
            await channel.declare_queue(name, passive=True)
