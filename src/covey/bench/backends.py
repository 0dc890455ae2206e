"""Which stores and buses a bench measures, and a fresh, removable namespace on each server.

A backend is named the way ``--backends`` takes it: ``sqlite`` (the embedded
store), ``postgres``, ``redis`` (each with its own server as the bus),
``redis+amqp`` and ``postgres+amqp`` (RabbitMQ as the bus). The servers'
URLs default to the standard ports on loopback and can be overridden
(:class:`Servers`). Every workload gets a schema or key prefix of its own,
removed afterwards (:func:`fresh_namespace`), so a bench never touches
anything else on a shared server and never flushes it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from covey.errors import ConfigError
from covey.store.open import backend_of, masked, split_option

__all__ = [
    "BACKENDS",
    "DEFAULT_AMQP",
    "DEFAULT_POSTGRES",
    "DEFAULT_REDIS",
    "Backend",
    "Servers",
    "drop_postgres_schema",
    "drop_redis_prefix",
    "fresh_namespace",
    "parse_backends",
]

#: Every combination ``--backends`` knows, in the order the table prints them.
BACKENDS = ("sqlite", "postgres", "redis", "redis+amqp", "postgres+amqp")
DEFAULT_POSTGRES = "postgresql://127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass(frozen=True, slots=True)
class Servers:
    """Where the shared servers are (store URLs without schema or prefix)."""

    postgres: str = DEFAULT_POSTGRES
    redis: str = DEFAULT_REDIS
    amqp: str = DEFAULT_AMQP


@dataclass(frozen=True, slots=True)
class Backend:
    """One store and bus combination as the bench measures it.

    ``store`` is the server URL without a schema or prefix (the bench adds a
    fresh one per workload); ``bus`` is None for the store's own server.
    """

    name: str
    kind: str
    """``sqlite``, ``postgres`` or ``redis``."""
    store: str
    bus: str | None = None

    @property
    def embedded(self) -> bool:
        """True for the embedded SQLite store (the runner in the bench process)."""
        return self.kind == "sqlite"

    def store_url(self, namespace: str) -> str:
        """The store URL with ``namespace`` as its schema (PostgreSQL) or key prefix (Redis)."""
        option = "schema" if self.kind == "postgres" else "prefix"
        separator = "&" if "?" in self.store else "?"
        return f"{self.store}{separator}{option}={namespace}"


def parse_backends(text: str, servers: Servers) -> list[Backend]:
    """The backends named by ``--backends`` (comma-separated), in the order given.

    Raises:
        ConfigError: for a name that is not one of :data:`BACKENDS`.
    """
    out: list[Backend] = []
    for part in text.split(","):
        name = part.strip().lower().replace("rabbitmq", "amqp").replace("postgresql", "postgres")
        if not name:
            continue
        if name not in BACKENDS:
            raise ConfigError(f"--backends: no backend {part.strip()!r}; choose from {', '.join(BACKENDS)}")
        if any(backend.name == name for backend in out):
            continue
        out.append(backend_named(name, servers))
    if not out:
        raise ConfigError(f"--backends: name at least one of {', '.join(BACKENDS)}")
    return out


def backend_named(name: str, servers: Servers) -> Backend:
    """The :class:`Backend` called ``name`` on ``servers``."""
    kind, _, bus = name.partition("+")
    if kind == "sqlite":
        return Backend(name, kind, "sqlite:///")
    store = servers.postgres if kind == "postgres" else servers.redis
    return Backend(name, kind, store, servers.amqp if bus == "amqp" else None)


def backend_of_urls(store: str, bus: str | None) -> Backend:
    """The backend a user's ``--store URL [--bus URL]`` names (its schema or prefix is replaced per workload)."""
    kind = backend_of(store)
    if kind == "sqlite":
        return Backend("sqlite", kind, store)
    base = split_option(store, "schema" if kind == "postgres" else "prefix", "covey")[0].rstrip("?")
    if bus is None or bus.lower() in ("", "none"):
        return Backend(kind, kind, base)
    scheme = bus.partition("://")[0]
    if scheme not in ("amqp", "amqps"):
        raise ConfigError(
            f"covey bench measures a shared store with its own server or RabbitMQ, not {masked(bus)}"
        )
    return Backend(f"{kind}+amqp", kind, base, bus)


def new_namespace(label: str) -> str:
    """A schema or prefix name nobody else uses: ``covey_bench_<label>_<random>``."""
    return f"covey_bench_{label}_{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def fresh_namespace(backend: Backend, label: str) -> AsyncIterator[str]:
    """A fresh store URL for ``backend`` (own schema or prefix), removed from the server afterwards."""
    namespace = new_namespace(label)
    try:
        yield backend.store_url(namespace)
    finally:
        if backend.kind == "postgres":
            await drop_postgres_schema(backend.store, namespace)
        elif backend.kind == "redis":
            await drop_redis_prefix(backend.store, namespace)


async def drop_postgres_schema(url: str, schema: str) -> None:
    """``DROP SCHEMA ... CASCADE`` of the bench's own schema."""
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


async def drop_redis_prefix(url: str, prefix: str) -> None:
    """Unlink every key holding ``prefix`` (the bench's prefixes are random, so nothing else matches)."""
    import redis.asyncio as redis

    client = redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"*{prefix}*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.unlink(*keys[start : start + 500])
    finally:
        await client.aclose()
