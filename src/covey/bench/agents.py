"""The agents of ``covey bench``; worker processes import this module (``app="covey.bench.agents"``).

* ``noop`` returns its input: the cheapest possible step.
* ``stamp_a`` / ``stamp_b`` measure a hand-off (W2): A returns the wall clock
  (``time.time_ns()``) as its very last action, B reads the clock as its very
  first one and returns the difference. Worker processes on one machine share
  the wall clock, so the latency is exact up to clock reads.
* ``fan`` returns ``{"items": [0, ..., n-1]}`` (default 100) for W3's map.
* ``listen`` watches a namespace for the broadcast workload.
* ``whoami`` returns the worker's pid, so the bench can wait until every worker
  process is connected before it starts a clock.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from covey.agents.context import Context
from covey.agents.registry import AgentDef, Registry, agent

__all__ = ["agents", "fan", "listen", "noop", "registry", "stamp_a", "stamp_b", "whoami"]

#: Task slots per agent in one worker process (async agents: one event loop holds them all).
CONCURRENCY = 64

#: The bench's own registry, so importing it adds nothing to the default one.
registry = Registry()


@agent(concurrency=CONCURRENCY, registry=registry)
async def noop(value: Any) -> Any:
    """Return the input unchanged."""
    return value


@agent(concurrency=CONCURRENCY, registry=registry)
async def stamp_a(value: Any) -> Any:
    """Step A of W2: the wall clock at return, in ns."""
    return {"t": time.time_ns()}


@agent(concurrency=CONCURRENCY, registry=registry)
async def stamp_b(value: Any) -> Any:
    """Step B of W2: ns from A's return to this start (``value`` is A's output)."""
    started = time.time_ns()
    return {"latency_ns": started - int(value["t"])}


@agent(concurrency=CONCURRENCY, registry=registry)
async def fan(value: Any) -> Any:
    """W3's first step: ``{"items": [0, ..., n-1]}`` with ``n = value["n"]`` (default 100)."""
    n = int(value.get("n", 100)) if isinstance(value, dict) else 100
    return {"items": list(range(n))}


@agent(concurrency=CONCURRENCY, registry=registry)
async def whoami(value: Any) -> Any:
    """The worker process's pid, after a short pause so every worker gets some."""
    await asyncio.sleep(0.02)
    return os.getpid()


#: Listeners one worker process may hold in the broadcast workload.
LISTENERS_PER_WORKER = 400


@agent(concurrency=LISTENERS_PER_WORKER, registry=registry)
async def listen(value: Any, ctx: Context) -> Any:
    """The broadcast workload: report ready, watch ``bcast`` until ``stop``; return delivery latencies in ms.

    ``value["private"]`` gives this agent a subscription of its own instead of
    sharing its worker's: the comparison the workload prints.
    """
    private = bool(value.get("private")) if isinstance(value, dict) else False
    changes = ctx.state.watch(namespace="bcast", private=private)
    await ctx.state.live.update("ready", "add", 1, namespace="bcast-ready")
    latencies = []
    async for change in changes:
        if change.key == "stop":
            break
        latencies.append((time.time_ns() - int(change.value["t"])) / 1e6)
    return latencies


#: What a worker serving this module hosts (``load_app`` reads this list).
agents: list[AgentDef] = list(registry)
