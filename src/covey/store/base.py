"""The store contract: the durable source of truth (invariants 1, 3, 4, 5).

Every store (SQLite embedded; PostgreSQL and Redis distributed) implements
:class:`Store` with the same semantics, checked by one conformance suite
(:mod:`covey.testing.conformance`, run by ``tests/store``). The engine loop
is the only caller of :meth:`Store.commit`; workers call :meth:`Store.claim`,
:meth:`Store.heartbeat` and :meth:`Store.append_inbox`; timekeepers call
:meth:`Store.fire_due`.

Semantics every implementation keeps:

* ``commit`` is atomic: all of a batch's runs that pass their sequence check
  are written, with their events, task rows, timers, outputs and consumed
  inbox rows, or nothing is. A run whose ``expected_seq`` does not match is
  left out and reported in ``CommitResult.conflicts``; the others still
  commit. A write for a run that does not exist is its first commit and
  carries ``new``; one without it is a conflict too. A stale ``epoch`` fails
  the whole commit with Conflict.
* Claims listed in a batch run after its writes, in the same transaction, so
  a task made ready by the batch can be leased by it ("hand-off in one commit").
* A claim takes only ``ready`` rows, highest priority first with aging
  (one priority level per :data:`AGING_MS` waited), then oldest, and gives each
  lease ``lease_no + 1``. Leases are never handed out by a clock: a deadline
  only makes :meth:`fire_due` report the lease as ended.
* ``fire_due`` deletes due timer rows and marks ended leases ``expired``, and
  appends the matching TimerFired rows to the inbox in the same transaction.
* Times are the store's clock (:meth:`now_ms`), never a worker's.
* Runs hash into :data:`SHARDS` shards (:func:`shard_of`). An engine loop
  decides a run only while its epoch holds the run's shard: ``begin_epoch``
  takes every shard at once (the embedded runner), ``join_epoch`` plus
  ``take_shards`` take some (engine loops on many machines). A commit whose
  epoch does not hold the shard of every run it writes fails as a whole with
  Conflict, so a paused ex-owner cannot write.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from covey.engine.commands import EnqueueTask, SetTimer
from covey.records import record
from covey.state.model import StateChange, StateEntry, StateOp

if TYPE_CHECKING:
    from covey.bus.base import Bus

__all__ = [
    "AGING_MS",
    "SHARDS",
    "ClaimRequest",
    "CommitBatch",
    "CommitResult",
    "InboxRow",
    "Lease",
    "NewRun",
    "PushesInbox",
    "RunInfo",
    "RunWrite",
    "Store",
    "TaskInfo",
    "WaitingClaims",
    "WorkerInfo",
    "report_row_id",
    "shard_of",
]

#: A waiting task gains one priority level per this many milliseconds, so low priority never starves.
AGING_MS = 10_000

#: Runs hash into this many shards; an engine loop owns whole shards (invariant 3).
SHARDS = 256


def shard_of(run_id: str) -> int:
    """The shard a run belongs to: a stable hash, the same on every machine and release."""
    return zlib.crc32(run_id.encode()) % SHARDS


def report_row_id(task_id: str, lease_no: int) -> str:
    """The inbox row id of a worker's report on one lease of a task (a repeated report is the same row).

    The Redis timekeeper spells it too (``fire_due.lua``): a lease whose
    report waits in the inbox is not ended while it waits.
    """
    return f"report:{task_id}:{lease_no}"


@record
class InboxRow:
    """Something for a run waiting to be decided: a report, a signal, a fired timer, a submit, a cancel.

    ``id`` makes appending idempotent: a second row with the same id is ignored.
    ``event`` is the input event as JSON (see :func:`covey.engine.events.event_to_json`).
    """

    id: str
    run_id: str
    event: dict[str, Any]
    seq: int = 0
    output: bytes | None = None
    """For a success report: the agent's output as JSON bytes, stored if the report is accepted."""
    state_ops: list[dict[str, Any]] | None = None
    """For a success report: its staged state writes (``StateOp.to_json`` each), applied if it is accepted."""


@dataclass(slots=True)
class NewRun:
    """What a first commit of a run writes besides its events."""

    workflow: str
    spec_hash: str
    spec: bytes
    input: bytes
    parent: str | None = None


