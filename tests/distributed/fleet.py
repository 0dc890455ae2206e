"""Starting ``covey timekeeper`` and ``covey worker`` processes on a test's backend, and always stopping them."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator, Sequence
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


async def wait_workers(
    store: Store, procs: Sequence[subprocess.Popen[bytes]], trace: Path, within_s: float = 30.0
) -> None:
    """Wait until the worker processes ``procs`` are registered in the store (engine nodes not counted).

    Fails at once, with the processes' logs (in ``trace``), if one of them exits.
    """

    async def registered() -> bool:
        exited = [proc.returncode for proc in procs if proc.poll() is not None]
        assert not exited, f"worker processes exited (codes {exited}) before registering:\n{_logs(trace)}"
        workers = await store.list_workers()
        return sum(not w.worker_id.startswith(ENGINE_PREFIX) for w in workers) >= len(procs)

    await wait_for(registered, within_s, 0.05, message=f"{len(procs)} workers to register")


def _logs(trace: Path) -> str:
    """The end of every covey process's log in ``trace``."""
    return "\n".join(
        f"{log.name}: {log.read_text(errors='replace')[-1500:]}" for log in sorted(trace.glob("covey-*.log"))
    )
