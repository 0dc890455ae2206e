"""BCAST: one writer, N watching agents over 4 worker processes (the shared-state broadcast).

For N in 10, 100, 1,000 listeners, and for per-worker fan-out (the default:
one subscription per worker process) against per-agent subscriptions: the
writer commits a stream of updates, each carrying its commit-side wall clock;
every listener records how long each update took to reach it. Prints the
update-to-delivery latency p50/p99 and the change-feed reads per update.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from covey.bench.config import BenchError, Env
from covey.bench.figures import Figure
from covey.client import LocalClient
from covey.embedded import Embedded
from covey.state.model import StateOp

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
    updates = env.sizes.bcast_updates
    path = env.db(f"covey-bcast-{listeners}-{int(private)}")
    async with Embedded(
        path,
        app="covey.bench.agents",
        workers=BROADCAST_WORKERS,
        processes=True,
        concurrency=-(-listeners // BROADCAST_WORKERS) + 2,  # slots for a quarter each: spread over the four
    ) as covey:
        workflow = {
            "name": "bcast",
            "steps": {"l": {"skill": "listen", "map": "${input.l}", "input": "${item}"}},
        }
        run_id = await covey.submit(workflow, {"l": [{"private": private}] * listeners})
        await _until_ready(covey, listeners)
        feed = covey.runner.feed
        assert feed is not None
        reads_before = feed.reads
        client = LocalClient(path)
        for i in range(updates):
            await client.state_apply([StateOp("put", "bcast", f"u{i % 10}", {"t": time.time_ns()})])
            await asyncio.sleep(UPDATE_EVERY_S)
        reads = feed.reads - reads_before
        await client.state_apply([StateOp("put", "bcast", "stop", True)])
        info = await covey.wait(run_id)
    if info.status != "succeeded":
        raise BenchError(f"broadcast run {info.status}: {info.error}")
    latencies = sorted(ms for per_agent in info.output["l"] for ms in per_agent)
    if len(latencies) != listeners * updates:
        raise BenchError(f"expected {listeners * updates} deliveries, got {len(latencies)}")
    name = f"BCAST N={listeners}"
    system = f"covey {mode}"
    return [
        Figure(name, system, env.store, "p50 ms", statistics.median(latencies), len(latencies)),
        Figure(name, system, env.store, "p99 ms", latencies[int(len(latencies) * 0.99) - 1], len(latencies)),
        Figure(
            name,
            system,
            env.store,
            "feed reads/update",
            reads / updates,
            updates,
            f"{BROADCAST_WORKERS} workers",
        ),
    ]


async def _until_ready(covey: Embedded, listeners: int, timeout_s: float = 120.0) -> None:
    """Wait until every listener has subscribed (each counts itself in ``bcast-ready``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        entry: Any = await covey.runner.store.state_get("bcast-ready", "ready")
        if entry is not None and entry.value >= listeners:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"only {entry.value if entry else 0} of {listeners} listeners subscribed")
        covey.check_workers()
        await asyncio.sleep(0.05)
