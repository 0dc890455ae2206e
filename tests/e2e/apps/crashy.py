"""Agents for the crash tests: each try leaves a trace in a folder the test watches.

``COVEY_TEST_TRACE`` names that folder. ``hold`` blocks its first try until a
``release`` file appears (so the test can kill or pause the worker holding
it) and returns at once on later tries. ``step`` appends one line per
finished execution to ``executions.log``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from trace_files import announce

from covey import Context, Registry, agent

registry = Registry()
TRACE = Path(os.environ.get("COVEY_TEST_TRACE", "."))


@agent(skills=["hold"], registry=registry)
def hold(value: Any, ctx: Context) -> dict[str, Any]:
    """First try: announce pid and lease, then block until released. Later tries: return at once."""
    announce(TRACE, f"started-{ctx.lease_no}", f"{os.getpid()} {ctx.try_no}")
    if ctx.try_no == 1:
        while not (TRACE / "release").exists():
            time.sleep(0.01)  # the agent's own "work": a paused or killed process stops here
    return {"pid": os.getpid(), "try": ctx.try_no, "lease": ctx.lease_no}


@agent(skills=["step"], registry=registry, concurrency=4)
def step(value: Any, ctx: Context) -> dict[str, Any]:
    """Take a little time, then log this execution."""
    time.sleep(0.02)
    with open(TRACE / "executions.log", "a") as log:
        log.write(f"{ctx.task_id} {ctx.try_no} {os.getpid()} {os.environ.get('COVEY_TEST_PHASE', '-')}\n")
    return {"n": (value or {}).get("n", 0) + 1}


agents = list(registry)
