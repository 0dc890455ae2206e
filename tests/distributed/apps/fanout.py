"""Agents for the distributed tests: a five-step workflow with a fan-out, leaving traces.

Every finished execution appends ``task_id lease_no pid`` to
``executions-<pid>.log`` in ``COVEY_TEST_TRACE`` (one file per process, so
concurrent writers never interleave), just before the result is returned.
``COVEY_TEST_WORK_MS`` makes each execution take that long (default 5), so a
test can kill a process in the middle of the work.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from covey import Context, Registry, agent

registry = Registry()
TRACE = Path(os.environ.get("COVEY_TEST_TRACE", "."))
WORK_S = int(os.environ.get("COVEY_TEST_WORK_MS", "5")) / 1000

#: split -> work (one task per item) -> join -> check -> finish.
FANOUT: dict[str, Any] = {
    "name": "fanout",
    "steps": {
        "split": {"skill": "split", "input": "${input}"},
        "work": {"skill": "work", "map": "${steps.split.items}", "input": "${item}"},
        "join": {"skill": "join", "input": {"parts": "${steps.work}"}},
        "check": {"skill": "check", "input": "${steps.join}"},
        "finish": {"skill": "check", "input": "${steps.check}"},
    },
    "output": "${steps.finish}",
}


async def _trace(ctx: Context) -> None:
    await asyncio.sleep(WORK_S)
    _log(f"{ctx.task_id} {ctx.lease_no} {os.getpid()}\n")


def _log(line: str) -> None:
    """One short append per execution: cheap enough to do on the event loop."""
    with open(TRACE / f"executions-{os.getpid()}.log", "a") as log:
        log.write(line)


@agent(skills=["split"], registry=registry, concurrency=8)
async def split(value: Any, ctx: Context) -> dict[str, Any]:
    await _trace(ctx)
    return {"items": list(range(int(value["n"])))}


@agent(skills=["work"], registry=registry, concurrency=8)
async def work(value: int, ctx: Context) -> int:
    await _trace(ctx)
    return value * 2


@agent(skills=["join"], registry=registry, concurrency=8)
async def join(value: dict[str, Any], ctx: Context) -> int:
    await _trace(ctx)
    return sum(value["parts"])


@agent(skills=["check"], registry=registry, concurrency=8)
async def check(value: int, ctx: Context) -> int:
    await _trace(ctx)
    return value + 1


agents = list(registry)


def expected_output(n: int) -> int:
    """What a run with input ``{"n": n}`` outputs."""
    return sum(2 * i for i in range(n)) + 2


def tasks_per_run(n: int) -> int:
    """How many tasks a run with input ``{"n": n}`` has."""
    return 4 + n
