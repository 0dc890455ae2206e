"""covey on a shared store for the bench: one ``covey timekeeper`` and N ``covey worker`` processes.

:class:`SharedCovey` offers what the workloads use of
:class:`~covey.embedded.Embedded` (``submit_many``, ``submit``, ``wait_all``,
``check_workers``) on a PostgreSQL or Redis store, with or without RabbitMQ.
Runs are submitted through :class:`~covey.client.StoreClient`'s store and bus:
``submit_many`` appends a batch of ``RunSubmitted`` rows to the inbox in one
call per 500 runs and hints the engine once, which is what one
``StoreClient.submit`` does per run. Waiting reads the store: for a single
run, its row whenever the engine node hints that runs finished, and at least
every :data:`POLL_ONE_S` (``StoreClient.wait``, as a user's client waits);
for a batch, the number of finished runs in the store's status index every
:data:`POLL_MANY_S` (one cheap query, so the waiting costs the store almost
nothing).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from covey.bench.backends import Backend, fresh_namespace
from covey.bench.config import BenchError
from covey.client import StoreClient
from covey.runtime.shards import ENGINE_PREFIX
from covey.runtime.submit import prepare_submission, submit_row
from covey.store.base import RunInfo
from covey.store.open import split_option

__all__ = ["POLL_MANY_S", "POLL_ONE_S", "SharedCovey", "shared_covey"]

#: Longest pause between two reads of one run's row while waiting for it (W2's driver). The wait ends on the
#: engine node's ``finished`` hint, as Celery's ``get(interval=0.01)`` ends on its result backend's
#: message; this is the fallback read, at Celery's interval.
POLL_ONE_S = 0.01
#: How often a waiting driver checks that the worker processes are still alive.
CHECK_EVERY_S = 1.0
#: Between two counts of finished runs while waiting for a batch.
POLL_MANY_S = 0.005
#: Runs per inbox append in ``submit_many``.
SUBMIT_CHUNK = 500
#: Seconds a process gets to stop on SIGTERM before it is killed.
STOP_GRACE_S = 10.0


class SharedCovey:
    """A client and its counters on a fleet's store; see the module docstring."""

    def __init__(self, client: StoreClient, backend: Backend, store_url: str, processes: list[Any]) -> None:
        self.client = client
        self.backend = backend
        self.store_url = store_url
        self.processes: list[subprocess.Popen[bytes]] = processes
        self._finished_before = 0
        self._counter: Any = None

    def check_workers(self) -> None:
        """Raise BenchError if the timekeeper or a worker process has died."""
        for proc in self.processes:
            if proc.poll() is not None:
                raise BenchError(f"a covey process exited with {proc.returncode}: {proc.args!r}")

    async def submit(self, workflow: dict[str, Any], run_input: Any) -> str:
        """Submit one run through the client."""
        return await self.client.submit(workflow, run_input)

    async def submit_many(self, runs: Sequence[tuple[dict[str, Any], Any]]) -> list[str]:
        """Submit every run: inbox rows appended in chunks, one hint at the end."""
        submissions = [prepare_submission(workflow, run_input) for workflow, run_input in runs]
        async with self.client.writer() as store:
            at_ms = await store.now_ms()
            rows = [submit_row(submission, at_ms) for submission in submissions]
            for start in range(0, len(rows), SUBMIT_CHUNK):
                await store.append_inbox(rows[start : start + SUBMIT_CHUNK])
        await self.client.hint_inbox()
        return [row.run_id for row in rows]

    async def wait_all(
        self, ids: Sequence[str], *, infos: bool = True, timeout_s: float = 300.0
    ) -> list[RunInfo]:
        """Wait for every run of ``ids`` (submitted after every earlier batch finished) to succeed.

        Returns their rows when ``infos`` (with outputs), else nothing.

        Raises:
            BenchError: a run failed or was cancelled, a process died, or the timeout passed.
        """
        deadline = time.monotonic() + timeout_s
        if len(ids) == 1:
            info = await self._wait_one(ids[0], deadline)
            self._finished_before += 1
            return [info]
        target = self._finished_before + len(ids)
        while True:
            succeeded, failed = await self._count()
            if failed:
                raise BenchError(f"{failed} bench runs did not succeed on {self.backend.name}")
            if succeeded >= target:
                break
            self._check(deadline)
            await asyncio.sleep(POLL_MANY_S)
        self._finished_before = target
        if not infos:
            return []
        return [await self.client.get_run(run_id) for run_id in ids]

    def _check(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise BenchError(f"bench runs on {self.backend.name} did not finish in time")
        self.check_workers()

    async def _wait_one(self, run_id: str, deadline: float) -> RunInfo:
        """One run, as a user's client waits for it: told by the ``finished`` hint, reading every POLL_ONE_S
        at most; the worker processes are checked every CHECK_EVERY_S meanwhile."""
        while True:
            try:
                async with asyncio.timeout(CHECK_EVERY_S):
                    info = await self.client.wait(run_id, poll_s=POLL_ONE_S)
                break
            except TimeoutError:
                self._check(deadline)
        if info.status != "succeeded":
            raise BenchError(f"a bench run {info.status} on {self.backend.name}: {info.error}")
        return info

    async def _count(self) -> tuple[int, int]:
        """(succeeded, failed or cancelled) runs in the store, from its status index."""
        if self.backend.kind == "postgres":
            rows = await self._counter.fetch("SELECT status, count(*) FROM runs GROUP BY status")
            counts = {row[0]: row[1] for row in rows}
        else:
            statuses = ("succeeded", "failed", "cancelled")
            async with self._counter.pipeline(transaction=False) as pipe:
                for status in statuses:
                    pipe.zcard(f"{{{self._prefix}}}:runs:{status}")
                counts = dict(zip(statuses, await pipe.execute(), strict=True))
        return int(counts.get("succeeded", 0)), int(counts.get("failed", 0)) + int(counts.get("cancelled", 0))

    @asynccontextmanager
    async def counting(self) -> AsyncIterator[None]:
        """Hold the connection the finished-run counts are read on."""
        if self.backend.kind == "postgres":
            import asyncpg  # type: ignore[import-untyped]

            url, schema = split_option(self.store_url, "schema", "covey")
            conn = await asyncpg.connect(url.rstrip("?"), server_settings={"search_path": schema})
            self._counter = conn
            try:
                yield
            finally:
                await conn.close()
        else:
            import redis.asyncio as redis

            url, self._prefix = split_option(self.store_url, "prefix", "covey")
            client = redis.from_url(url.rstrip("?"))
            self._counter = client
            try:
                yield
            finally:
                await client.aclose()


def _covey_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "covey", *args]


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@asynccontextmanager
async def shared_covey(
    backend: Backend, name: str, *, workers: int, concurrency: int, app: str, logs: Path
) -> AsyncIterator[SharedCovey]:
    """A fresh namespace on ``backend`` with a timekeeper and ``workers`` worker processes, all connected.

    Everything started is stopped, and the namespace dropped, on the way out.
    """
    async with fresh_namespace(backend, name) as store_url:
        bus = ["--bus", backend.bus] if backend.bus else []
        log = logs / f"covey-{backend.name.replace('+', '-')}-{name}.log"
        async with StoreClient(store_url, backend.bus) as client:  # creates the schema before anyone else
            processes: list[subprocess.Popen[bytes]] = []
            try:
                processes.append(_start(_covey_command("timekeeper", "--store", store_url, *bus), log))
                for _ in range(workers):
                    args = ["worker", app, "--store", store_url, *bus, "--concurrency", str(concurrency)]
                    processes.append(_start(_covey_command(*args), log))
                covey = SharedCovey(client, backend, store_url, processes)
                async with covey.counting():
                    await _until_registered(covey, workers)
                    yield covey
            finally:
                await asyncio.to_thread(_stop, processes)


async def _until_registered(covey: SharedCovey, workers: int, timeout_s: float = 60.0) -> None:
    """Wait until the engine node and every worker process are in the store's registry."""
    deadline = time.monotonic() + timeout_s
    async with covey.client.reader() as store:
        while True:
            listed = await store.list_workers()
            engines = sum(w.worker_id.startswith(ENGINE_PREFIX) for w in listed)
            if engines >= 1 and len(listed) - engines >= workers:
                return
            if time.monotonic() > deadline:
                raise BenchError(
                    f"only {len(listed) - engines} of {workers} workers and {engines} engine nodes registered "
                    f"on {covey.backend.name} within {timeout_s:.0f} s"
                )
            covey.check_workers()
            await asyncio.sleep(0.05)
