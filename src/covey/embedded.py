"""covey embedded: one process, one SQLite file, local workers, no servers.

``Embedded`` starts a :class:`~covey.runtime.runner.Runner` on a database file
and N local workers, either in this process (simplest; sync agents run in
threads) or as worker processes talking to the runner over its socket (true
parallelism; what ``covey run`` uses). ``covey.run`` is the one-call form.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from covey.agents.app import app_ref_for, load_app
from covey.agents.registry import AgentDef, Registry
from covey.errors import ConfigError, RunFailed
from covey.runtime.admission import MaxBacklog
from covey.runtime.eventloop import run_async
from covey.runtime.retention import DEFAULT_RETENTION_MS
from covey.runtime.runner import DEFAULT_LEASE_MS, Runner
from covey.runtime.submit import WorkflowLike
from covey.store.base import RunInfo
from covey.worker.link import LocalLink
from covey.worker.process import spawn_worker
from covey.worker.worker import Worker

__all__ = ["Embedded", "run"]


class Embedded:
    """A runner plus local workers; use as ``async with Embedded(...) as covey``.

    Args:
        path: the SQLite file (default: a temporary one, deleted afterwards).
        agents: the agents to serve (AgentDefs), or
        app: an app reference (``examples/triage/app.py`` or ``myapp.agents``).
        workers: how many local workers.
        processes: run workers as separate processes (needs an importable app).
        concurrency: task slots per worker (default: the sum of the agents' concurrency).
        durable: fsync every commit (the default); False is the named non-durable mode.
        lease_ms: lease length.
        retention_ms: how long finished runs are kept before they are purged; None keeps them.
        max_backlog: the most unfinished runs accepted before a submit is refused (TooBusy); None
            for ``COVEY_MAX_BACKLOG`` or its default of 100,000.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        agents: Iterable[AgentDef] | None = None,
        app: str | None = None,
        workers: int = 1,
        processes: bool = False,
        concurrency: int | None = None,
        durable: bool = True,
        lease_ms: int = DEFAULT_LEASE_MS,
        retention_ms: int | None = DEFAULT_RETENTION_MS,
        max_backlog: MaxBacklog = None,
    ) -> None:
        if agents is None and app is None:
            raise ConfigError("give the agents to serve (agents=[...]) or an app reference (app='module')")
        self._tmp = tempfile.TemporaryDirectory(prefix="covey-") if path is None else None
        self.path = Path(self._tmp.name) / "covey.db" if self._tmp else Path(path or "covey.db")
        if app is not None:
            loaded = load_app(app)
            self.registry, self.app_ref = loaded.registry, app
        else:
            agent_list = list(agents or [])
            self.registry = Registry(agent_list)
            self.app_ref = app_ref_for(agent_list) if processes else ""
        if len(self.registry) == 0:
            raise ConfigError(f"no agents found in {app!r}")
        self.workers = workers
        self.processes = processes
        self.concurrency = concurrency
        self.runner = Runner(
            self.path,
            durable=durable,
            skills=self.registry.skills,
            agents=self.registry.names,
            lease_ms=lease_ms,
            retention_ms=retention_ms,
            max_backlog=max_backlog,
        )
        self._local: list[Worker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._children: list[subprocess.Popen[bytes]] = []

    async def __aenter__(self) -> Self:
        await self.runner.__aenter__()
        try:
            if self.processes:
                self._children = [
                    spawn_worker(self.app_ref, self.path, concurrency=self.concurrency)
                    for _ in range(self.workers)
                ]
            else:
                link = LocalLink(
                    self.runner.engine,
                    self.runner.store,
                    lease_ms=self.runner.lease_ms,
                    feed=self.runner.feed,
                )
                beat = max(0.05, self.runner.lease_ms / 3000)
                for _ in range(self.workers):
                    worker = Worker(self.registry, link, concurrency=self.concurrency, heartbeat_s=beat)
                    self._local.append(worker)
                    self._tasks.append(asyncio.create_task(worker.run()))
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for worker in self._local:
            worker.stop()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
        for child in self._children:
            child.terminate()
        for child in self._children:
            try:
                await asyncio.to_thread(child.wait, 15)
            except subprocess.TimeoutExpired:
                child.kill()
        await self.runner.__aexit__(exc_type, exc, tb)
        if self._tmp is not None:
            self._tmp.cleanup()

    def check_workers(self) -> None:
        """Raise ConfigError if every worker process has exited (nothing could make progress)."""
        if self._children and all(child.poll() is not None for child in self._children):
            codes = sorted({child.returncode for child in self._children})
            raise ConfigError(f"all worker processes exited (exit codes {codes}); see their errors above")

    async def submit(
        self, workflow: WorkflowLike, run_input: Any = None, *, run_id: str | None = None
    ) -> str:
        """Start a run; returns its id once committed."""
        return await self.runner.submit(workflow, run_input, run_id=run_id)

    async def submit_many(self, items: list[tuple[WorkflowLike, Any]]) -> list[str]:
        """Start many runs in one group commit."""
        return await self.runner.submit_many(items)

    async def wait(self, run_id: str) -> RunInfo:
        """Wait for a run to finish."""
        return await self.runner.wait(run_id)

    async def signal(
        self, run_id: str, name: str, payload: Any = None, *, signal_id: str | None = None
    ) -> None:
        """Deliver a signal to a run."""
        await self.runner.signal(run_id, name, payload, signal_id=signal_id)

    async def cancel(self, run_id: str, *, step: str | None = None) -> None:
        """Cancel a run or one of its steps."""
        await self.runner.cancel(run_id, step=step)


def run(
    workflow: WorkflowLike,
    run_input: Any = None,
    *,
    agents: Iterable[AgentDef] | None = None,
    app: str | None = None,
    path: str | Path | None = None,
    workers: int = 1,
    processes: bool = False,
) -> Any:
    """Run one workflow to the end on an embedded store and return its output.

    Raises:
        RunFailed: the run failed or was cancelled (``.error`` says why).
    """

    async def main() -> RunInfo:
        async with Embedded(path, agents=agents, app=app, workers=workers, processes=processes) as covey:
            return await covey.wait(await covey.submit(workflow, run_input))

    info = run_async(main())
    if info.status != "succeeded":
        raise RunFailed(info.run_id, info.status, info.error)
    return info.output
