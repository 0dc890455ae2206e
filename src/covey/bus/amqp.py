"""The RabbitMQ bus: hints through a direct exchange to one queue per bus.

Topology, for a prefix ``p`` (docs/buses.md has the measurements behind it):

* ``p.hints``: a durable **direct** exchange. A hint is one message whose
  routing key is its topic (:func:`routing_key`) and whose body is the topic
  in UTF-8. A direct exchange matches keys exactly, so no topic can act as a
  wildcard, as ``#`` or ``*`` would in a topic exchange; and it delivers a
  message to *every* queue bound with its key, which is the fan-out the
  contract asks for.
* one **classic, exclusive, auto-delete** queue per bus object (so per
  process), bound to ``p.hints`` once per topic its subscriptions hold. It
  lives as long as its connection and disappears with it. Measured here,
  classic queues had less than half the latency of quorum queues and at
  least the same throughput, and a hint needs none of a quorum queue's
  durability: the store re-announces what a lost hint would have said.
* ``p.dead``: a fanout exchange, the queues' dead-letter exchange, and a
  durable queue ``p.dead`` bound to it, capped at :data:`DEAD_LETTER_MAX`
  messages (the oldest go first), where operators find messages that could
  not be parsed (their ``x-death`` header says why).

Delivery: publisher confirms (``publish`` returns once the broker has the
hints), and manual acks sent as soon as a hint is received: a hint is never
held while work runs, so RabbitMQ's ``consumer_timeout`` can never close the
channel. A message whose body is not a topic matching its routing key is
rejected without requeueing, which dead-letters it.

Design notes:

* Competing consumers (one queue per skill, shared by the workers serving
  it) were measured too and rejected: a hint would wake one worker, which may
  have no free slot while the others sleep until their next poll, and the
  ``inbox`` and ``state:`` topics must reach every engine loop and watcher.
* Reconnection is this module's own loop rather than ``connect_robust``:
  the first connection may fail too (a bus must still start, and poll), and
  RESYNC must be reported after the queue and all its bindings exist again,
  not when the socket is back.
* Connections are named ``covey-bus:<prefix>`` (``connection_name``), which
  the management UI and ``rabbitmqctl list_connections user_provided_name``
  show; the tests close them with ``rabbitmqctl close_connection``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from types import TracebackType

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPError

from covey.bus.keeper import BACKOFF_MAX_S, BACKOFF_MIN_S, Keeper
from covey.bus.memory import Fanout, LocalSubscription
from covey.bus.open import redact_url

__all__ = [
    "BACKOFF_MAX_S",
    "BACKOFF_MIN_S",
    "DEAD_LETTER_MAX",
    "AmqpBus",
    "parse_hint",
    "routing_key",
]

log = logging.getLogger("covey.bus.amqp")

#: How long connecting, a publish confirm or a bind may take, in seconds.
CONNECT_TIMEOUT_S = 2.0
#: Messages the broker may push to a bus before its acks (they are acked on receipt).
PREFETCH = 256
#: The dead-letter queue keeps this many messages, dropping the oldest.
DEAD_LETTER_MAX = 1_000
#: The longest routing key AMQP allows, in bytes.
_MAX_KEY_BYTES = 255

_ERRORS = (AMQPError, OSError, TimeoutError)


def routing_key(topic: str) -> str:
    """The routing key of ``topic``: the topic itself, or a digest of one longer than AMQP allows."""
    if len(topic.encode()) <= _MAX_KEY_BYTES:
        return topic
    return "sha256:" + hashlib.sha256(topic.encode()).hexdigest()


def parse_hint(body: bytes, key: str) -> str | None:
    """The topic a message carries, or None when its body is not a topic matching its routing key."""
    try:
        topic = body.decode()
    except UnicodeDecodeError:
        return None
    if not topic or routing_key(topic) != key:
        return None
    return topic


@dataclass(slots=True)
class _Live:
    """One connection's working objects."""

    connection: aio_pika.abc.AbstractConnection
    publishing: AbstractChannel
    consuming: AbstractChannel
    exchange: AbstractExchange
    queue: AbstractQueue


