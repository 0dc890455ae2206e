"""The Redis store's connection: the client, its scripts, the checks made on opening, error translation.

Opening checks two things before anything is written. ``maxmemory-policy``
must be ``noeviction``: under any other policy Redis may silently drop keys
(a run, a lease, an inbox row) when memory runs short, and covey's guarantees
would go with them. And the layout version under the prefix must be one this
covey knows: an older covey refuses a newer layout instead of misreading it.

Scripts live in ``lua/*.lua``; each is loaded with ``common.lua`` in front of
it (EVAL scripts cannot share functions) and called by SHA (EVALSHA). After a
server restart the first call finds no script (NOSCRIPT) and redis-py loads
it again. Payloads travel as ARGV: JSON built by orjson and decoded by cjson
in the script, with large bodies (events, outputs, values) as ARGV entries of
their own, referenced by index, so they are never escaped into JSON strings.

Driver errors never leave the store (STYLE 4.2): a lost connection is
:class:`~covey.errors.BackendUnavailable`, anything else
:class:`~covey.errors.BackendError`. redis-py's own retries are off, because
a script that may or may not have run must not silently run twice (an
``add`` would count twice); calls that are safe to repeat (reads, idempotent
writes) are retried once on a fresh connection here. After a failure the
idle pooled connections are dropped, so the next call connects again.
Messages name the server as ``host:port/db``, never with credentials.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.maint_notifications import MaintNotificationsConfig

from covey.bus.base import Bus
from covey.engine.events import EVENT_SCHEMA_VERSION
from covey.errors import BackendError, BackendUnavailable, ConfigError, CoveyError
from covey.store.base import AGING_MS
from covey.store.redis.keys import Keys

__all__ = ["LAYOUT_VERSION", "MIGRATIONS", "SCRIPTS", "Connection", "redact"]


_NAMES = [
    "append_inbox",
    "begin_epoch",
    "claim",
    "claim_or_wait",
    "commit",
    "fire_due",
    "heartbeat",
    "layout",
    "list_runs",
    "list_tasks",
    "locks",
    "purge",
    "read_inbox",
    "release",
    "shards",
    "snapshot",
    "state_apply",
    "state_list",
    "unwait",
]


_LUA = resources.files("covey.store.redis") / "lua"
_COMMON = (
    (_LUA / "common.lua")
    .read_text()
    .replace("@EVENT_V@", str(EVENT_SCHEMA_VERSION))
    .replace("@AGING_MS@", str(AGING_MS))
)

#: Every script's full text (common.lua in front), by name.
SCRIPTS: dict[str, str] = {name: f"{_COMMON}\n{(_LUA / f'{name}.lua').read_text()}" for name in _NAMES}

#: Lua run once each, in order, to bring a prefix's keys from one layout version to the next.
#: Append only: never edit an entry that has shipped. The layout is described in :mod:`.keys`.
MIGRATIONS: list[str] = [
    # 1: the first layout; keys are created as they are written.
    "",
    # 2: a run's history is a Stream (entry id: the event's sequence number), no longer a list.
    (_LUA / "migrate_2_histories.lua").read_text(),
    # 3: an inbox row is a member of the inbox sorted sets, no longer a hash of its own.
    (_LUA / "migrate_3_inbox.lua").read_text(),
    # 4: a history entry holds a commit's events (field es, a JSON array; id: the last one's sequence
    # number); entries of one event (field e) are as before, so nothing is converted. Layout 3 code
    # would misread the new entries: the version keeps it off.
    "",
    # 5: the ids of waiting inbox rows join the seen ids in one hash; no index of all runs.
    (_LUA / "migrate_5_seen.lua").read_text(),
    # 6: finished runs indexed by finished time; a run's row names its output steps, timers and
    # remembered ids (for purge_finished). Layout 5 code would finish runs without indexing them.
    (_LUA / "migrate_6_finished.lua").read_text(),
]
#: The layout version this covey writes.
LAYOUT_VERSION = len(MIGRATIONS)


async def _eval(text: str, g: str, client: aioredis.Redis) -> Any:
    return await client.eval(text, 0, g)


def redact(url: str) -> str:
    """The server a URL names, for messages: scheme, host, port and database, never credentials."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path or ''}"


#: Connections one store object opens at most; more concurrent calls wait for one.
POOL_SIZE = 64
#: How long a call waits for a free connection before it fails as BackendUnavailable, in seconds.
POOL_WAIT_S = 30.0


