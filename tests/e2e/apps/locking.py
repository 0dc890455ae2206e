"""An agent that writes shared state under a lock, for the lock test.

The first holder (token 1) announces itself and waits for a ``release`` file
in ``COVEY_TEST_TRACE`` before writing: the test pauses it past its ttl in
between. Later holders write at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from trace_files import announce

from covey import Context, Registry, StaleLease, agent

registry = Registry()
TRACE = Path(os.environ.get("COVEY_TEST_TRACE", "."))


def _until_released() -> None:
    """The agent's own slow work: the test pauses the process while it runs."""
    while not (TRACE / "release").exists():
        time.sleep(0.01)


@agent(skills=["guarded"], registry=registry)
async def guarded(value: Any, ctx: Context) -> dict[str, Any]:
    async with ctx.lock("report", ttl_s=1.0) as held:
        await asyncio.to_thread(announce, TRACE, f"holding-{held.token}", str(os.getpid()))
        if held.token == 1:
            await asyncio.to_thread(_until_released)
        try:
            await ctx.state.live.put("owner", ctx.task_id, namespace="locked", lock=held)
        except StaleLease:
            return {"token": held.token, "wrote": False}
        return {"token": held.token, "wrote": True}


agents = list(registry)
