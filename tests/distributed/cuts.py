"""Cutting one test's connections to its servers, server-side, and restarting RabbitMQ.

Other tests share these servers, so only this test's connections are cut,
found by the names covey gives them (the test's schema or key prefix is in
each name):

* PostgreSQL: ``pg_terminate_backend`` for each backend whose
  ``application_name`` is ``covey/<schema>`` (the store) or
  ``covey-bus:<schema>`` (the LISTEN/NOTIFY bus);
* Redis: ``CLIENT KILL ID`` for each client named ``covey-<prefix>`` (the
  store) or ``covey-bus:<prefix>`` (the pub/sub bus);
* RabbitMQ: ``rabbitmqctl close_connection`` for each connection whose
  ``connection_name`` is ``covey-bus:<prefix>``.

Each cut waits until the server has let the connections go, and returns
their ids, so a test can tell the processes' new connections from the cut ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from covey.store.open import backend_of, paired_bus_url, store_namespace
from covey.testing import wait_for
from tests.distributed.conftest import Backend

Ids = dict[str, set[str]]
"""Server kind (``postgres``, ``redis``, ``amqp``) -> ids of this test's connections to it."""


def _servers(backend: Backend) -> dict[str, str]:
    """Server kind -> URL, for the store's server and the bus's (the same one when no bus is given)."""
    store_kind = backend_of(backend.store)
    servers = {store_kind: paired_bus_url(backend.store)}
    if backend.bus is not None:
        servers["amqp"] = backend.bus
    return servers


def _names(backend: Backend, kind: str) -> set[str]:
    namespace = store_namespace(backend.store)
    store = {"postgres": f"covey/{namespace}", "redis": f"covey-{namespace}"}
    names = {f"covey-bus:{namespace}"}
    if kind in store:
        names.add(store[kind])
    return names


async def connections(backend: Backend) -> Ids:
    """This test's connections on each of its servers, now."""
    return {kind: await _LIST[kind](url, _names(backend, kind)) for kind, url in _servers(backend).items()}


async def cut(backend: Backend, kinds: tuple[str, ...] | None = None) -> Ids:
    """Cut this test's connections to its servers (or only to ``kinds``); returns what was cut."""
    done: Ids = {}
    for kind, url in _servers(backend).items():
        if kinds is not None and kind not in kinds:
            continue
        names = _names(backend, kind)
        ids = await _LIST[kind](url, names)
        await _CUT[kind](url, ids)

        async def gone(kind: str = kind, url: str = url, ids: set[str] = ids) -> bool:
            return not ids & await _LIST[kind](url, _names(backend, kind))

        await wait_for(gone, 10.0, 0.05, message=f"the cut {kind} connections to go")
        done[kind] = ids
    return done


# -- PostgreSQL --------------------------------------------------------------------------


async def _postgres_list(url: str, names: set[str]) -> set[str]:
    import asyncpg  # type: ignore[import-untyped]

    admin = await asyncpg.connect(url)
    try:
        rows = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND application_name = ANY($1::text[])",
            sorted(names),
        )
    finally:
        await admin.close()
    return {str(row["pid"]) for row in rows}


async def _postgres_cut(url: str, ids: set[str]) -> None:
    import asyncpg

    admin = await asyncpg.connect(url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest($1::integer[]) AS pid", [int(i) for i in ids]
        )
    finally:
        await admin.close()


# -- Redis -------------------------------------------------------------------------------


async def _redis_list(url: str, names: set[str]) -> set[str]:
    import redis.asyncio as redis

    async with redis.Redis.from_url(url) as admin:
        clients = await admin.client_list()
    return {str(client["id"]) for client in clients if client.get("name", "") in names}


async def _redis_cut(url: str, ids: set[str]) -> None:
    import redis.asyncio as redis

    async with redis.Redis.from_url(url) as admin:
        for client_id in ids:
            with contextlib.suppress(redis.ResponseError):  # it left by itself meanwhile
                await admin.client_kill_filter(_id=client_id)


# -- RabbitMQ ----------------------------------------------------------------------------


async def rabbitmqctl(*args: str, timeout_s: float = 60.0) -> str:
    """Run ``rabbitmqctl ARGS`` and return its output; AssertionError if it fails."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"rabbitmqctl {' '.join(args)} failed: {out.decode()}"
    return out.decode()


async def _amqp_list(url: str, names: set[str]) -> set[str]:
    listing = await rabbitmqctl("-q", "list_connections", "--no-table-headers", "pid", "client_properties")
    wanted = {f'{{"connection_name","{name}"}}' for name in names}
    return {line.split("\t", 1)[0] for line in listing.splitlines() if any(name in line for name in wanted)}


async def _amqp_cut(url: str, ids: set[str]) -> None:
    await asyncio.gather(*(rabbitmqctl("close_connection", pid, "covey test: cut on purpose") for pid in ids))


_LIST = {"postgres": _postgres_list, "redis": _redis_list, "amqp": _amqp_list}
_CUT = {"postgres": _postgres_cut, "redis": _redis_cut, "amqp": _amqp_cut}


@contextlib.asynccontextmanager
async def rabbitmq_stopped(url: str) -> AsyncIterator[None]:
    """Stop the RabbitMQ application for the body of the ``with``, then start it and wait for its port.

    The broker is started again however the body ends (an error, a timeout).
    """
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 5672)
    await rabbitmqctl("stop_app")
    try:
        yield
    finally:
        await rabbitmqctl("start_app")

        def accepting() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(address, timeout=0.5):
                return True
            return False

        await wait_for(accepting, 30.0, 0.1, message="RabbitMQ to accept connections again")