class AmqpBus:
    """Hints through RabbitMQ: a direct exchange, one exclusive classic queue per bus.

    Args:
        url: ``amqp://user:password@host:5672/vhost`` or ``amqps://`` for TLS;
            query options such as ``?heartbeat=10`` pass through to aio-pika.
        prefix: starts every exchange and queue name; buses on one prefix (and
            vhost) see each other's hints.
    """

    def __init__(self, url: str, *, prefix: str = "covey") -> None:
        self._url = url
        self._where = redact_url(url)
        self._exchange = f"{prefix}.hints"
        self._dead = f"{prefix}.dead"
        self._queue_prefix = f"{prefix}.bus."
        self._name = f"covey-bus:{prefix}"
        self._fanout = Fanout(self)
        self._live: _Live | None = None
        self._keeper: Keeper[aio_pika.abc.AbstractConnection] = Keeper(
            f"amqp bus {self._where}",
            f"{self._name} consumer",
            connect=self._connect,
            serve=self._serve,
            drop=self._drop,
            errors=_ERRORS,
        )

    async def __aenter__(self) -> AmqpBus:
        self._fanout.open()
        await self._keeper.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every subscription and the connection (its queue goes with it); idempotent."""
        self._fanout.close()
        await self._keeper.stop()

    async def publish(self, topics: Collection[str]) -> None:
        """Publish one message per topic and wait for the broker's confirms; logs what it could not send."""
        unique = list(dict.fromkeys(topics))
        live = self._live
        if not unique:
            return
        if live is None:
            log.debug("amqp bus %s is not connected; dropped hints %s", self._where, unique)
            return
        results = await asyncio.gather(
            *(self._publish_one(live.exchange, topic) for topic in unique), return_exceptions=True
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure
        if failures:
            log.warning(
                "amqp bus %s: could not publish %d of %d hints: %s",
                self._where,
                len(failures),
                len(unique),
                failures[0],
            )

    async def _publish_one(self, exchange: AbstractExchange, topic: str) -> None:
        message = aio_pika.Message(
            topic.encode(), content_type="text/plain", delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT
        )
        await exchange.publish(message, routing_key(topic), mandatory=False, timeout=CONNECT_TIMEOUT_S)

    async def subscribe(self, topics: Collection[str]) -> LocalSubscription:
        """A subscription to ``topics``, receiving hints published once this returns."""
        return await self._fanout.subscribe(topics)

    # The Listener side, called by the fan-out.

    async def listen(self, topics: Collection[str]) -> None:
        """Bind this bus's queue to ``topics`` (if connected); returns once the broker confirmed."""
        live = self._live
        if live is None:
            return  # bound when the bus reconnects, and then RESYNC is reported
        try:
            for topic in topics:
                await live.queue.bind(self._exchange, routing_key(topic), timeout=CONNECT_TIMEOUT_S)
        except _ERRORS as exc:
            log.debug("amqp bus %s: bind failed (%s); the bus rebinds when it reconnects", self._where, exc)

    async def unlisten(self, topics: Collection[str]) -> None:
        """Unbind this bus's queue from ``topics``."""
        live = self._live
        if live is None:
            return
        try:
            for topic in topics:
                await live.queue.unbind(self._exchange, routing_key(topic), timeout=CONNECT_TIMEOUT_S)
        except _ERRORS as exc:
            log.debug("amqp bus %s: unbind failed (%s)", self._where, exc)

    # The connection.

    async def _connect(self) -> aio_pika.abc.AbstractConnection:
        return await aio_pika.connect(
            self._url, timeout=CONNECT_TIMEOUT_S, client_properties={"connection_name": self._name}
        )

    async def _drop(self, connection: aio_pika.abc.AbstractConnection) -> None:
        self._live = None
        await self._close_quietly(connection)

    async def _serve(self, connection: aio_pika.abc.AbstractConnection) -> None:
        """Set the topology up on ``connection``, report RESYNC, and wait until it or a channel closes."""
        live = await self._declare(connection)
        self._fanout.resync()
        self._keeper.live()
        closed = [
            asyncio.ensure_future(connection.closed()),
            asyncio.ensure_future(live.publishing.closed()),
            asyncio.ensure_future(live.consuming.closed()),
        ]
        try:
            await asyncio.wait(closed, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in closed:
                waiter.cancel()
        raise ConnectionResetError("the connection or one of its channels closed")

    async def _declare(self, connection: aio_pika.abc.AbstractConnection) -> _Live:
        publishing = await connection.channel(publisher_confirms=True)
        consuming = await connection.channel(publisher_confirms=False)
        await consuming.set_qos(prefetch_count=PREFETCH)
        exchange = await publishing.declare_exchange(
            self._exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        dead = await consuming.declare_exchange(self._dead, aio_pika.ExchangeType.FANOUT, durable=True)
        graveyard = await consuming.declare_queue(
            self._dead, durable=True, arguments={"x-max-length": DEAD_LETTER_MAX, "x-queue-type": "classic"}
        )
        await graveyard.bind(dead)
        queue = await consuming.declare_queue(
            self._queue_prefix + uuid.uuid4().hex[:16],
            exclusive=True,
            auto_delete=True,
            arguments={"x-dead-letter-exchange": self._dead, "x-queue-type": "classic"},
        )
        # From here on listen() binds topics added meanwhile itself; these are the ones held before.
        held = self._fanout.topics()
        self._live = live = _Live(connection, publishing, consuming, exchange, queue)
        for topic in held:
            await queue.bind(self._exchange, routing_key(topic), timeout=CONNECT_TIMEOUT_S)
        await queue.consume(self._on_message, no_ack=False)
        return live

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        topic = parse_hint(message.body, message.routing_key or "")
        try:
            if topic is None:
                log.warning(
                    "amqp bus %s: dead-lettered a message that is not a hint (routing key %.80r)",
                    self._where,
                    message.routing_key,
                )
                await message.reject(requeue=False)
                return
            self._fanout.deliver(topic)
            await message.ack()
        except _ERRORS as exc:
            log.debug("amqp bus %s: could not settle a message (%s)", self._where, exc)

    async def _close_quietly(self, connection: aio_pika.abc.AbstractConnection) -> None:
        try:
            await connection.close()
        except Exception as exc:  # closing a dead connection may fail in many ways; it is gone either way
            log.debug("amqp bus %s: closing the connection: %s", self._where, exc)
