"""A lock holder paused past its ttl loses the lock, and its late write with the old token is refused.

Two worker processes run a task each that writes under the lock ``report``.
The first holder is paused (SIGSTOP) while it holds the lock; after the
lock's one-second ttl the other takes it (token 2) and writes. The first is
then resumed: its write, made with token 1, is refused, and the value stays
the second holder's.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from covey import Runner
from covey.testing import wait_for
from tests.e2e.support import APPS, covey_process

WORKFLOW = {
    "name": "locks",
    "steps": {"g": {"skill": "guarded", "map": "${input.parts}", "input": "${item}"}},
}


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[Runner]:
    async with Runner(tmp_path / "covey.db") as runner:
        yield runner


async def test_paused_holder_loses_the_lock_and_its_write(tmp_path: Path, runner: Runner) -> None:
    store = f"sqlite:///{tmp_path / 'covey.db'}"
    app = str(APPS / "locking.py")
    workers = [
        covey_process("worker", app, "--store", store, "--concurrency", "1", trace=tmp_path, cwd=tmp_path)
        for _ in range(2)
    ]
    try:
        run_id = await runner.submit(WORKFLOW, {"parts": [0, 1]})
        await wait_for(lambda: (tmp_path / "holding-1").exists(), timeout=20)
        first = int((tmp_path / "holding-1").read_text())
        os.kill(first, signal.SIGSTOP)

        async def second_wrote() -> bool:
            entry = await runner.store.state_get("locked", "owner")
            return entry is not None

        await wait_for(second_wrote, timeout=20, message="the second holder takes the lock after its ttl")
        (tmp_path / "release").write_text("go")
        os.kill(first, signal.SIGCONT)
        info = await asyncio.wait_for(runner.wait(run_id), 30)
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        for proc in workers:
            await asyncio.to_thread(proc.wait, 10)

    assert info.status == "succeeded"
    results = sorted((r["token"], r["wrote"]) for r in info.output["g"])
    assert results == [(1, False), (2, True)], "the paused holder's write with token 1 was refused"
    owner = await runner.store.state_get("locked", "owner")
    assert owner is not None
    assert owner.version == 1, "only the current holder wrote"
