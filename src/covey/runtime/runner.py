"""The embedded runner: owns one SQLite file and everything that writes to it.

It holds the file's writer lock, bumps the epoch (voiding leases of a previous
incarnation), runs the engine loop and the timekeeper, and serves the local
socket through which worker processes and commands (``covey submit``,
``signal``, ``cancel``) reach it. A runner killed at any moment loses nothing
committed; started again on the same file, it resumes every unfinished run.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from covey.codec import check_payload
from covey.engine.events import CancelRequested, SignalReceived
from covey.errors import InputError, NotFound
from covey.ids import new_id
from covey.runtime.admission import Admission, MaxBacklog, max_backlog_of
from covey.runtime.busy_poll import BusyPoll
from covey.runtime.feed import StateFeed
from covey.runtime.lockfile import RunnerLock, socket_path_for
from covey.runtime.loop import EngineLoop
from covey.runtime.retention import DEFAULT_RETENTION_MS, RetentionKeeper, purge_older_than
from covey.runtime.submit import WorkflowLike, prepare_submission, run_or_pending
from covey.runtime.timekeeper import Timekeeper
from covey.store.base import RunInfo
from covey.store.sqlite import SQLiteStore

__all__ = ["DEFAULT_LEASE_MS", "Runner"]

#: How long a lease lasts without a heartbeat, in milliseconds.
DEFAULT_LEASE_MS = 30_000


class Closable(Protocol):
    """An open socket connection, as the runner sees it: something it can close."""

    def close(self) -> None: ...


class Runner:
    """The engine of one embedded store; use as ``async with Runner("covey.db") as runner``.

    Args:
        path: the SQLite database file (created if missing).
        durable: fsync every commit; False is the explicitly non-durable fast mode.
        skills, agents: when given, submits naming other skills or agents are refused.
        serve_socket: listen on the local socket for worker processes and commands.
        lease_ms: lease length; workers heartbeat well within it.
        retention_ms: how long finished runs are kept before they are purged; None keeps them.
        max_backlog: the most unfinished runs accepted before a submit is refused with TooBusy
            (:mod:`covey.runtime.admission`); None for ``COVEY_MAX_BACKLOG`` or its default.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        durable: bool = True,
        skills: frozenset[str] | None = None,
        agents: frozenset[str] | None = None,
        serve_socket: bool = True,
        lease_ms: int = DEFAULT_LEASE_MS,
        retention_ms: int | None = DEFAULT_RETENTION_MS,
        max_backlog: MaxBacklog = None,
    ) -> None:
        self.path = Path(path)
        self.retention_ms = retention_ms
        self.store = SQLiteStore(self.path, durable=durable, sole_writer=True)  # it holds the lock
        self.admission = Admission(max_backlog_of(max_backlog))
        self.skills = skills
        self.agents = agents
        self.lease_ms = lease_ms
        self.socket_path = socket_path_for(self.path) if serve_socket else None
        self.busy_poll = BusyPoll()
        """Polls for a socket worker's report after each lease (:mod:`covey.runtime.busy_poll`)."""
        self._lock = RunnerLock(self.path)
        self._tasks: list[asyncio.Task[Any]] = []
        self._server: asyncio.AbstractServer | None = None
        self.loop: EngineLoop | None = None
        self.feed: StateFeed | None = None
        self.connections: set[Closable] = set()
        """Open socket connections (workers and commands)."""
        self.timekeeper: Timekeeper | None = None
        self.retention: RetentionKeeper | None = None

    async def __aenter__(self) -> Self:
        self._lock.acquire()
        try:
            await self.store.__aenter__()
            epoch = await self.store.begin_epoch()
            self.loop = EngineLoop(self.store, epoch=epoch)
            self.feed = StateFeed(self.store)
            self.loop.on_state_changed = self.feed.changed
            self.timekeeper = Timekeeper(self.store, self.loop.poke_inbox)
            self._tasks = [
                asyncio.create_task(self.loop.run(), name="covey-engine-loop"),
                asyncio.create_task(self.timekeeper.run(), name="covey-timekeeper"),
            ]
            if self.retention_ms is not None:
                self.retention = RetentionKeeper(self.store, self.retention_ms, self.loop)
                self._tasks.append(asyncio.create_task(self.retention.run(), name="covey-retention"))
            if self.socket_path is not None:
                from covey.runtime.socket_server import serve

                with contextlib.suppress(FileNotFoundError):
                    self.socket_path.unlink()
                self._server = await serve(self, self.socket_path)
                self._lock.announce(self.socket_path)
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_connections()  # a server waits for its connections to close (Python 3.12+)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
            if self.socket_path is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.socket_path.unlink()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self.loop is not None:
            with contextlib.suppress(Exception):
                await self.loop.drain()
        await self.store.__aexit__(None, None, None)
        self._lock.release()

    def feed_changed(self, namespaces: set[str]) -> None:
        """Writes to these namespaces were committed: wake their watchers."""
        if self.feed is not None:
            self.feed.changed(namespaces)

    def drop_connections(self) -> int:
        """Close every socket connection (clients reconnect); returns how many were open."""
        dropped = list(self.connections)
        for connection in dropped:
            connection.close()
        return len(dropped)

    @property
    def engine(self) -> EngineLoop:
        """The engine loop (available inside ``async with``)."""
        assert self.loop is not None, "use 'async with Runner(...)'"
        return self.loop

    async def submit(
        self, workflow: WorkflowLike, run_input: Any = None, *, run_id: str | None = None
    ) -> str:
        """Start a run and return its id once committed; repeating a run id is a no-op.

        Raises:
            TooBusy: the backlog is full (a repeated run id is still answered).
        """
        submission = prepare_submission(
            workflow, run_input, run_id=run_id, skills=self.skills, agents=self.agents
        )
        if await self.admission.admit_submit(self.store, run_id):
            await self.engine.submit(submission, await self.store.now_ms())
        return submission.run_id

    async def submit_many(self, items: list[tuple[WorkflowLike, Any]]) -> list[str]:
        """Start many runs in one group commit; every input is checked before any is stored.

        Raises:
            TooBusy: the backlog has no room for all of them (none is stored).
        """
        submissions = [prepare_submission(w, i, skills=self.skills, agents=self.agents) for w, i in items]
        await self.admission.admit(self.store, len(submissions))
        at_ms = await self.store.now_ms()
        await asyncio.gather(*(self.engine.submit(s, at_ms) for s in submissions))
        return [s.run_id for s in submissions]

    async def wait(self, run_id: str) -> RunInfo:
        """Wait for a run to finish and return it (output included); bound it with ``asyncio.timeout``.

        A run submitted while no runner was up waits in the inbox until the
        engine reads it: that one is waited for too. A run in neither place
        (never submitted, or purged) raises NotFound.
        """
        engine = self.engine
        pending = run_id not in engine.runs and await run_or_pending(self.store, run_id) is None
        await engine.wait_finished(run_id, submitted=pending)
        info = engine.finished_info(run_id) or await self.store.get_run(run_id)
        if info is None:  # finished, then purged before it was read (a retention of seconds)
            raise NotFound(f"no run {run_id!r}: it finished and was purged")
        return info

    async def signal(
        self, run_id: str, name: str, payload: Any = None, *, signal_id: str | None = None
    ) -> None:
        """Deliver a named signal; repeating a signal id is a no-op."""
        check_payload(payload, field="payload")
        info = await self.store.get_run(run_id)
        if info is None:
            raise NotFound(f"no run {run_id!r}")
        state = await self.engine.state_of(run_id)
        declared = state.workflow.spec.signals if state is not None else None
        if declared is not None and name not in declared:
            raise InputError(f"run {run_id} accepts no signal {name!r}; it declares {declared}", field="name")
        seen_id = f"signal:{run_id}:{signal_id or new_id()}"
        if await self.store.seen([seen_id]):
            return
        event = SignalReceived(seen_id, name, payload, await self.store.now_ms())
        await self.engine.deliver(event, run_id, seen_id=seen_id)

    async def cancel(
        self, run_id: str, *, step: str | None = None, reason: str = "cancelled by request"
    ) -> None:
        """Cancel a run, or one step of it."""
        if await self.store.get_run(run_id) is None:
            raise NotFound(f"no run {run_id!r}")
        await self.engine.deliver(CancelRequested(await self.store.now_ms(), step, reason), run_id)

    async def purge(self, older_than_ms: int) -> int:
        """Purge finished runs older than ``older_than_ms`` now (``covey gc``); how many went."""
        return await purge_older_than(self.store, older_than_ms, self.engine)
