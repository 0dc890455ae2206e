"""The embedded runner killed mid-run resumes every run, re-running no succeeded step.

Given ``covey serve`` with two worker processes working through 30 runs of a
three-step chain, when the runner is killed with SIGKILL mid-way and started
again on the same file, every run completes, every step has exactly one
recorded success, and no step whose success was committed before the kill is
executed again.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from pathlib import Path

from covey import LocalClient
from covey.runtime.lockfile import find_runner_socket
from covey.store.sqlite import SQLiteStore
from covey.testing import wait_for
from tests.e2e.support import APPS, covey_process, log_lines

CHAIN = {
    "name": "chain",
    "steps": {
        "a": {"skill": "step", "input": {"n": 0}},
        "b": {"skill": "step", "input": "${steps.a}"},
        "c": {"skill": "step", "input": "${steps.b}"},
    },
}
RUNS = 30


def _serve(tmp_path: Path, phase: str) -> subprocess.Popen[bytes]:
    store = f"sqlite:///{tmp_path / 'covey.db'}"
    app = str(APPS / "crashy.py")
    return covey_process(
        "serve", "--app", app, "--workers", "2", "--store", store,
        trace=tmp_path, cwd=tmp_path, extra_env={"COVEY_TEST_PHASE": phase},
    )  # fmt: skip


async def _succeeded_steps(db: Path) -> Counter[str]:
    """Task ids with a committed success, counted (each should be 1)."""
    done: Counter[str] = Counter()
    async with SQLiteStore(db, readonly=True) as store:
        runs = await store.list_runs(limit=1000)
        histories = await store.load_histories([r.run_id for r in runs])
    for run_id, history in histories.items():
        for event in history:
            if event["type"] == "StepFinished" and event["status"] == "succeeded":
                done[f"{run_id}/{event['step']}"] += 1
    return done


async def test_killed_runner_resumes_without_rerunning_succeeded_steps(tmp_path: Path) -> None:
    db = tmp_path / "covey.db"
    log = tmp_path / "executions.log"
    first = _serve(tmp_path, "1")
    await wait_for(lambda: find_runner_socket(db) is not None, timeout=20)
    client = LocalClient(db)
    run_ids = [await client.submit(CHAIN, run_id=f"run-{i:02d}") for i in range(RUNS)]
    await wait_for(lambda: len(log_lines(log)) >= 20, timeout=30)

    first.send_signal(signal.SIGKILL)
    first.wait(10)
    before = await _succeeded_steps(db)
    assert 0 < sum(before.values()) < RUNS * 3, "the kill should land mid-way"

    second = _serve(tmp_path, "2")
    try:
        await wait_for(lambda: find_runner_socket(db) is not None, timeout=20)
        infos = [await asyncio.wait_for(client.wait(run_id), 60) for run_id in run_ids]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)

    assert [info.status for info in infos] == ["succeeded"] * RUNS
    assert all(info.output == {"c": {"n": 3}} for info in infos)
    after = await _succeeded_steps(db)
    assert set(after) == {f"{r}/{s}" for r in run_ids for s in "abc"}
    assert set(after.values()) == {1}, "every step has exactly one recorded success"
    rerun = [task for task, _, _, phase in log_lines(log) if phase == "2" and task in before]
    assert rerun == [], f"steps that had succeeded before the kill ran again: {rerun}"
