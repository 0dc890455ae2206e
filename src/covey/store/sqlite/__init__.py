"""The embedded store: one SQLite file in WAL mode, one writing thread.

:class:`SQLiteStore` is the async face of :class:`SQLiteCore`: every call
runs on one dedicated thread, so the event loop never blocks on an fsync and
SQLite sees a single writer. While a commit is being fsync'd the engine loop
keeps accepting work, which becomes the next (larger) group commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from covey.bus.base import Bus
from covey.errors import BackendError, BackendUnavailable
from covey.state.model import StateChange, StateEntry, StateOp
from covey.store.base import (
    ClaimRequest,
    CommitBatch,
    CommitResult,
    InboxRow,
    Lease,
    RunInfo,
    TaskInfo,
    WorkerInfo,
)
from covey.store.feeds import BoundedFeeds
from covey.store.sqlite.core import SQLiteCore

__all__ = ["SQLiteCore", "SQLiteStore"]

T = TypeVar("T")

#: Commits touching at most this many runs and claims run on the event loop's thread (see ``_call``).
INLINE_COMMIT_LIMIT = 8
#: A write transaction begun ahead and unused this long is rolled back: an idle runner does not hold
#: the write lock, so a command that opened the file for writing just as the runner started waits
#: for at most this, not for the runner to stop.
AHEAD_UNUSED_S = 0.02

log = logging.getLogger("covey.store.sqlite")


class SQLiteStore(BoundedFeeds):
    """The :class:`~covey.store.base.Store` on one SQLite file.

    Args:
        path: the database file.
        durable: fsync every commit (``synchronous=FULL``); False trades the
            last commits before a power loss for speed, and is named so.
        readonly: open for reading only (inspection while a runner writes).
        sole_writer: nothing else writes the file while this store is open (the runner holds its
            lock): each write transaction is begun ahead, while the event loop is idle
            (``Connection.begin_ahead``), and holds the write lock until the next commit.
    """

    inbox_in_seq_order = True  # one writer assigns inbox seqs

    def __init__(
        self, path: str | Path, *, durable: bool = True, readonly: bool = False, sole_writer: bool = False
    ) -> None:
        self.path = Path(path)
        self.durable = durable
        self.readonly = readonly
        self.sole_writer = sole_writer and not readonly
        self._beginning = False
        self._core: SQLiteCore | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._settling = False
        self._flusher: ThreadPoolExecutor | None = None
        self._flushing = False
        self._wal_fd = -1
        self._read_feed_keep()

    def _feed_keep_changed(self, keep: int) -> None:
        if self._core is not None:
            self._core.feed_keep = keep  # an int assignment: safe beside the writer thread

    async def __aenter__(self) -> Self:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="covey-sqlite")
        try:
            self._core = await self._run(
                lambda: SQLiteCore(self.path, durable=self.durable, readonly=self.readonly)
            )
            self._core.feed_keep = self.feed_keep
        except BaseException:
            # A failed enter gets no __aexit__: stop the thread it started.
            self._thread.shutdown(wait=True)
            self._thread = None
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Detach the core before closing it: a call made while the close runs on the writer thread
        # must not reach the connection from the event loop's thread (that crashed the process).
        core, self._core = self._core, None
        if core is not None:
            self._in_flight += 1
            try:
                await self._run(core.close)
            finally:
                self._in_flight -= 1
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._flusher is not None:
            self._flusher.shutdown(wait=True)
            self._flusher = None
            os.close(self._wal_fd)

    async def _run(self, fn: Callable[[], T]) -> T:
        assert self._thread is not None, "use 'async with SQLiteStore(...)'"
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn)
        except sqlite3.Error as exc:
            raise self._backend_error(exc) from None

    def _backend_error(self, exc: sqlite3.Error) -> BackendError:
        """The driver's error translated: nothing above the store sees a sqlite3 exception (STYLE 4.2)."""
        return BackendError(f"SQLite database {self.path}: {exc}")

    async def _call(self, name: str, *args: Any, inline: bool = True) -> Any:
        """Run a core call: inline when it is small and the writer thread is idle, else on that thread.

        Inline calls skip the thread hop (about 100 µs of wake-ups, a third of
        a hand-off); large commits go to the writer thread so the event loop
        keeps deciding the next batch during their fsync. The two never
        overlap: an inline call runs only while no job is in flight, and while
        it runs the event loop, the only submitter of jobs, is busy with it.
        """
        core = self._core
        if core is None:
            raise BackendUnavailable(
                f"SQLite database {self.path} is not open (use 'async with SQLiteStore(...)')"
            )
        call = functools.partial(core.settled, name, *args)
        if inline and self._in_flight == 0:
            try:
                return call()
            except sqlite3.Error as exc:
                raise self._backend_error(exc) from None
            finally:
                self._begin_ahead_soon()
        self._in_flight += 1
        try:
            return await self._run(call)
        finally:
            self._in_flight -= 1
            self._begin_ahead_soon()

    def carry_hints(self, bus: Bus) -> bool:
        """Hints stay with the callers: see :meth:`covey.store.base.Store.carry_hints`."""
        return False

    async def now_ms(self) -> int:
        """The store's clock."""
        return SQLiteCore.now_ms()

    def now_ms_nowait(self) -> int:
        """The store's clock, without a round trip (SQLite's clock is this machine's)."""
        return SQLiteCore.now_ms()

    async def begin_epoch(self) -> int:
        """Take every shard; void older leases."""
        return int(await self._call("begin_epoch"))

    async def join_epoch(self) -> int:
        """A new epoch holding no shard."""
        return int(await self._call("join_epoch"))

    async def take_shards(self, epoch: int, shards: Sequence[int], ttl_ms: int) -> set[int]:
        """Lease shards to an epoch; the ones it holds."""
        held: set[int] = await self._call("take_shards", epoch, list(shards), ttl_ms)
        return held

    async def release_shards(self, epoch: int, shards: Sequence[int]) -> None:
        """Give shards back."""
        await self._call("release_shards", epoch, list(shards))

    async def shard_leases(self) -> dict[int, tuple[int, int]]:
        """shard -> (epoch, lease end)."""
        leases: dict[int, tuple[int, int]] = await self._call("shard_leases")
        return leases

    async def commit(self, batch: CommitBatch) -> CommitResult:
        """Write a batch atomically, then grant its claims."""
        small = len(batch.runs) + len(batch.claims) <= INLINE_COMMIT_LIMIT
        result: CommitResult = await self._call("commit", batch, inline=small)
        return result

    def commit_now(self, batch: CommitBatch) -> CommitResult | None:
        """Write a batch inline if the writer thread is idle (see :meth:`_call`); None if it is busy.

        A small batch commits as a journal row (:mod:`.journal`): durable when
        this returns, in the tables from the event loop's next turn, after the
        caller has sent its answers. Other connections see it from then on.
        """
        core = self._core
        if core is None or self._in_flight:
            return None
        try:
            result: CommitResult = core.commit(batch, journal=True)
        except sqlite3.Error as exc:
            raise self._backend_error(exc) from None
        self._settle_soon()
        self._begin_ahead_soon()
        return result

    def _begin_ahead_soon(self) -> None:
        """As sole writer, begin the next write transaction on the event loop's next turn (after the
        answers of the commit that just ended, and after applying its journaled writes)."""
        if self.sole_writer and not self._beginning:
            self._beginning = True
            asyncio.get_running_loop().call_soon(self._begin_ahead)

    def _begin_ahead(self) -> None:
        self._beginning = False
        core = self._core
        if core is None or self._in_flight:
            return  # closed, or the writer thread is busy: its call schedules this again when it ends
        try:
            began = core.begin_ahead()
        except sqlite3.Error as exc:
            log.warning("beginning the next write transaction ahead failed; the write will begin it: %s", exc)
            return
        if began:
            asyncio.get_running_loop().call_later(AHEAD_UNUSED_S, self._end_unused_ahead, core.writes)

    def _end_unused_ahead(self, writes: int) -> None:
        """Roll back a transaction begun ahead that no write has used since (the store fell idle)."""
        core = self._core
        if core is None or self._in_flight or core.writes != writes:
            return  # closed, busy, or used (a later one has its own deadline)
        try:
            core.end_ahead()
        except sqlite3.Error as exc:
            log.warning("ending an unused write transaction failed: %s", exc)

    def _settle_soon(self) -> None:
        """Apply a journaled commit's writes on the event loop's next turn: after its answers are sent.

        If a call comes first, it applies them before it runs (``SQLiteCore.settled``).
        """
        core = self._core
        if core is not None and core.unapplied and not self._settling:
            self._settling = True
            asyncio.get_running_loop().call_soon(self._settle)

    def _settle(self) -> None:
        self._settling = False
        core = self._core
        if core is None or not core.unapplied or self._in_flight:
            return  # done already, or the writer thread is busy: its next call applies them
        try:
            core.settle()
        except sqlite3.Error as exc:
            # Nothing is lost (the rows are durable); the next call tries again, and reports it.
            log.warning("applying journaled writes failed, retried on the next call: %s", exc)
            return
        self._flush_wal_behind()
        self._begin_ahead_soon()

    def _flush_wal_behind(self) -> None:
        """fsync the WAL on a thread of its own, so the next durable commit finds the applied pages on disk.

        The applied writes need no fsync (their journal row is durable), but the
        next durable commit's fsync would otherwise write their pages too, on
        the path of the hand-off that waits for it. Nothing depends on this
        one finishing: it only moves disk work off that path.
        """
        if self._flusher is None:
            try:
                self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY)
            except OSError:
                return
            self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="covey-sqlite-flush")
        if not self._flushing:
            self._flushing = True
            self._flusher.submit(self._fsync_wal)

    def _fsync_wal(self) -> None:
        self._flushing = False
        with contextlib.suppress(OSError):
            os.fsync(self._wal_fd)

    async def journal_left(self) -> bool:
        """Whether a writer that stopped left journal rows the tables lack (see ``.journal``)."""
        return bool(await self._call("journal_left"))

    async def claim(self, request: ClaimRequest) -> list[Lease]:
        """Lease ready tasks."""
        leases: list[Lease] = await self._call("claim", request)
        return leases

    async def heartbeat(self, worker_id: str, leases: Sequence[tuple[str, int]], lease_ms: int) -> list[str]:
        """Extend leases; return those lost."""
        lost: list[str] = await self._call("heartbeat", worker_id, leases, lease_ms)
        return lost

    async def release(self, worker_id: str, leases: Sequence[tuple[str, int]]) -> None:
        """Give leases back."""
        await self._call("release", worker_id, leases)

    async def append_inbox(self, rows: Sequence[InboxRow]) -> None:
        """Append inbox rows idempotently."""
        await self._call("append_inbox", rows)

    async def read_inbox(
        self, after_seq: int, limit: int, shards: Collection[int] | None = None
    ) -> list[InboxRow]:
        """Inbox rows after a sequence number."""
        rows: list[InboxRow] = await self._call("read_inbox", after_seq, limit, shards)
        return rows

    async def fire_due(self, limit: int) -> int:
        """Fire due timers and ended leases."""
        return int(await self._call("fire_due", limit))

    async def next_due_ms(self) -> int | None:
        """When the next timer or lease comes due."""
        due: int | None = await self._call("next_due_ms")
        return due

    async def load_history(self, run_id: str) -> list[dict[str, Any]]:
        """A run's events."""
        history: list[dict[str, Any]] = await self._call("load_history", run_id)
        return history

    async def load_histories(self, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Several runs' events at once; absent runs are left out."""
        found: dict[str, list[dict[str, Any]]] = await self._call("load_histories", run_ids)
        return found

    async def seen(self, ids: Sequence[str]) -> set[str]:
        """Already committed client ids."""
        found: set[str] = await self._call("seen", ids)
        return found

    async def get_run(self, run_id: str) -> RunInfo | None:
        """One run."""
        info: RunInfo | None = await self._call("get_run", run_id)
        return info

    async def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[RunInfo]:
        """Runs, newest first."""
        runs: list[RunInfo] = await self._call("list_runs", status, limit)
        return runs

    async def backlog(self) -> int:
        """Runs running, plus inputs waiting in the inbox."""
        return int(await self._call("backlog"))

    async def list_tasks(self, run_id: str) -> list[TaskInfo]:
        """A run's task rows."""
        tasks: list[TaskInfo] = await self._call("list_tasks", run_id)
        return tasks

    async def get_outputs(self, run_id: str, steps: Sequence[str]) -> dict[str, Any]:
        """Step outputs."""
        outputs: dict[str, Any] = await self._call("get_outputs", run_id, steps)
        return outputs

    async def state_get(self, namespace: str, key: str) -> StateEntry | None:
        """A key's value and version."""
        entry: StateEntry | None = await self._call("state_get", namespace, key)
        return entry

    async def state_apply(
        self,
        ops: Sequence[StateOp],
        *,
        fence: tuple[str, int] | None = None,
        lock: tuple[str, int] | None = None,
    ) -> list[StateEntry]:
        """Apply writes atomically."""
        entries: list[StateEntry] = await self._call("state_apply", list(ops), fence, lock)
        return entries

    async def lock_acquire(self, name: str, holder: str, *, limit: int = 1, ttl_ms: int) -> int | None:
        """Take a permit; its fencing token, or None."""
        token: int | None = await self._call("lock_acquire", name, holder, limit, ttl_ms)
        return token

    async def lock_release(self, name: str, token: int) -> bool:
        """Give a permit back."""
        return bool(await self._call("lock_release", name, token))

    async def lock_renew(self, name: str, token: int, ttl_ms: int) -> bool:
        """Extend a permit."""
        return bool(await self._call("lock_renew", name, token, ttl_ms))

    async def state_list(
        self, namespace: str, *, prefix: str = "", after: str = "", limit: int = 100
    ) -> list[StateEntry]:
        """Keys of a namespace, in key order."""
        entries: list[StateEntry] = await self._call("state_list", namespace, prefix, after, limit)
        return entries

    async def state_changes(self, namespace: str, after_seq: int, limit: int = 1000) -> list[StateChange]:
        """A namespace's changes after a cursor."""
        changes: list[StateChange] = await self._call("state_changes", namespace, after_seq, limit)
        return changes

    async def purge_finished(self, before_ms: int, limit: int) -> list[str]:
        """Delete finished runs past their retention (on the writer thread: a batch may be large)."""
        purged: list[str] = await self._call("purge_finished", before_ms, limit, inline=False)
        return purged

    async def register_worker(self, info: WorkerInfo) -> None:
        """Register a worker."""
        await self._call("register_worker", info)

    async def unregister_worker(self, worker_id: str) -> None:
        """Unregister a worker."""
        await self._call("unregister_worker", worker_id)

    async def list_workers(self) -> list[WorkerInfo]:
        """Registered workers."""
        workers: list[WorkerInfo] = await self._call("list_workers")
        return workers
