"""BCAST: one writer, N watching agents over 4 worker processes (the shared-state broadcast), on any store.

For N in 10, 100, 1,000 listeners, and for per-worker fan-out (the default:
one subscription per worker process) against per-agent subscriptions: the
writer commits a stream of updates, each carrying its commit-side wall clock;
every listener records how long each update took to reach it. Prints the
update-to-delivery latency p50/p99 and the change-feed reads per update (on
SQLite counted by the runner's feed, on Redis by the server's ``XRANGE`` count,
on PostgreSQL not counted).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from covey.bench.config import BenchError, Env
from covey.bench.figures import Figure
from covey.bench.fleet import shared_covey
from covey.client import LocalClient, StoreClient
from covey.embedded import Embedded
from covey.state.model import StateOp
from covey.store.base import RunInfo
from covey.store.open import split_option

__all__ = ["BROADCAST_WORKERS", "broadcast"]

#: Worker processes the listeners are spread over.
BROADCAST_WORKERS = 4
#: Pause between two updates of the writer, in seconds (a steady stream, not a burst).
UPDATE_EVERY_S = 0.02


async def broadcast(env: Env) -> list[Figure]:
    """Every listener count and subscription mode; figures per combination."""
    figures: list[Figure] = []
    for listeners in env.sizes.bcast_listeners:
        for private in (False, True):
            figures += await _one(env, listeners, private)
    return figures


async def _one(env: Env, listeners: int, private: bool) -> list[Figure]:
    mode = "per-agent subscriptions" if private else "per-worker fan-out"
    env.say(f"BCAST: {listeners} listeners, {mode}")
    workflow = {"name": "bcast", "steps": {"l": {"skill": "listen", "map": "${input.l}", "input": "${item}"}}}
    run_input = {"l": [{"private": private}] * listeners}
    slots = -(-listeners // BROADCAST_WORKERS) + 2  # slots for a quarter each: spread over the four
    name = f"bcast_{listeners}_{int(private)}"
    reads: int | None
    if env.backend.embedded:
        path = env.db(f"covey-{name}")
        async with Embedded(
            path, app="covey.bench.agents", workers=BROADCAST_WORKERS, processes=True, concurrency=slots
        ) as covey:
            run_id = await covey.submit(workflow, run_input)
            await _until_ready(LocalClient(path), covey.check_workers, listeners)
            feed = covey.runner.feed
            assert feed is not None
            before = feed.reads
            await _updates(LocalClient(path), env.sizes.bcast_updates)
            reads = feed.reads - before
            info = await covey.wait(run_id)
    else:
        async with shared_covey(
            env.backend, name, workers=BROADCAST_WORKERS, concurrency=slots, app="covey.bench.agents",
            logs=env.directory,
        ) as shared:  # fmt: skip
            client = shared.client
            run_id = await client.submit(workflow, run_input)
            await _until_ready(client, shared.check_workers, listeners)
            counted = await _feed_reads(env, shared.store_url)
            await _updates(client, env.sizes.bcast_updates)
            total = await _feed_reads(env, shared.store_url)
            reads = None if counted is None or total is None else total - counted
            info = await client.wait(run_id, poll_s=0.05)
    return _figures(env, listeners, mode, info, reads)


async def _updates(client: StoreClient, updates: int) -> None:
    """The writer: a steady stream of puts carrying their wall clock, then ``stop``."""
    for i in range(updates):
        await client.state_apply([StateOp("put", "bcast", f"u{i % 10}", {"t": time.time_ns()})])
        await asyncio.sleep(UPDATE_EVERY_S)
    await client.state_apply([StateOp("put", "bcast", "stop", True)])


async def _feed_reads(env: Env, store_url: str) -> int | None:
    """Change-feed reads the server has served so far: Redis counts its ``XRANGE`` calls; else None.

    Only the watchers read change feeds during the workload, so the difference
    over the updates is theirs. PostgreSQL keeps no such count per query
    without an extension, so there the figure is left out.
    """
    if env.backend.kind != "redis":
        return None
    import redis.asyncio as redis

    url, _ = split_option(store_url, "prefix", "covey")
    server = redis.from_url(url.rstrip("?"))
    try:
        stats = await server.info("commandstats")
    finally:
        await server.aclose()
    return int(stats.get("cmdstat_xrange", {}).get("calls", 0))


def _figures(env: Env, listeners: int, mode: str, info: RunInfo, reads: int | None) -> list[Figure]:
    updates = env.sizes.bcast_updates
    if info.status != "succeeded":
        raise BenchError(f"broadcast run {info.status}: {info.error}")
    latencies = sorted(ms for per_agent in info.output["l"] for ms in per_agent)
    if len(latencies) != listeners * updates:
        raise BenchError(f"expected {listeners * updates} deliveries, got {len(latencies)}")
    name = f"BCAST N={listeners}"
    system = f"covey {mode}"
    figures = [
        Figure(name, system, env.store, "p50 ms", statistics.median(latencies), len(latencies)),
        Figure(name, system, env.store, "p99 ms", latencies[int(len(latencies) * 0.99) - 1], len(latencies)),
    ]
    if reads is not None:
        figures.append(
            Figure(
                name,
                system,
                env.store,
                "feed reads/update",
                reads / updates,
                updates,
                f"{BROADCAST_WORKERS} workers",
            )
        )
    return figures


async def _until_ready(
    client: StoreClient, check_workers: Callable[[], None], listeners: int, timeout_s: float = 120.0
) -> None:
    """Wait until every listener has subscribed (each counts itself in ``bcast-ready``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        entry: Any = await client.state_get("bcast-ready", "ready")
        if entry is not None and entry.value >= listeners:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"only {entry.value if entry else 0} of {listeners} listeners subscribed")
        check_workers()
        await asyncio.sleep(0.05)
