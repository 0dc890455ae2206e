"""A worker killed (SIGKILL) or paused (SIGSTOP) mid-task loses no work.

Given a runner with a short lease and two worker processes, when the worker
holding a task is killed, the task's lease expires and the other worker runs
it. When the worker is only paused past its lease and then resumed, its late
result is recorded as rejected and the run keeps the new try's output.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from covey import Runner
from covey.testing import wait_for
from tests.e2e.support import APPS, covey_process

HOLD = {"name": "hold", "steps": {"h": {"skill": "hold", "retry": {"attempts": 3, "backoff_s": 0}}}}
LEASE_MS = 1_000


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[Runner]:
    async with Runner(tmp_path / "covey.db", lease_ms=LEASE_MS) as runner:
        yield runner


@pytest.fixture
def workers(tmp_path: Path, runner: Runner) -> list[subprocess.Popen[bytes]]:
    app = str(APPS / "crashy.py")
    db = f"sqlite:///{tmp_path / 'covey.db'}"
    procs = [
        covey_process("worker", app, "--store", db, "--concurrency", "1", trace=tmp_path, cwd=tmp_path)
        for _ in range(2)
    ]
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait(10)


async def _first_try_started(runner: Runner, trace: Path) -> tuple[str, int]:
    """Submit the hold workflow and wait for its first try: the run id and the pid of the worker holding it."""
    run_id = await runner.submit(HOLD)
    await wait_for(lambda: (trace / "started-1").exists(), timeout=20)
    return run_id, int((trace / "started-1").read_text().split()[0])


async def test_killed_worker_task_is_rerun_elsewhere(tmp_path: Path, runner: Runner, workers: list) -> None:
    run_id, victim = await _first_try_started(runner, tmp_path)

    os.kill(victim, signal.SIGKILL)
    info = await asyncio.wait_for(runner.wait(run_id), 30)

    assert info.status == "succeeded"
    assert info.output["h"]["lease"] == 2
    assert info.output["h"]["pid"] != victim
    history = await runner.store.load_history(run_id)
    expired = [e for e in history if e["type"] == "TimerFired" and e["kind"] == "lease_expired"]
    assert [e["lease_no"] for e in expired] == [1]
    accepted = [e for e in history if e["type"] == "TaskSucceeded"]
    assert [e["lease_no"] for e in accepted] == [2]


async def test_paused_worker_late_result_is_rejected(tmp_path: Path, runner: Runner, workers: list) -> None:
    run_id, zombie = await _first_try_started(runner, tmp_path)
    os.kill(zombie, signal.SIGSTOP)

    info = await asyncio.wait_for(runner.wait(run_id), 30)
    assert info.status == "succeeded"
    assert info.output["h"]["lease"] == 2

    (tmp_path / "release").write_text("go")
    os.kill(zombie, signal.SIGCONT)

    async def rejected() -> bool:
        history = await runner.store.load_history(run_id)
        return any(e["type"] == "Rejected" and e["what"].endswith("/h#1") for e in history)

    await wait_for(rejected, timeout=20)
    final = await runner.store.get_run(run_id)
    assert final is not None
    assert final.output["h"]["lease"] == 2
    history = await runner.store.load_history(run_id)
    assert sum(1 for e in history if e["type"] == "StepFinished" and e["status"] == "succeeded") == 1


async def test_sigterm_releases_leases_without_counting_a_try(tmp_path: Path, runner: Runner) -> None:
    app = str(APPS / "crashy.py")
    db = f"sqlite:///{tmp_path / 'covey.db'}"
    first = covey_process(
        "worker", app, "--store", db, "--concurrency", "1", "--grace", "0.2", trace=tmp_path, cwd=tmp_path
    )
    try:
        run_id, _ = await _first_try_started(runner, tmp_path)

        first.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.wait, 10) == 0

        second = covey_process(
            "worker", app, "--store", db, "--concurrency", "1", trace=tmp_path, cwd=tmp_path
        )
        try:
            await wait_for(lambda: (tmp_path / "started-2").exists(), timeout=20)
            (tmp_path / "release").write_text("go")
            info = await asyncio.wait_for(runner.wait(run_id), 30)
        finally:
            second.terminate()  # waited for off the event loop: the runner lives on it
            await asyncio.to_thread(second.wait, 10)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(10)

    assert info.status == "succeeded"
    assert info.output["h"] == {"pid": second.pid, "try": 1, "lease": 2}, (
        "released, not failed: still the first try"
    )
    history = await runner.store.load_history(run_id)
    assert not [e for e in history if e["type"] == "TimerFired"], "no lease had to expire"