@dataclass(slots=True)
class RunWrite:
    """One run's share of a commit: a delta, never a copy of the run."""

    run_id: str
    expected_seq: int
    new_seq: int
    events: list[tuple[int, str, int, bytes]] = field(default_factory=list)
    """(seq, type, at_ms, JSON body) of each event appended."""
    new: NewRun | None = None
    status: str | None = None
    output: bytes | None = None
    """The run's output as JSON, when the caller has it; ``output_template`` renders one instead."""
    error: bytes | None = None
    finished_ms: int | None = None
    enqueue: list[EnqueueTask] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    set_timers: list[SetTimer] = field(default_factory=list)
    cancel_timers: list[str] = field(default_factory=list)
    outputs: list[tuple[str, int, bytes]] = field(default_factory=list)
    """(step, index, JSON body): index -1 for a plain step, 0.. for map elements."""
    output_template: bytes | None = None
    """When the run finishes: its output mapping, rendered by the store after this commit's outputs are written.

    It wins over ``output``; a mapping that fails to render stores ``{"error": <message>}`` as the output.
    """
    consumed: list[int] = field(default_factory=list)
    """Inbox row seqs decided by this commit."""
    seen: list[str] = field(default_factory=list)
    """Client-chosen ids (signals, cancels) to remember, so repeating them is a no-op."""
    drop_namespace: str | None = None
    """A shared-state namespace to delete with this commit (a finished run's, when its workflow says so)."""
    state_ops: list[StateOp] = field(default_factory=list)
    """Staged shared-state writes of the tries this commit accepted: applied exactly once, with them.

    They are unconditional (no ``if_version``). One whose reducer does not fit
    the current value is skipped, and reported in ``CommitResult.state_errors``.
    """


@record
class ClaimRequest:
    """A worker with free slots asks for up to ``limit`` tasks it can run."""

    worker_id: str
    targets: frozenset[str]
    """Skills, and ``agent:<name>`` for named agents."""
    labels: Mapping[str, str]
    limit: int
    lease_ms: int


@dataclass(slots=True)
class CommitBatch:
    """Everything one engine-loop iteration writes, in one transaction."""

    epoch: int
    runs: list[RunWrite] = field(default_factory=list)
    claims: list[ClaimRequest] = field(default_factory=list)
    consumed: list[int] = field(default_factory=list)
    """Inbox rows that changed nothing (for unknown runs) and are simply removed."""
    hints: set[str] = field(default_factory=set)
    """Bus topics this batch concerns, published by the commit itself when the store carries hints."""


@record
class Lease:
    """A task handed to one worker until a deadline; ``lease_no`` is its fencing token."""

    task_id: str
    run_id: str
    step: str
    index: int
    target: str
    lease_no: int
    try_no: int
    input: Any
    input_schema: dict[str, Any] | None
    timeout_ms: int | None
    lease_until_ms: int
    input_error: str | None = None
    """Set when the input could not be resolved; the worker reports it as a failure."""


@dataclass(slots=True)
class CommitResult:
    """What a commit did: runs left out for a sequence conflict, and leases granted."""

    conflicts: set[str] = field(default_factory=set)
    leases: dict[str, list[Lease]] = field(default_factory=dict)
    """By worker id: every lease the batch's claims granted (a worker claiming twice gets both grants)."""
    state_errors: dict[str, list[str]] = field(default_factory=dict)
    """By run id: staged state writes that were skipped, and why."""
    outputs: dict[str, Any] = field(default_factory=dict)
    """By run id: the rendered output of each run this batch finished (saves a read per finished run)."""


@record
class RunInfo:
    """A run as listed and shown."""

    run_id: str
    workflow: str
    status: str
    seq: int
    created_ms: int
    updated_ms: int
    finished_ms: int | None
    input: Any
    output: Any
    error: Any


@record
class TaskInfo:
    """A task row: ready, leased or expired (finished tasks have no row)."""

    task_id: str
    step: str
    index: int
    status: str
    try_no: int
    lease_no: int
    worker_id: str | None
    lease_until_ms: int | None


@record
class WorkerInfo:
    """A registered worker: what it serves and when it was last heard from."""

    worker_id: str
    targets: frozenset[str]
    labels: Mapping[str, str]
    slots: int
    heartbeat_ms: int
    started_ms: int