class Connection:
    """A redis-py asyncio client with covey's scripts, checks and error translation.

    Args:
        url: ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS, ``unix://``).
        prefix: the first part of every key name; stores with different
            prefixes share a server without seeing each other.
        check_eviction: refuse a server whose ``maxmemory-policy`` is not
            ``noeviction``. Turn it off only where ``CONFIG GET`` is not
            permitted and you have made sure of the policy yourself.
    """

    def __init__(self, url: str, *, prefix: str = "covey", check_eviction: bool = True) -> None:
        self.url = url
        self.where = redact(url)
        self.keys = Keys(prefix)
        self.check_eviction = check_eviction
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self.hint_prefix: str | None = None
        """Set by :meth:`carry_hints`: the bus channel prefix the scripts publish hints to."""

    def carry_hints(self, bus: Bus) -> bool:
        """Publish hints from inside the scripts when ``bus`` is a Redis bus on this store's server.

        The inbox script then publishes the ``inbox`` hint and the commit script
        the batch's hints, as their last step: one round trip less for each,
        and a subscriber still hears of a write only once it is complete.
        """
        from covey.bus.redis import RedisBus

        self.hint_prefix = bus.channel_prefix_on(self.url) if isinstance(bus, RedisBus) else None
        return self.hint_prefix is not None

    def hint_channel(self, topic: str) -> str:
        """The channel a script publishes ``topic`` to; "" when hints are not carried."""
        return "" if self.hint_prefix is None else self.hint_prefix + topic

    @property
    def redis(self) -> aioredis.Redis:
        """The client; only while the store is open."""
        assert self._redis is not None, "use 'async with RedisStore(...)'"
        return self._redis

    async def open(self) -> None:
        """Connect, check the server and the layout, and load the scripts."""
        # A blocking pool: past POOL_SIZE concurrent calls (a worker's many agents writing state at
        # once), callers queue for a connection instead of failing with "Too many connections".
        # The URL's own ?max_connections= wins over POOL_SIZE.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT_S,
            retry=Retry(NoBackoff(), 0),
            client_name=f"covey-{self.keys.prefix}",
            # With maintenance notifications on, the pool stops checking a pooled connection for an
            # EOF before using it, and a connection the server closed while idle fails a write.
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        client = aioredis.Redis.from_pool(pool)
        self._redis = client
        try:
            self._scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}
            if self.check_eviction:
                await self._check_eviction()
            await self._check_layout()
            await self.run(self._load_all, idempotent=True)
        except BaseException:
            await self.close()  # a refused server leaves no connection behind
            raise

    async def close(self) -> None:
        """Close every connection."""
        if self._redis is not None:
            client, self._redis = self._redis, None
            await client.aclose()

    async def _load_all(self, client: aioredis.Redis) -> None:
        """Load the scripts the server lacks now, so a broken one fails the opening, not a commit."""
        scripts = list(self._scripts.values())
        known = await client.script_exists(*(script.sha for script in scripts))
        missing = [script for script, found in zip(scripts, known, strict=True) if not found]
        if missing:
            async with client.pipeline(transaction=False) as pipe:
                for script in missing:
                    pipe.script_load(script.script)
                await pipe.execute()

    async def _check_eviction(self) -> None:
        try:
            found = await self.redis.config_get("maxmemory-policy")
        except rex.ResponseError as exc:
            raise ConfigError(
                f"cannot read maxmemory-policy from Redis at {self.where} (CONFIG GET is not permitted: {exc});"
                " covey needs maxmemory-policy noeviction: make sure the server has it, then open the store"
                " with check_eviction=False"
            ) from None
        except rex.RedisError as exc:
            raise self._translate(exc) from None
        values: dict[Any, Any] = dict(found)
        policy = values.get(b"maxmemory-policy", values.get("maxmemory-policy"))
        policy = policy.decode() if isinstance(policy, bytes) else policy
        if policy != "noeviction":
            raise ConfigError(
                f"Redis at {self.where} has maxmemory-policy {policy!r}; covey needs maxmemory-policy noeviction,"
                " or Redis may evict runs, leases and inbox rows when memory runs short:"
                " set it in redis.conf or with CONFIG SET maxmemory-policy noeviction"
            )

    async def _check_layout(self) -> None:
        found = int(await self.script("layout", [str(LAYOUT_VERSION)], idempotent=True))
        if found > LAYOUT_VERSION:
            raise CoveyError(
                f"Redis at {self.where} (prefix {self.keys.prefix!r}) has layout version {found}, newer than"
                f" this covey knows ({LAYOUT_VERSION}); upgrade covey to open it"
            )
        for number in range(found + 1, LAYOUT_VERSION + 1):
            step = (
                f"{_COMMON}\n{MIGRATIONS[number - 1]}\nredis.call('HSET', G .. 'meta', 'layout', '{number}')"
            )
            await self.run(functools.partial(_eval, step, self.keys.g), idempotent=False)

    # -- calls -------------------------------------------------------------------------

    async def run(self, call: Callable[[aioredis.Redis], Awaitable[Any]], *, idempotent: bool) -> Any:
        """Make a call, translating driver errors; a call safe to repeat is retried once after a lost connection."""
        try:
            return await call(self.redis)
        except (rex.ConnectionError, rex.TimeoutError) as exc:
            await self._drop_idle()
            if not idempotent:
                raise self._translate(exc) from None
        except rex.RedisError as exc:
            raise self._translate(exc) from None
        try:
            return await call(self.redis)
        except rex.RedisError as exc:
            await self._drop_idle()
            raise self._translate(exc) from None

    async def script(self, name: str, args: Sequence[Any], *, idempotent: bool = False) -> Any:
        """Run a script with ``ARGV = [global key prefix, *args]``."""
        script = self._scripts[name]
        argv = [self.keys.g, *args]
        return await self.run(lambda r: script(args=argv, client=r), idempotent=idempotent)

    async def _drop_idle(self) -> None:
        """Disconnect idle pooled connections: after one died, the others likely did too."""
        if self._redis is not None:
            try:
                await self._redis.connection_pool.disconnect(inuse_connections=False)
            except (rex.RedisError, OSError):
                pass

    def _translate(self, exc: rex.RedisError) -> BackendError:
        if isinstance(exc, rex.ConnectionError | rex.TimeoutError):
            return BackendUnavailable(
                f"Redis at {self.where} cannot be reached ({exc}); a write in flight may or may not have been"
                " applied; the next call connects again"
            )
        return BackendError(f"Redis at {self.where}: {exc}")
