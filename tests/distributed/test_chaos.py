"""Real processes on a shared store: kills lose no work and record no success twice.

Given 2 ``covey timekeeper`` and 3 ``covey worker`` processes on each
shared-store combination, working through 200 runs of a five-step workflow
with a fan-out (1,400 tasks): when one worker is killed with SIGKILL and then
one timekeeper too, mid-run, every run still completes with the right output,
every task has exactly one recorded success, and no task is executed twice
except those whose execution the killed worker interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from covey.client import StoreClient
from covey.store.open import open_store
from covey.testing import wait_for
from tests.distributed.apps.fanout import FANOUT, expected_output, tasks_per_run
from tests.distributed.conftest import Backend
from tests.distributed.support import APPS, check_runs_complete, executions
from tests.e2e.support import covey_process

RUNS = 200
ITEMS = 3
LEASE_S = "2"
SHARD_TTL_S = "2"

pytestmark = pytest.mark.chaos


def _start(backend: Backend, trace: Path, *args: str) -> subprocess.Popen[bytes]:
    bus = ("--bus", backend.bus) if backend.bus else ()
    return covey_process(
        *args, "--store", backend.store, *bus, trace=trace, cwd=trace, extra_env={"COVEY_TEST_WORK_MS": "20"}
    )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait(10)


async def test_killing_a_worker_and_a_timekeeper_loses_and_repeats_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    app = str(APPS / "fanout.py")
    timekeepers = [_start(backend, tmp_path, "timekeeper", "--shard-ttl", SHARD_TTL_S) for _ in range(2)]
    workers = [_start(backend, tmp_path, "worker", app, "--lease", LEASE_S) for _ in range(3)]
    try:
        async with StoreClient(backend.store, backend.bus) as client, open_store(backend.store) as store:
            run_ids = [await client.submit(FANOUT, {"n": ITEMS}) for _ in range(RUNS)]
            total = RUNS * tasks_per_run(ITEMS)

            await wait_for(
                lambda: len(executions(tmp_path)) >= total // 5, 60.0, 0.02, message="work to start"
            )
            victim = workers[0]
            os.kill(victim.pid, signal.SIGKILL)
            await wait_for(
                lambda: len(executions(tmp_path)) >= total // 2, 60.0, 0.02, message="work to go on"
            )
            os.kill(timekeepers[0].pid, signal.SIGKILL)

            await check_runs_complete(
                client,
                store,
                run_ids,
                output=expected_output(ITEMS),
                tasks=total,
                timeout_s=120.0,
                message="every run to finish after the kills",
            )
    finally:
        _stop(timekeepers + workers)

    survivors = Counter(task for task, _, pid in executions(tmp_path) if pid != victim.pid)
    repeated = {task: n for task, n in survivors.items() if n > 1}
    assert not repeated, f"tasks executed twice by processes that were not killed: {list(repeated)[:5]}"
