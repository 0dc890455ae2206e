"""On a shared store, a lock holder paused past its ttl loses the lock, and its late write with the old token is refused.

The scenario of ``tests/e2e/test_locks.py`` with its app on each shared-store
combination: a ``covey timekeeper`` and two ``covey worker`` processes run a
task each that writes under the lock ``report``. The first holder is paused
(SIGSTOP) while it holds the lock; after the lock's one-second ttl (the
store's clock) the other takes it (token 2) and writes. The first is then
resumed: its write, made with token 1, is refused, and the value stays the
second holder's.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from covey.client import StoreClient
from covey.store.open import open_store
from covey.testing import wait_for
from tests.distributed.conftest import Backend
from tests.distributed.fleet import fleet, wait_workers
from tests.e2e.support import APPS as E2E_APPS
from tests.e2e.test_locks import WORKFLOW


async def test_paused_holder_loses_the_lock_and_its_write(backend: Backend, tmp_path: Path) -> None:
    app = str(E2E_APPS / "locking.py")
    with fleet(backend, tmp_path) as start:
        start("timekeeper", "--shard-ttl", "5")
        workers = [start("worker", app, "--concurrency", "1") for _ in range(2)]
        async with StoreClient(backend.store, backend.bus) as client, open_store(backend.store) as store:
            await wait_workers(store, workers, tmp_path)
            run_id = await client.submit(WORKFLOW, {"parts": [0, 1]})
            holding = tmp_path / "holding-1"
            # The agent creates the file, then writes its pid: wait for the pid, not just the file.
            await wait_for(lambda: holding.exists() and holding.read_text(), 30.0, message="a first holder")
            first = int(holding.read_text())
            os.kill(first, signal.SIGSTOP)
            try:

                async def second_wrote() -> bool:
                    return await client.state_get("locked", "owner") is not None

                await wait_for(
                    second_wrote, 30.0, 0.02, message="the second holder takes the lock after its ttl"
                )
                (tmp_path / "release").write_text("go")
            finally:
                os.kill(first, signal.SIGCONT)
            info = await asyncio.wait_for(client.wait(run_id), 30)
            owner = await client.state_get("locked", "owner")

    assert info.status == "succeeded", info.error
    results = sorted((r["token"], r["wrote"]) for r in info.output["g"])
    assert results == [(1, False), (2, True)], "the paused holder's write with token 1 was refused"
    assert owner is not None
    assert owner.version == 1, "only the current holder wrote"
