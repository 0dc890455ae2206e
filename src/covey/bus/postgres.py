"""The PostgreSQL bus: hints over LISTEN/NOTIFY.

All hints of one installation travel on one NOTIFY channel (``covey`` by
default); the payload of a notification is a JSON array of topics, so one
publish call costs one notification (more only when its topics pass the
payload cap). Each bus holds one connection: it LISTENs on the channel, sends
its NOTIFYs, and fans received topics out to its subscriptions, each of
which keeps only the topics it holds (:class:`~covey.bus.memory.Fanout`).

PostgreSQL delivers a notification to the sessions listening when the
NOTIFY commits and keeps nothing for a session that was not there: after a
reconnection the bus LISTENs again and only then reports
:data:`~covey.bus.base.RESYNC`.

Design notes:

* DESIGN asks for few, small notifications: the server's notification queue
  (8 GB by default) is shared by every database of the cluster, and a full
  one makes *commits* fail. A payload stays under :data:`PAYLOAD_CAP_BYTES`
  (the server refuses 8,000 bytes and more); a single topic too long to fit
  is dropped with a warning.
* ``pg_notify($1, $2)`` with bound parameters, never ``NOTIFY`` built from
  strings: the channel and the topics cannot inject SQL.
* The connection is named ``covey-bus:<channel>`` (``application_name``), so
  ``pg_stat_activity`` says whose it is; the tests cut it with
  ``pg_terminate_backend``.
* An idle connection runs ``SELECT 1`` every :data:`HEALTH_CHECK_S` seconds,
  which finds a half-open TCP connection that would otherwise wait forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from types import TracebackType
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson

from covey.bus.keeper import BACKOFF_MAX_S, BACKOFF_MIN_S, Keeper
from covey.bus.memory import Fanout, LocalSubscription
from covey.bus.open import redact_url
from covey.errors import ConfigError

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "HEALTH_CHECK_S", "PAYLOAD_CAP_BYTES", "PostgresBus"]

log = logging.getLogger("covey.bus.postgres")

#: Largest payload sent in one notification, in bytes (the server's hard limit is 8,000).
PAYLOAD_CAP_BYTES = 7_900
#: An idle connection is checked with ``SELECT 1`` this often, in seconds.
HEALTH_CHECK_S = 5.0
#: How long connecting, a NOTIFY or a health check may take, in seconds.
CONNECT_TIMEOUT_S = 2.0
#: PostgreSQL truncates identifiers, channel names included, to this many bytes.
_MAX_CHANNEL_BYTES = 63

NOTIFY_SQL = "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload"

_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def payloads(topics: Collection[str], cap: int = PAYLOAD_CAP_BYTES) -> tuple[list[str], list[str]]:
    """Pack topics into JSON arrays of at most ``cap`` bytes: (the payloads, the topics too long to send)."""
    out: list[bytes] = []
    too_long: list[str] = []
    batch: list[bytes] = []
    size = 2  # the brackets
    for topic in dict.fromkeys(topics):
        encoded = orjson.dumps(topic)
        if len(encoded) + 2 > cap:
            too_long.append(topic)
            continue
        if batch and size + 1 + len(encoded) > cap:
            out.append(b"[" + b",".join(batch) + b"]")
            batch, size = [], 2
        size += len(encoded) + (1 if batch else 0)
        batch.append(encoded)
    if batch:
        out.append(b"[" + b",".join(batch) + b"]")
    return [payload.decode() for payload in out], too_long


def parse_payload(payload: str) -> list[str] | None:
    """The topics of a notification, or None when it is not a JSON array of strings."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, list) or not all(isinstance(topic, str) for topic in value):
        return None
    return value


class PostgresBus:
    """Hints over PostgreSQL LISTEN/NOTIFY on one channel.

    Args:
        url: a libpq-style URL, ``postgresql://user:password@host:5432/db``
            (``sslmode`` and the other options asyncpg knows pass through).
        channel: the NOTIFY channel; buses on one channel (and one database)
            see each other's hints.

    Raises:
        ConfigError: the channel is empty or longer than 63 bytes.
    """

    def __init__(self, url: str, *, channel: str = "covey") -> None:
        if not channel or len(channel.encode()) > _MAX_CHANNEL_BYTES:
            raise ConfigError(
                f"a PostgreSQL NOTIFY channel name has 1 to {_MAX_CHANNEL_BYTES} bytes, got {channel!r}"
            )
        self._url = url
        self._where = redact_url(url)
        self._channel = channel
        self._name = f"covey-bus:{channel}"[:_MAX_CHANNEL_BYTES]
        self._fanout = Fanout(self)
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._keeper: Keeper[Any] = Keeper(
            f"postgres bus {self._where}",
            f"{self._name} listener",
            connect=self._connect,
            serve=self._serve,
            drop=self._drop,
            errors=_ERRORS,
        )

    async def __aenter__(self) -> PostgresBus:
        self._fanout.open()
        await self._keeper.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every subscription and the connection; idempotent."""
        self._fanout.close()
        await self._keeper.stop()

    async def publish(self, topics: Collection[str]) -> None:
        """NOTIFY the topics, as few notifications as the payload cap allows; logs on failure."""
        batch, too_long = payloads(topics)
        for topic in too_long:
            log.warning("postgres bus: topic %.60r... does not fit in a notification; dropped", topic)
        conn = self._conn
        if not batch:
            return
        if conn is None:
            log.debug("postgres bus %s is not connected; dropped hints %s", self._where, batch)
            return
        try:
            async with self._lock, asyncio.timeout(CONNECT_TIMEOUT_S):
                await conn.execute(NOTIFY_SQL, self._channel, batch)
        except _ERRORS as exc:
            log.warning("postgres bus %s: could not publish hints: %s", self._where, exc)

    async def subscribe(self, topics: Collection[str]) -> LocalSubscription:
        """A subscription to ``topics``, receiving hints published once this returns."""
        return await self._fanout.subscribe(topics)

    # The Listener side: one channel carries every topic, so there is nothing to change on the server.

    async def listen(self, topics: Collection[str]) -> None:
        """Nothing to do: the connection already LISTENs to every topic's channel."""

    async def unlisten(self, topics: Collection[str]) -> None:
        """Nothing to do: the fan-out filters topics nobody holds."""

    # The connection.

    async def _connect(self) -> Any:
        conn = await asyncpg.connect(
            self._url, timeout=CONNECT_TIMEOUT_S, server_settings={"application_name": self._name}
        )
        try:
            await conn.add_listener(self._channel, self._on_notification)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _drop(self, conn: Any) -> None:
        self._conn = None
        conn.terminate()

    async def _serve(self, conn: Any) -> None:
        """Publish on ``conn`` and check it while idle, until it is lost; RESYNC once listening."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        self._conn = conn
        self._fanout.resync()
        self._keeper.live()
        while True:
            try:
                async with asyncio.timeout(HEALTH_CHECK_S):
                    await lost.wait()
            except TimeoutError:
                async with self._lock, asyncio.timeout(CONNECT_TIMEOUT_S):
                    await conn.execute("SELECT 1")
                continue
            raise ConnectionResetError("the server closed the connection")

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        topics = parse_payload(payload)
        if topics is None:
            log.warning(
                "postgres bus: ignored a notification that is not a JSON list of topics: %.80r", payload
            )
            return
        for topic in topics:
            self._fanout.deliver(topic)
