"""The Redis bus: hints over Redis pub/sub.

A hint for topic ``t`` is a ``PUBLISH`` on channel ``<prefix>:hint:<t>``; one
publish call sends its topics in one pipeline (one round trip). Each bus
holds one listening connection, subscribed to the channels of every topic
its subscriptions hold, and fans what it receives out to them
(:class:`~covey.bus.memory.Fanout`). Pub/sub channels are global to a Redis
server (the database number does not separate them), so the prefix is what
keeps two installations apart.

Redis pub/sub delivers to whoever is connected and subscribed at that moment
and keeps nothing: a hint sent while the listener is reconnecting is lost.
That is why, after every reconnection, the listener first subscribes again
and only then reports :data:`~covey.bus.base.RESYNC`: whoever reads the store
after RESYNC is sure to be hinted of anything committed after that read.

Design notes:

* The listener uses a bare redis-py ``Connection`` instead of
  ``redis.asyncio.client.PubSub``: ``PubSub`` reconnects and resubscribes by
  itself inside its reads, which would hide exactly the moment this bus must
  report RESYNC.
* Reads never time out (a timeout that lands in the middle of a reply would
  tear it); a watchdog PINGs an idle connection every
  :data:`HEALTH_CHECK_S` seconds and drops it when nothing at all came back
  for two periods, which catches a half-open TCP connection.
* While the listener is down, ``publish`` drops hints at once (logged at
  debug level; the listener logged the outage) instead of waiting on connect
  timeouts after every commit.
* Both connections are named ``covey-bus:<prefix>`` (``CLIENT LIST`` shows
  which process is whose); the tests cut them with ``CLIENT KILL``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Collection
from types import TracebackType
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection, parse_url
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from covey.bus.keeper import BACKOFF_MAX_S, BACKOFF_MIN_S, Keeper
from covey.bus.memory import Fanout, LocalSubscription
from covey.bus.open import redact_url
from covey.errors import ConfigError

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "HEALTH_CHECK_S", "RedisBus"]

log = logging.getLogger("covey.bus.redis")

#: An idle listening connection is PINGed this often, and dropped after two periods of silence, in seconds.
HEALTH_CHECK_S = 5.0
#: How long connecting (and a publish or subscribe round trip) may take, in seconds.
CONNECT_TIMEOUT_S = 2.0

_ERRORS = (RedisError, OSError, TimeoutError)


class RedisBus:
    """Hints over Redis pub/sub, on channels named ``<prefix>:hint:<topic>``.

    Args:
        url: ``redis://[user:password@]host:port[/db]`` or ``rediss://`` for TLS.
        prefix: starts every channel name; buses on one prefix see each other's hints.

    Raises:
        ConfigError: ``url`` is not a Redis URL.
    """

    def __init__(self, url: str, *, prefix: str = "covey") -> None:
        try:
            kwargs: dict[str, Any] = dict(parse_url(url))
        except ValueError as exc:
            raise ConfigError(f"bad Redis URL {redact_url(url)!r}: {exc}") from None
        self._name = "covey-bus:" + "".join(c if c.isprintable() and c != " " else "_" for c in prefix)
        self._connection_class: type[Connection] = kwargs.pop("connection_class", Connection)
        # RESP2 and bytes whatever the URL asks: pub/sub messages are then plain lists of bytes, not RESP3 pushes.
        self._connect_kwargs = kwargs | {
            "client_name": self._name,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "protocol": 2,
            "decode_responses": False,
        }
        self._url = url
        self._where = redact_url(url)
        self._prefix = f"{prefix}:hint:".encode()
        self._heard = 0.0
        self._fanout = Fanout(self)
        self._client: Redis | None = None
        self._conn: Connection | None = None
        self._confirm: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._keeper: Keeper[Connection] = Keeper(
            f"redis bus {self._where}",
            f"{self._name} listener",
            connect=self._connect,
            serve=self._listen_on,
            drop=self._drop,
            errors=_ERRORS,
        )

    def channel_prefix_on(self, url: str) -> str | None:
        """The channel prefix a script run on the Redis server at ``url`` may PUBLISH this bus's hints to.

        None unless ``url`` names this bus's server as the same user: pub/sub
        channels are global to a server, whatever the database number.
        """
        try:
            other = parse_url(url)
        except ValueError:
            return None
        mine = dict(parse_url(self._url))
        where = ("host", "port", "path", "username")
        if any(mine.get(key) != other.get(key) for key in where):
            return None
        return self._prefix.decode()

    async def __aenter__(self) -> RedisBus:
        self._client = Redis.from_url(
            self._url,
            client_name=self._name,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1),
        )
        self._fanout.open()
        await self._keeper.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every subscription and both connections; idempotent."""
        self._fanout.close()
        await self._keeper.stop()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def publish(self, topics: Collection[str]) -> None:
        """PUBLISH one message per topic in one pipeline; logs and returns if Redis cannot take them."""
        unique = list(dict.fromkeys(topics))
        if not unique:
            return
        client = self._client
        if client is None or self._conn is None:
            log.debug("redis bus %s is not connected; dropped hints %s", self._where, unique)
            return
        try:
            if len(unique) == 1:  # the common case (one hint per commit) skips the pipeline's overhead
                await client.publish(self._prefix + unique[0].encode(), unique[0])
                return
            async with client.pipeline(transaction=False) as pipe:
                for topic in unique:
                    pipe.publish(self._prefix + topic.encode(), topic)
                await pipe.execute()
        except _ERRORS as exc:
            log.warning("redis bus %s: could not publish %d hints: %s", self._where, len(unique), exc)

    async def subscribe(self, topics: Collection[str]) -> LocalSubscription:
        """A subscription to ``topics``, receiving hints published once this returns."""
        return await self._fanout.subscribe(topics)

    # The Listener side, called by the fan-out.

    async def listen(self, topics: Collection[str]) -> None:
        """SUBSCRIBE to ``topics``' channels and wait for Redis to confirm (if connected)."""
        conn = self._conn
        if conn is None:
            return  # subscribed when the listener reconnects, and then RESYNC is reported
        try:
            confirmed = await self._subscribe(conn, [self._prefix + topic.encode() for topic in topics])
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await asyncio.gather(*confirmed)
        except _ERRORS as exc:
            log.debug(
                "redis bus %s: SUBSCRIBE not confirmed (%s); the listener resubscribes", self._where, exc
            )

    async def _subscribe(self, conn: Connection, channels: Collection[bytes]) -> list[asyncio.Future[None]]:
        """Send SUBSCRIBE; the futures resolve when Redis confirms each channel *of this command*.

        Redis answers a connection's commands in order, so the n-th confirmation
        of a channel answers the n-th SUBSCRIBE naming it: pairing them
        first-in first-out means no earlier SUBSCRIBE's answer (one followed by
        an UNSUBSCRIBE) is taken for this one's.
        """
        loop = asyncio.get_running_loop()
        futures = []
        for channel in channels:
            future: asyncio.Future[None] = loop.create_future()
            self._confirm.setdefault(channel, deque()).append(future)
            futures.append(future)
        await conn.send_command("SUBSCRIBE", *channels, check_health=False)
        return futures

    async def unlisten(self, topics: Collection[str]) -> None:
        """UNSUBSCRIBE from ``topics``' channels (the fan-out already stopped delivering them)."""
        conn = self._conn
        if conn is None:
            return
        channels = [self._prefix + topic.encode() for topic in topics]
        try:
            await conn.send_command("UNSUBSCRIBE", *channels, check_health=False)
        except _ERRORS as exc:
            log.debug("redis bus %s: UNSUBSCRIBE failed (%s)", self._where, exc)

    # The listening connection.

    async def _connect(self) -> Connection:
        conn = self._connection_class(**self._connect_kwargs)
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        return conn

    async def _drop(self, conn: Connection) -> None:
        self._conn = None
        self._release_waiters()
        await conn.disconnect(nowait=True)

    async def _listen_on(self, conn: Connection) -> None:
        """Subscribe ``conn`` to every held topic, then read until it fails; RESYNC once subscribed."""
        self._conn = conn
        channels = {self._prefix + topic.encode() for topic in self._fanout.topics()}
        if channels:
            await self._subscribe(conn, channels)
        else:
            self._fanout.resync()
        self._keeper.live()
        watchdog = asyncio.create_task(self._watch(conn), name=f"{self._name} watchdog")
        try:
            await self._read(conn, channels)
        finally:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)

    async def _read(self, conn: Connection, unconfirmed: set[bytes]) -> None:
        while True:
            reply = await conn.read_response(timeout=math.inf, disconnect_on_error=False)
            self._heard = asyncio.get_running_loop().time()
            if not isinstance(reply, list) or len(reply) < 2:
                continue
            kind, channel = reply[0], reply[1]
            if kind == b"message" and isinstance(channel, bytes) and channel.startswith(self._prefix):
                self._fanout.deliver(channel[len(self._prefix) :].decode(errors="replace"))
            elif kind == b"subscribe" and isinstance(channel, bytes):
                waiting = self._confirm.get(channel)
                if waiting:
                    future = waiting.popleft()
                    if not future.done():
                        future.set_result(None)
                if channel in unconfirmed:
                    unconfirmed.discard(channel)
                    if not unconfirmed:
                        self._fanout.resync()

    async def _watch(self, conn: Connection) -> None:
        """PING an idle connection; drop it when two periods passed without a byte from Redis."""
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        while True:
            await asyncio.sleep(HEALTH_CHECK_S)
            silent = loop.time() - self._heard
            if silent > 2 * HEALTH_CHECK_S:
                log.warning("redis bus %s: no answer for %.0fs; dropping the connection", self._where, silent)
                await conn.disconnect(nowait=True)
                return
            if silent >= HEALTH_CHECK_S:
                await conn.send_command("PING", check_health=False)

    def _release_waiters(self) -> None:
        for waiting in self._confirm.values():
            for future in waiting:
                if not future.done():
                    future.set_result(None)
        self._confirm.clear()
