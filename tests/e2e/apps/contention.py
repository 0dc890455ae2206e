"""An agent that hammers three shared keys, for the lost-update test."""

from __future__ import annotations

import os
from typing import Any

from covey import Context, Registry, VersionConflict, agent

registry = Registry()
NAMESPACE = "contention"


@agent(skills=["hammer"], registry=registry)
async def hammer(value: Any, ctx: Context) -> dict[str, Any]:
    """``n`` live reducer updates to a counter and a list, and ``n`` compare-and-set increments."""
    n = int(value["n"])
    live = ctx.state.live
    for _ in range(n):
        await live.update("counter", "add", 1, namespace=NAMESPACE)
    for i in range(n):
        await live.update("items", "append", f"{ctx.index}-{i}", namespace=NAMESPACE)
    conflicts = 0
    for _ in range(n):
        while True:
            entry = await ctx.state.entry("cas", namespace=NAMESPACE)
            current, version = (entry.value, entry.version) if entry else (0, 0)
            try:
                await live.put("cas", current + 1, if_version=version, namespace=NAMESPACE)
                break
            except VersionConflict:
                conflicts += 1
    return {"conflicts": conflicts, "pid": os.getpid()}


agents = list(registry)
