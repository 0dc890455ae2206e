"""An agent that hammers three shared keys, for the lost-update test."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from covey import Context, Registry, VersionConflict, agent

registry = Registry()
NAMESPACE = "contention"
#: Longest wait for the other contenders before the compare-and-sets start anyway.
BARRIER_S = 30.0


@agent(skills=["hammer"], registry=registry)
async def hammer(value: Any, ctx: Context) -> dict[str, Any]:
    """``n`` live reducer updates to a counter and a list, and ``n`` compare-and-set increments.

    With ``contenders``, the compare-and-sets start once that many tries have
    arrived at them (or after :data:`BARRIER_S`), so they really contend.
    """
    n = int(value["n"])
    live = ctx.state.live
    for _ in range(n):
        await live.update("counter", "add", 1, namespace=NAMESPACE)
    for i in range(n):
        await live.update("items", "append", f"{ctx.index}-{i}", namespace=NAMESPACE)
    if value.get("contenders"):
        await _barrier(ctx, int(value["contenders"]))
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


async def _barrier(ctx: Context, contenders: int) -> None:
    await ctx.state.live.update("arrived", "add", 1, namespace=NAMESPACE)
    deadline = time.monotonic() + BARRIER_S
    while time.monotonic() < deadline:
        entry = await ctx.state.entry("arrived", namespace=NAMESPACE)
        if entry is not None and entry.value >= contenders:
            return
        await asyncio.sleep(0.005)


agents = list(registry)
