"""A worker paused past its lease on a shared store: its late result is rejected.

Given a timekeeper and a worker on each shared-store combination, when the
worker holding a task is paused with SIGSTOP past its lease, a second worker
runs the task again under lease 2. When the first is resumed and reports its
lease-1 result, that result is recorded as rejected and the run's output stays
the new try's.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from covey.client import StoreClient
from covey.testing import wait_for
from tests.distributed.conftest import Backend
from tests.distributed.support import accepted_successes
from tests.e2e.support import APPS as E2E_APPS
from tests.e2e.support import covey_process

HOLD = {"name": "hold", "steps": {"h": {"skill": "hold", "retry": {"attempts": 3, "backoff_s": 0}}}}

pytestmark = pytest.mark.chaos


def _start(backend: Backend, trace: Path, *args: str) -> subprocess.Popen[bytes]:
    bus = ("--bus", backend.bus) if backend.bus else ()
    return covey_process(*args, "--store", backend.store, *bus, trace=trace, cwd=trace)


async def test_paused_worker_late_result_is_rejected(backend: Backend, tmp_path: Path) -> None:
    app = str(E2E_APPS / "crashy.py")
    worker_args = ("worker", app, "--concurrency", "1", "--lease", "1")
    procs = [
        _start(backend, tmp_path, "timekeeper", "--shard-ttl", "2"),
        _start(backend, tmp_path, *worker_args),
    ]
    try:
        async with StoreClient(backend.store, backend.bus) as client:
            run_id = await client.submit(HOLD)
            started = tmp_path / "started-1"
            # The agent creates the file, then writes its pid: wait for the pid, not just the file.
            await wait_for(lambda: started.exists() and started.read_text().split(), timeout=30)
            zombie = int(started.read_text().split()[0])
            os.kill(zombie, signal.SIGSTOP)
            procs.append(_start(backend, tmp_path, *worker_args))

            info = await client.wait(run_id)
            assert info.status == "succeeded"
            assert info.output["h"]["lease"] == 2
            assert info.output["h"]["pid"] != zombie

            (tmp_path / "release").write_text("go")
            os.kill(zombie, signal.SIGCONT)

            async def rejected() -> bool:
                async with client.reader() as store:
                    history = await store.load_history(run_id)
                return any(e["type"] == "Rejected" and e["what"].endswith("/h#1") for e in history)

            await wait_for(rejected, timeout=30)
            final = await client.get_run(run_id)
            assert final.output["h"]["lease"] == 2
            async with client.reader() as store:
                history = await store.load_history(run_id)
            assert [lease for _, lease in accepted_successes(history)] == [2]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
        for proc in procs:
            proc.wait(10)
