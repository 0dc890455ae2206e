"""Starting ``covey timekeeper`` and ``covey worker`` processes on a test's backend, and always stopping them."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from covey.runtime.shards import ENGINE_PREFIX
from covey.store.base import Store
from covey.testing import wait_for
from tests.distributed.conftest import Backend
from tests.e2e.support import covey_process

Start = Callable[..., subprocess.Popen[bytes]]


@contextmanager
def fleet(backend: Backend, trace: Path, env: dict[str, str] | None = None) -> Iterator[Start]:
    """``start(*covey_args)`` runs ``covey ARGS --store ... [--bus ...]``; every process is killed on exit."""
    started: list[subprocess.Popen[bytes]] = []
    bus = ("--bus", backend.bus) if backend.bus else ()

    def start(*args: str) -> subprocess.Popen[bytes]:
        proc = covey_process(*args, "--store", backend.store, *bus, trace=trace, cwd=trace, extra_env=env)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()  # SIGKILL ends a SIGSTOPped process too
        for proc in started:
            proc.wait(10)


async def wait_workers(store: Store, count: int, within_s: float = 30.0) -> None:
    """Wait until ``count`` workers (engine nodes not counted) are registered in the store."""

    async def registered() -> bool:
        workers = await store.list_workers()
        return sum(not w.worker_id.startswith(ENGINE_PREFIX) for w in workers) >= count

    await wait_for(registered, within_s, 0.05, message=f"{count} workers to register")