class Store(Protocol):
    """The durable source of truth; see the module docstring for the semantics."""

    inbox_in_seq_order: bool
    """Whether an inbox row's seq is assigned as the row commits (one writer; a script), so no row
    can later appear below one already read: a reader may then go on from the last seq it read."""

    feed_keep: int
    """How many of its latest changes each namespace's change feed keeps at least
    (``COVEY_FEED_KEEP``, else :data:`~covey.store.feeds.DEFAULT_FEED_KEEP`): older ones are trimmed as writes come, up
    to :func:`~covey.store.feeds.feed_trim_every` at a time, so a feed holds at most 1% more. Settable on an open store."""

    async def now_ms(self) -> int:
        """The store's clock, in milliseconds since the epoch."""
        ...

    def carry_hints(self, bus: Bus) -> bool:
        """Publish hints on ``bus`` from inside this store's own writes, if the two share a server.

        True if so, and from then on :meth:`append_inbox` publishes the
        ``inbox`` hint and :meth:`commit` its batch's ``hints``, each once its
        write is complete, so callers skip their own publish. False (the
        default) leaves publishing to the callers.
        """
        ...

    async def begin_epoch(self) -> int:
        """Take ownership of every shard for this process; returns the new epoch.

        Leases granted under earlier epochs are void: each is reported to its
        run as TimerFired(kind="lease_voided").
        """
        ...

    async def join_epoch(self) -> int:
        """A new epoch that holds no shard yet: for engine loops that share the store with others.

        Unlike :meth:`begin_epoch` it voids no lease: workers hold their leases
        in the store, not in an engine loop, so a loop starting or dying
        changes nothing for them.
        """
        ...

    async def take_shards(self, epoch: int, shards: Sequence[int], ttl_ms: int) -> set[int]:
        """Lease shards to ``epoch`` until ``ttl_ms`` from now; returns the ones it holds now.

        A requested shard is granted if it is free, its lease has ended, or
        ``epoch`` holds it already (a renewal). One held by another epoch
        whose lease runs is left alone. Taking a shard moves it to ``epoch``,
        so its former holder's commits fail from then on.
        """
        ...

    async def release_shards(self, epoch: int, shards: Sequence[int]) -> None:
        """Give shards back at once (a clean stop, or rebalancing); others may take them now."""
        ...

    async def shard_leases(self) -> dict[int, tuple[int, int]]:
        """Every shard ever leased: shard -> (epoch, lease end in ms, store clock)."""
        ...

    async def commit(self, batch: CommitBatch) -> CommitResult:
        """Write a batch atomically, then grant its claims (see module docstring)."""
        ...

    def commit_now(self, batch: CommitBatch) -> CommitResult | None:
        """:meth:`commit`, within the caller's turn of the event loop, if this store can write without waiting.

        An embedded file whose writer is idle can (the write blocks the loop
        for its fsync, as one writer's commits would serialize anyway); a
        server's store cannot. None, with nothing written, means: use
        :meth:`commit`.
        """
        ...

    async def claim(self, request: ClaimRequest) -> list[Lease]:
        """Lease up to ``request.limit`` ready tasks, inputs resolved."""
        ...

    async def heartbeat(self, worker_id: str, leases: Sequence[tuple[str, int]], lease_ms: int) -> list[str]:
        """Extend the worker's leases (capped by each try's timeout).

        ``leases`` are (task_id, lease_no) pairs; returns the task ids among them
        this worker no longer holds (finished elsewhere, cancelled, expired).
        """
        ...

    async def release(self, worker_id: str, leases: Sequence[tuple[str, int]]) -> None:
        """Give leases back at once (graceful stop): the tasks become ready for others."""
        ...

    async def append_inbox(self, rows: Sequence[InboxRow]) -> None:
        """Append rows for the engine loop; a row whose id was seen before is ignored."""
        ...

    async def read_inbox(
        self, after_seq: int, limit: int, shards: Collection[int] | None = None
    ) -> list[InboxRow]:
        """Inbox rows after ``after_seq``, oldest first; only runs of ``shards`` when given."""
        ...

    async def fire_due(self, limit: int) -> int:
        """Move due timers and ended leases into the inbox; returns how many fired."""
        ...

    async def next_due_ms(self) -> int | None:
        """When the earliest timer or lease comes due, if any."""
        ...

    async def load_history(self, run_id: str) -> list[dict[str, Any]]:
        """A run's events as JSON objects, in sequence order."""
        ...

    async def load_histories(self, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Several runs' events at once; runs that do not exist are left out."""
        ...

    async def seen(self, ids: Sequence[str]) -> set[str]:
        """Which of these client-chosen ids were already committed."""
        ...

    async def get_run(self, run_id: str) -> RunInfo | None:
        """One run, or None."""
        ...

    async def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[RunInfo]:
        """Runs, newest first."""
        ...

    async def list_tasks(self, run_id: str) -> list[TaskInfo]:
        """A run's unfinished task rows."""
        ...

    async def backlog(self) -> int:
        """Runs not finished: those running, plus the inputs waiting in the inbox (submits among them).

        Admission control compares it with its limit before it accepts a new
        run (:mod:`covey.runtime.admission`). It must be cheap enough to call
        every second: an index count, not a scan of the runs' rows.
        """
        ...

    async def get_outputs(self, run_id: str, steps: Sequence[str]) -> dict[str, Any]:
        """Outputs of steps: a plain step's value, a map step's ordered list, None if none."""
        ...

    async def state_get(self, namespace: str, key: str) -> StateEntry | None:
        """A key's value and version, or None if it does not exist."""
        ...

    async def state_apply(
        self,
        ops: Sequence[StateOp],
        *,
        fence: tuple[str, int] | None = None,
        lock: tuple[str, int] | None = None,
    ) -> list[StateEntry]:
        """Apply writes atomically, all or none, and return each key's entry after its write.

        Raises:
            VersionConflict: an ``if_version`` did not match (nothing is written).
            StaleLease: ``fence`` (task id, lease number) is not the task's
                current lease, or ``lock`` (name, token) is not a current
                holder's token: a holder that lost its lease or lock writes nothing.
            InputError: a reducer does not fit the key's value.
        """
        ...

    async def lock_acquire(self, name: str, holder: str, *, limit: int = 1, ttl_ms: int) -> int | None:
        """Take one of ``limit`` permits of ``name`` for ``ttl_ms`` (store clock); None if all are held.

        The token is higher than every token given for ``name`` before: a
        fencing token. An expired permit is free again, whoever held it.
        """
        ...

    async def lock_release(self, name: str, token: int) -> bool:
        """Give a permit back; False if ``token`` no longer holds one."""
        ...

    async def lock_renew(self, name: str, token: int, ttl_ms: int) -> bool:
        """Extend a held permit by ``ttl_ms`` from now; False if it expired or was taken."""
        ...

    async def state_list(
        self, namespace: str, *, prefix: str = "", after: str = "", limit: int = 100
    ) -> list[StateEntry]:
        """Keys of a namespace starting with ``prefix``, in key order, after ``after`` (paging)."""
        ...

    async def state_changes(self, namespace: str, after_seq: int, limit: int = 1000) -> list[StateChange]:
        """A namespace's changes after ``after_seq``, in commit order: a watcher resumes from its cursor.

        Each namespace's feed keeps at least its last :attr:`feed_keep`
        changes; the older ones are trimmed as new ones are written. Sequence
        numbers have no gaps, so :func:`~covey.store.feeds.trimmed_past` tells a trimmed cursor
        from the first row returned.

        Raises:
            CursorExpired: changes after ``after_seq`` were trimmed already.
        """
        ...

    async def purge_finished(self, before_ms: int, limit: int) -> list[str]:
        """Delete up to ``limit`` runs that finished before ``before_ms`` (store clock), oldest first.

        A purged run leaves nothing behind: its row, history, task rows,
        outputs, timers, inbox rows, remembered signal and cancel ids, and
        its own shared-state namespace (values and change feed) all go, in
        one atomic step per run. Running runs are never touched. Returns the
        ids purged; an empty list means none is left to purge.
        """
        ...

    async def register_worker(self, info: WorkerInfo) -> None:
        """Add or refresh a worker in the registry."""
        ...

    async def unregister_worker(self, worker_id: str) -> None:
        """Remove a worker from the registry."""
        ...

    async def list_workers(self) -> list[WorkerInfo]:
        """Registered workers."""
        ...


@runtime_checkable
class WaitingClaims(Protocol):
    """A store that can hold a worker's claim until a task is ready for it (the Redis store).

    Beside :class:`Store`: a worker on such a store waits in the store instead
    of for a bus hint, and the commit that makes a task ready hands it to one
    waiting worker directly, so one worker wakes, with its lease.
    """

    async def claim_or_wait(self, request: ClaimRequest, wait_s: float) -> list[Lease]:
        """Lease what is ready; if nothing is, wait up to ``wait_s`` for a task granted to this claim."""
        ...

    async def wake_waiting(self, worker_id: str) -> None:
        """End the worker's wait now, with nothing (it is stopping)."""
        ...


@runtime_checkable
class PushesInbox(Protocol):
    """A store that hands new inbox rows to the engine node holding their shard (the Redis store).

    Beside :class:`Store`: the node waits here for its rows instead of for an
    ``inbox`` hint followed by :meth:`Store.read_inbox`. The rows stay in the
    inbox until a commit consumes them, so the node still reads the inbox now
    and then, and a row may reach it both ways (it decides each once).
    """

    async def wait_inbox(self, epoch: int, wait_s: float) -> list[InboxRow]:
        """Rows of ``epoch``'s shards appended from now on, as they come, waiting up to ``wait_s``."""
        ...

    async def stop_waiting_inbox(self, epoch: int) -> None:
        """End the pushes to ``epoch``."""
        ...
