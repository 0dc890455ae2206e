"""The engine loop: inbox batch -> decide -> one group commit -> replies.

The only caller of :func:`~covey.engine.decide.decide`. Each iteration takes
*everything* pending now (submits, reports, signals, cancels, fired timers,
claims), decides each against its run's cached state, and writes the whole
batch in one transaction. No timer waits to fill a batch: alone, a report is
committed at once; under load, batches grow while the previous commit is
being fsync'd, and throughput follows. Replies and leases leave only after the
commit returns; a failed commit discards the cached state of its runs
(invariant 3).

Embedded, one loop holds every shard and hears every input directly. On a
distributed store several loops share the runs: each decides only the runs of
the shards it holds (``set_shards``), reads its inputs from the store's inbox,
and announces what a commit made ready through ``on_hints`` (a bus).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any

import orjson

from covey.bus.base import topic_finished, topic_ready, topic_state
from covey.engine.commands import (
    ReadState,
)
from covey.engine.decide import decide
from covey.engine.events import (
    CancelRequested,
    Event,
    RunSubmitted,
    SignalReceived,
    StateRead,
    TaskSucceeded,
    event_from_json,
)
from covey.engine.replay import fold
from covey.engine.state import RunState, project
from covey.errors import BackendError, Conflict, CoveyError, NotFound
from covey.runtime.answer import Answer, Reply
from covey.runtime.batch import (
    Input,
    PendingClaim,
    PreparedBatch,
    RunDelta,
    Submission,
    finish_write,
    offline_submission,
    record_decision,
)
from covey.runtime.eventloop import wait_event
from covey.state.model import StateOp, run_namespace
from covey.store.base import (
    SHARDS,
    ClaimRequest,
    CommitBatch,
    CommitResult,
    InboxRow,
    Lease,
    RunInfo,
    RunWrite,
    Store,
    shard_of,
)

__all__ = ["EngineLoop"]

log = logging.getLogger("covey.engine")

#: Cap on inbox rows read from the store per iteration.
INBOX_BATCH = 2_000
#: Batches touching at least this many runs and claims commit in the background while the next is decided.
PIPELINE_FROM = 8
#: Consumed inbox rows remembered, so a late copy of one is not decided again (handed-over rows arrive within ms).
CONSUMED_KEPT = 100_000
#: Runs whose submit this loop dropped (a spec that no longer compiles), remembered so a wait for one ends.
DROPPED_KEPT = 1_000
#: After a failed commit the next batch waits this long, doubling per failure in a row up to
#: RETRY_MAX_S: the failed batch's rows are read again at once otherwise, and a store that keeps
#: failing would be retried in a hot loop.
RETRY_MIN_S = 0.01
RETRY_MAX_S = 1.0
#: Finished runs kept in the cache (for late reports, repeated submits).
FINISHED_CACHE = 2_000


class EngineLoop:
    """Folds inputs into runs and commits them in groups; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        epoch: int,
        shards: Collection[int] | None = None,
        inbox_batch: int = INBOX_BATCH,
    ) -> None:
        self.store = store
        self.inbox_batch = inbox_batch
        """Inbox rows read per iteration: it bounds a commit, which on Redis holds the whole server."""
        self.epoch = epoch
        self.shards: frozenset[int] | None = None if shards is None else frozenset(shards)
        """The shards this loop decides; None for all of them (the embedded runner)."""
        self.runs: dict[str, RunState] = {}
        self._finished_order: list[str] = []
        self._finished: set[str] = set()
        """Runs whose end is committed (a cached state may say finished before its commit lands)."""
        self._results: dict[str, RunInfo] = {}
        self._items: list[Input] = []
        self._claims: list[PendingClaim] = []
        self._parked: list[PendingClaim] = []
        self._wake = asyncio.Event()
        self._wake_held = False
        """Inputs are being queued by a caller that decides them itself (see :meth:`hold_wake`)."""
        self._parks = 0
        """Claims parked so far: :meth:`release_wake` wakes :meth:`run` to keep a new one's deadline."""
        self._read_inbox = True
        self._inbox_pending: set[int] = set()
        """Inbox rows read and not yet consumed by a commit: skipped when the inbox is read again."""
        self._inbox_cursor = 0
        """On a store whose inbox seqs commit in order, the last row read: the next read starts after it."""
        self._consumed: set[int] = set()
        self._consumed_order: deque[int] = deque()
        """Inbox rows this loop's recent commits consumed: a copy handed over late (``offer_inbox``) is dropped."""
        self._dropped: deque[str] = deque(maxlen=DROPPED_KEPT)
        """Runs whose submit, read from the inbox, was dropped: nothing will store them."""
        self._in_flight: asyncio.Task[bool] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.on_state_changed: Callable[[set[str]], None] | None = None
        """Told which namespaces a commit's staged state writes touched (wakes watchers)."""
        self.on_hints: Callable[[set[str]], None] | None = None
        """Told, after each commit, the bus topics it concerns: targets with unleased ready tasks, namespaces."""
        self.on_answered: Callable[[], None] | None = None
        """Called once a commit's callers and claims are answered, before its hints and follow-ups (the
        runner's socket sends the answers' frames then)."""
        self.hints_in_commit = False
        """The store publishes a batch's hints as part of its commit (``Store.carry_hints``): skip on_hints."""
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}
        self.commits = 0
        self._failed_in_a_row = 0
        self._iterating = False
        """:meth:`run` is inside an iteration (it may be awaiting a load, a read or a commit)."""
        self.stopped = False

    # -- inputs ------------------------------------------------------------------------

    async def submit(self, submission: Submission, at_ms: int) -> bool:
        """Start a run; True if it was created, False if a run with that id already existed."""
        event = RunSubmitted(submission.run_id, dict(submission.workflow.source), submission.input, at_ms)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue(Input(submission.run_id, event, submission=submission), future)
        return await future

    async def deliver(
        self, event: Event, run_id: str, *, output: Any = None, seen_id: str | None = None
    ) -> bool:
        """Decide an input event (report, signal, cancel) and wait for its commit."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.deliver_to(future, event, run_id, output=output, seen_id=seen_id)
        return await future

    def deliver_to(
        self,
        answer: Answer[bool],
        event: Event,
        run_id: str,
        *,
        output: Any = None,
        worker_id: str | None = None,
        seen_id: str | None = None,
        state_ops: list[StateOp] | None = None,
    ) -> None:
        """Queue an input event; ``answer`` is given after its commit (see :mod:`covey.runtime.answer`)."""
        item = Input(run_id, event, output_value=output, worker_id=worker_id, seen_id=seen_id)
        if state_ops:
            item.state_ops = state_ops
        if isinstance(event, TaskSucceeded):
            item.output = orjson.dumps(output)
        self._queue(item, answer)

    def _queue(self, item: Input, answer: Answer[bool]) -> None:
        item.future = answer
        self._items.append(item)
        if not self._wake_held:
            self._wake.set()

    async def claim(self, request: ClaimRequest, *, wait_s: float = 0.0) -> list[Lease]:
        """Lease up to ``request.limit`` tasks; with ``wait_s``, wait that long for some to be ready."""
        return await self.claim_nowait(request, wait_s=wait_s)

    def claim_nowait(self, request: ClaimRequest, *, wait_s: float = 0.0) -> asyncio.Future[list[Lease]]:
        """Queue a claim for the next batch now; the future resolves with its leases.

        A claim queued with a report (an in-process worker's report may carry
        its next claim) then joins the report's batch, and can take the task
        the report makes ready.
        """
        future: asyncio.Future[list[Lease]] = asyncio.get_running_loop().create_future()
        self.claim_to(future, request, wait_s=wait_s)
        return future

    def claim_to(self, answer: Answer[list[Lease]], request: ClaimRequest, *, wait_s: float = 0.0) -> None:
        """Queue a claim for the next batch now; ``answer`` is given its leases (see :meth:`claim_nowait`)."""
        park_until = asyncio.get_running_loop().time() + wait_s if wait_s > 0 else 0.0
        self._claims.append(PendingClaim(request, answer, park_until))
        if not self._wake_held:
            self._wake.set()

    def hold_wake(self) -> None:
        """Queue inputs and claims without waking :meth:`run`: the caller decides them itself.

        The runner's socket holds it while it queues what one read brought,
        then calls :meth:`release_wake`, which decides them inline. Waking
        :meth:`run` for each would cost a task switch and an empty iteration
        per report, right as the hand-off's lease leaves.
        """
        self._wake_held = True

    def release_wake(self, *, iterate: bool) -> None:
        """End :meth:`hold_wake`; with ``iterate``, decide what is queued now (:meth:`iterate_now`).

        :meth:`run` is woken for whatever that leaves to it: work it declined,
        a commit it put in flight, a claim it parked (whose deadline
        :meth:`run` keeps).
        """
        self._wake_held = False
        parks = self._parks
        if iterate:
            self.iterate_now()
        if self._items or self._claims or self._in_flight is not None or self._parks != parks:
            self._wake.set()

    def set_shards(self, shards: Collection[int]) -> None:
        """Decide the runs of ``shards`` from now on, forgetting cached runs whose shard came or went.

        A run of a shard held before and lost meanwhile may have been decided
        elsewhere, so a shard that comes back is loaded afresh too.
        """
        new = frozenset(shards)
        old = self.shards if self.shards is not None else new
        changed = new ^ old
        if changed:
            for run_id in [r for r in self.runs if shard_of(r) in changed]:
                del self.runs[run_id]
                self._finished.discard(run_id)
        self.shards = new
        self._reread_inbox()
        self._wake.set()

    def owns(self, run_id: str) -> bool:
        """Whether this loop decides ``run_id`` now."""
        return self.shards is None or shard_of(run_id) in self.shards

    def offer_inbox(self, rows: Sequence[InboxRow]) -> None:
        """Inbox rows the store handed over as they were appended: decided like rows read, and only once.

        A row may also be read from the inbox before or after its copy comes:
        one pending or recently consumed is skipped.
        """
        for row in rows:
            if row.seq in self._inbox_pending or row.seq in self._consumed:
                continue
            self._inbox_pending.add(row.seq)
            self._items.append(self._inbox_input(row))
        self._wake.set()

    def poke_inbox(self) -> None:
        """Something was appended to the store's inbox (a timer fired): read it next iteration."""
        self._read_inbox = True
        self._wake.set()

    def unpark(self, worker_id: str) -> None:
        """Answer a stopping worker's parked claim at once, with no leases."""
        keep = []
        for pending in self._parked:
            if pending.request.worker_id == worker_id:
                _answer(pending.future, [])
            else:
                keep.append(pending)
        self._parked = keep
        for pending in self._claims:
            if pending.request.worker_id == worker_id:
                pending.park_until = 0.0

    def poke_claims(self) -> None:
        """Tasks became ready outside a decision (released leases): retry parked claims."""
        self._claims.extend(self._parked)
        self._parked.clear()
        self._wake.set()

    def forget_runs(self, run_ids: list[str]) -> None:
        """Drop purged runs from the caches: a run id used again is a new run, loaded from the store."""
        for run_id in run_ids:
            self.runs.pop(run_id, None)
            self._finished.discard(run_id)
            self._results.pop(run_id, None)

    def forget_finished_before(self, before_ms: int) -> None:
        """Drop cached runs that finished before ``before_ms``, whoever purged them.

        On a shared store any engine node may purge any run, so a node cannot
        count on hearing of each one. Each node's retention sweep calls this
        with its cutoff: a run another node purged is gone from this node's
        caches by its next sweep at the latest.
        """
        old = [
            run_id
            for run_id in self._finished
            if (state := self.runs.get(run_id)) is None
            or state.finished_ms is None
            or state.finished_ms < before_ms
        ]
        self.forget_runs(old)

    def finished_info(self, run_id: str) -> RunInfo | None:
        """A recently finished run, as committed, if this loop finished it (no store read)."""
        return self._results.get(run_id)

    async def state_of(self, run_id: str) -> RunState | None:
        """A run's current state, loaded from its history if not cached (read-only use)."""
        if run_id not in self.runs:
            await self._load([run_id])
        return self.runs.get(run_id)

    async def wait_finished(self, run_id: str, *, submitted: bool = False) -> str:
        """Wait until the run finishes; returns its status.

        ``submitted``: the caller saw the run's submit in the store's inbox, so
        a run not stored yet will be; if this loop drops that submit instead,
        the wait ends with NotFound.
        """
        state = self.runs.get(run_id)
        if state is not None and run_id in self._finished:
            return state.status
        info = None if state is not None else await self.store.get_run(run_id)
        if info is not None and info.status != "running":
            return info.status
        if state is None and info is None:
            if not submitted:
                raise NotFound(f"no run {run_id!r}")  # purged, or never submitted: it will not finish
            if run_id in self._dropped:
                raise NotFound(f"no run {run_id!r}: its submit was dropped")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(run_id, []).append(future)
        return await future

    # -- the loop ----------------------------------------------------------------------

    def stop(self) -> None:
        """End :meth:`run` after its current iteration (a cancellation may be lost inside a driver)."""
        self.stopped = True
        self._wake.set()

    async def run(self) -> None:
        """Iterate until stopped or cancelled: wait for work, decide it, commit it, answer."""
        while not self.stopped:
            self._expire_parked()
            timeout = self._next_park_deadline()
            if not (self._items or self._claims or self._read_inbox):
                self._wake.clear()
                if not await wait_event(self._wake, timeout):
                    continue
            if self._failed_in_a_row:
                await asyncio.sleep(min(RETRY_MAX_S, RETRY_MIN_S * 2 ** (self._failed_in_a_row - 1)))
            self._iterating = True
            try:
                await self.iterate()
            finally:
                self._iterating = False

    async def iterate(self) -> None:
        """One batch: take what is pending and decide it while the previous batch commits, then commit it.

        At most one commit is in flight: this batch is decided on top of the
        previous one's uncommitted state, and its commit starts only once that
        one succeeded. If it failed, this batch is abandoned too (its decisions
        rest on state that was never written). Answers always follow commits.
        """
        items, self._items = self._items, []
        claims, self._claims = self._claims, []
        if self._read_inbox:
            self._read_inbox = False
            items.extend(await self._from_store_inbox())
        if self.shards is not None:
            items = self._owned(items)
        if not items and not claims:
            return
        try:
            prepared = await self._prepare(items, claims)
        except Exception as exc:
            log.exception("deciding a batch failed; discarding the cached state of its runs")
            self._abandon(items, claims, exc)
            return
        previous, self._in_flight = self._in_flight, None
        if previous is not None and not await previous:
            self._abandon(prepared.items, prepared.claims, BackendError("the previous commit failed"))
            return
        if len(prepared.batch.runs) + len(prepared.batch.claims) < PIPELINE_FROM:
            await self._commit(prepared)  # a small batch: commit now, without a task hop on the hand-off path
        else:
            self._in_flight = asyncio.create_task(self._commit(prepared))

    def iterate_now(self) -> bool:
        """Decide and commit what is queued within the caller's turn of the event loop, if nothing waits.

        The runner's socket calls it once it has read all a wake-up brought (a
        worker's report, maybe carrying its next claim): the hand-off then skips the turn
        in which :meth:`run` would wake up and take the batch. It declines,
        leaving the work to :meth:`run`, when that must wait for something: an
        iteration or a commit in progress, a run to load, the store's inbox to
        read, a failed commit's pause. The batch commits inline only if the
        store can write it without waiting (:meth:`Store.commit_now`); if not,
        or if it is large, its commit goes in flight as in :meth:`iterate`.
        Returns whether it took the queued work.
        """
        if (
            self._iterating
            or self._in_flight is not None
            or self._failed_in_a_row
            or self._read_inbox
            or self.stopped
            or not (self._items or self._claims)
        ):
            return False
        for item in self._items:
            if item.run_id not in self.runs and not isinstance(item.event, RunSubmitted):
                return False  # a run to load first
        items, self._items = self._items, []
        claims, self._claims = self._claims, []
        if self.shards is not None:
            items = self._owned(items)
        try:
            prepared = self._build(items, claims)
        except Exception as exc:
            log.exception("deciding a batch failed; discarding the cached state of its runs")
            self._abandon(items, claims, exc)
            return True
        if len(prepared.batch.runs) + len(prepared.batch.claims) < PIPELINE_FROM:
            try:
                result = self.store.commit_now(prepared.batch)
            except Exception as exc:
                self._commit_failed(prepared, exc)
                return True
            if result is not None:
                self._committed(prepared, result)
                return True
        self._in_flight = asyncio.create_task(self._commit(prepared))
        return True

    async def drain(self) -> None:
        """Wait for the commit in flight, if any (its answers are sent when it returns)."""
        if self._in_flight is not None:
            await self._in_flight

    def _owned(self, items: list[Input]) -> list[Input]:
        """Keep the inputs of runs this loop decides; a lost shard's inbox rows stay for its new owner."""
        kept = []
        for item in items:
            if self.owns(item.run_id):
                kept.append(item)
            else:
                self._inbox_pending.discard(item.seq)
                _fail(item.future, Conflict(f"run {item.run_id} is decided by another engine loop"))
        return kept

    def _abandon(self, items: list[Input], claims: list[PendingClaim], exc: BaseException) -> None:
        for item in items:
            self.runs.pop(item.run_id, None)
            if item.seq:
                self._inbox_pending.discard(item.seq)
                self._reread_inbox()  # its row is still in the inbox: read it again
            _fail(item.future, exc)
        for pending in claims:
            _fail(pending.future, exc)

    async def _from_store_inbox(self) -> list[Input]:
        """Inbox rows not yet being decided, oldest first.

        Where a row's seq is assigned as it commits (SQLite, Redis), a read
        starts after the last row read: no row can commit below it later. On
        PostgreSQL sequence values are not committed in order, so a cursor
        could step over a row that commits late: rows are read from the start
        every time, skipping those already in a batch.
        """
        if self.shards is not None and not self.shards:
            return []
        ordered = self.store.inbox_in_seq_order
        limit = self.inbox_batch + (0 if ordered else len(self._inbox_pending))
        every = self.shards is not None and len(self.shards) == SHARDS  # no filter is cheaper than all 256
        rows = await self.store.read_inbox(
            self._inbox_cursor if ordered else 0, limit, None if every else self.shards
        )
        if len(rows) == limit:
            self._read_inbox = True
        if ordered and rows:
            self._inbox_cursor = max(self._inbox_cursor, rows[-1].seq)
        items = []
        for row in rows:
            # Consumed ones too: a read that raced a commit may return rows the commit then consumed.
            if row.seq in self._inbox_pending or row.seq in self._consumed:
                continue
            self._inbox_pending.add(row.seq)
            items.append(self._inbox_input(row))
        return items

    def _reread_inbox(self) -> None:
        """Read the inbox from its start next time: a row read before is back (abandoned), or shards moved."""
        self._inbox_cursor = 0
        self._read_inbox = True

    @staticmethod
    def _inbox_input(row: InboxRow) -> Input:
        """An inbox row as an input of the next batch (a malformed one is consumed without a decision)."""
        try:
            event = event_from_json(row.event)
        except CoveyError as exc:
            log.error("dropping malformed inbox row %s: %s", row.id, exc)
            return Input(row.run_id, None, seq=row.seq)
        output_value = orjson.loads(row.output) if row.output is not None else None
        item = Input(row.run_id, event, output=row.output, output_value=output_value, seq=row.seq)
        if row.state_ops:
            try:
                item.state_ops = [StateOp.from_json(op) for op in row.state_ops]
            except CoveyError as exc:
                log.error("dropping malformed state writes of inbox row %s: %s", row.id, exc)
                return Input(row.run_id, None, seq=row.seq)
        if isinstance(event, SignalReceived | CancelRequested):
            item.seen_id = row.id  # remembered with the commit: the same id appended again is a no-op
        if isinstance(event, RunSubmitted):
            item.submission = offline_submission(event, row.id)
            if item.submission is None:
                item.event = None
                item.dropped_submit = True
        return item

    async def _prepare(self, items: list[Input], claims: list[PendingClaim]) -> PreparedBatch:
        """Decide a batch's inputs and build its commit (nothing is written yet)."""
        # A submit needs no load: if its run exists after all, the commit's sequence check says so.
        await self._load(
            [i.run_id for i in items if i.run_id not in self.runs and not isinstance(i.event, RunSubmitted)]
        )
        return self._build(items, claims)

    def _build(self, items: list[Input], claims: list[PendingClaim]) -> PreparedBatch:
        """Decide a batch's inputs, their runs loaded, and build its commit (nothing is written yet)."""
        prepared = PreparedBatch(items, claims, CommitBatch(self.epoch, claims=[c.request for c in claims]))
        for item in items:
            self._decide_item(item, prepared.writes, prepared.batch, prepared.answers)
        reporters = {item.worker_id for item in items if item.worker_id}
        woken, prepared.woken_for = self._parked_matching(prepared.writes, reporters, claims)
        for pending in woken:
            claims.append(pending)
            prepared.batch.claims.append(pending.request)
        prepared.batch.runs = [finish_write(w) for w in prepared.writes.values()]
        if self.hints_in_commit and self.on_hints is not None:
            # Known before the commit, so tasks its claims lease are hinted too: a spare hint costs an empty claim.
            prepared.batch.hints = _topics_of(prepared.writes, set(), self._touched(prepared.writes))
        return prepared

    async def _commit(self, prepared: PreparedBatch) -> bool:
        """Write a prepared batch, then answer; False if the commit failed (its callers got the error)."""
        try:
            result = await self.store.commit(prepared.batch)
        except Exception as exc:
            self._commit_failed(prepared, exc)
            return False
        self._committed(prepared, result)
        return True

    def _commit_failed(self, prepared: PreparedBatch, exc: Exception) -> None:
        log.exception("commit failed; discarding the cached state of its runs", exc_info=exc)
        self._failed_in_a_row += 1
        self._drop_cache(prepared.writes)
        self._abandon(prepared.items, prepared.claims, exc)

    def _committed(self, prepared: PreparedBatch, result: CommitResult) -> None:
        """After a batch's commit: consume its inbox rows, answer everyone it concerns."""
        self._failed_in_a_row = 0
        self.commits += 1
        if self._inbox_pending:
            consumed = list(prepared.batch.consumed)
            for write in prepared.batch.runs:
                if write.run_id not in result.conflicts:
                    consumed += write.consumed
            self._inbox_pending.difference_update(consumed)
            self._remember_consumed(consumed)
        for run_id, problems in result.state_errors.items():
            log.warning("run %s: staged state writes skipped: %s", run_id, "; ".join(problems))
        self._answer_committed(result, prepared)
        if self.on_answered is not None:
            self.on_answered()
        self._follow_up(result, prepared)

    def _remember_consumed(self, seqs: Sequence[int]) -> None:
        self._consumed.update(seqs)
        self._consumed_order.extend(seqs)
        while len(self._consumed_order) > CONSUMED_KEPT:
            self._consumed.discard(self._consumed_order.popleft())

    async def _load(self, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        histories = await self.store.load_histories(sorted(set(run_ids)))
        for run_id, history in histories.items():
            state = fold([event_from_json(body) for body in history], check=False)
            if state is not None:
                self.runs[run_id] = state
                if state.finished:
                    self._finished.add(run_id)

    def _decide_item(
        self, item: Input, writes: dict[str, RunDelta], batch: CommitBatch, answers: list[tuple[Input, bool]]
    ) -> None:
        state = self.runs.get(item.run_id)
        if item.event is None or (state is None and not isinstance(item.event, RunSubmitted)):
            if item.seq:
                batch.consumed.append(item.seq)
            answers.append((item, False))
            if item.dropped_submit and state is None:  # whoever waits for its run waits in vain
                self._dropped.append(item.run_id)
                for future in self._waiters.pop(item.run_id, []):
                    _fail(future, NotFound(f"no run {item.run_id!r}: its submit was dropped"))
            return
        if isinstance(item.event, RunSubmitted) and state is not None:
            if item.seq:
                batch.consumed.append(item.seq)
            answers.append((item, False))
            return
        if state is not None and isinstance(item.event, TaskSucceeded):
            item.event = self._with_projection(state, item)
        decision = decide(state, item.event)
        entry = writes.get(item.run_id)
        if entry is None:
            expected = 0 if state is None else decision.state.seq
            entry = writes[item.run_id] = RunDelta(RunWrite(item.run_id, expected, expected))
        self.runs[item.run_id] = decision.state
        record_decision(entry, item, decision)
        answers.append((item, True))

    @staticmethod
    def _with_projection(state: RunState, item: Input) -> Event:
        event = item.event
        assert isinstance(event, TaskSucceeded)
        found = state.task(event.task_id)
        if found is None:
            return event
        # Steps a hand-off adds may test any part of this output: keep all of it.
        paths = frozenset({()}) if event.handoff else state.projection_paths(found[0].name)
        if not paths:
            return event
        return TaskSucceeded(
            event.task_id, event.lease_no, event.at_ms, project(item.output_value, paths), event.handoff
        )

    def _parked_matching(
        self, writes: dict[str, RunDelta], reporters: set[str], fresh: list[PendingClaim]
    ) -> tuple[list[PendingClaim], int]:
        """Wake just enough parked claims to take the tasks this batch makes ready.

        The batch's fresh claims come first (a worker's claim read with its
        report), then parked claims of workers that reported in this batch:
        they are warm, and a hand-off then stays on one worker. Waking every
        matching claim would cost each an empty SELECT in the commit. Returns
        the claims to wake and how many ready tasks the batch's claims were
        counted on to take; if labels keep them from some, :meth:`_grant`
        wakes the rest.
        """
        ready: dict[str, int] = {}
        for entry in writes.values():
            for task in entry.tasks.values():
                if task is not None:
                    ready[task.target] = ready.get(task.target, 0) + 1
        if not ready:
            return [], 0
        counted = sum(_take(ready, pending.request) for pending in fresh)
        if not ready or not self._parked:
            return [], counted
        chosen: list[PendingClaim] = []
        for pending in sorted(self._parked, key=lambda c: c.request.worker_id not in reporters):
            if not ready:
                break
            taken = _take(ready, pending.request)
            if taken:
                chosen.append(pending)
                counted += pending.request.limit
        woken = {id(pending) for pending in chosen}
        self._parked = [pending for pending in self._parked if id(pending) not in woken]
        return chosen, counted

    def _drop_cache(self, writes: dict[str, RunDelta]) -> None:
        for run_id in writes:
            self.runs.pop(run_id, None)

    def _answer_committed(self, result: CommitResult, prepared: PreparedBatch) -> None:
        """Answer the batch's callers and claims; redo the conflicting runs.

        Nothing else comes first: on a hand-off, the report's answer and the
        lease this commit granted are what a worker waits for.
        """
        self._requeue_conflicts(result.conflicts, prepared.writes)
        for item, created in prepared.answers:
            if item.run_id not in result.conflicts:
                _answer(item.future, created)
        self._grant(result, prepared)

    def _follow_up(self, result: CommitResult, prepared: PreparedBatch) -> None:
        """After the answers: hints, state watchers, condition reads, and those waiting for finished runs."""
        writes = prepared.writes
        touched = self._touched(writes)
        if touched and self.on_state_changed is not None:
            self.on_state_changed(touched)
        if self.on_hints is not None and not self.hints_in_commit:
            leased = {lease.task_id for leases in result.leases.values() for lease in leases}
            live = {run_id: entry for run_id, entry in writes.items() if run_id not in result.conflicts}
            topics = _topics_of(live, leased, touched)
            if topics:
                self.on_hints(topics)
        for run_id, entry in writes.items():
            if run_id in result.conflicts:
                continue
            for read in entry.reads:
                self.spawn(self._read_state(read))
            if entry.finished:
                self._run_finished(run_id, result.outputs.get(run_id))

    @staticmethod
    def _touched(writes: dict[str, RunDelta]) -> set[str]:
        """The namespaces a batch's staged state writes change."""
        return {op.namespace for w in writes.values() for op in w.write.state_ops}

    def _requeue_conflicts(self, conflicts: set[str], writes: dict[str, RunDelta]) -> None:
        for run_id in conflicts:
            self.runs.pop(run_id, None)
            for item in writes[run_id].items:
                if isinstance(item.event, RunSubmitted):
                    _answer(item.future, False)
                else:
                    self._items.append(item)
                    self._wake.set()

    def _grant(self, result: CommitResult, prepared: PreparedBatch) -> None:
        """Hand each claim its leases; a waiting claim that got none parks again."""
        writes, claims = prepared.writes, prepared.claims
        granted: dict[str, list[Lease]] = {k: list(v) for k, v in result.leases.items()}
        enqueued = sum(1 for w in writes.values() for t in w.tasks.values() if t is not None)
        if self._parked and sum(map(len, granted.values())) < min(enqueued, prepared.woken_for):
            self.poke_claims()  # labels kept a woken claim from its task: let the others try
        for pending in claims:
            leases = granted.get(pending.request.worker_id, [])
            granted[pending.request.worker_id] = []
            if leases or not pending.park_until:
                _answer(pending.future, leases)
            else:
                self._parked.append(pending)
                self._parks += 1

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a follow-up of a commit in the background, keeping a reference until it ends."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _read_state(self, read: ReadState) -> None:
        """After the commit that asked: read the keys a condition tests, then decide StateRead."""
        namespace = run_namespace(read.run_id)
        try:
            values = {}
            for key in read.keys:
                entry = await self.store.state_get(namespace, key)
                values[key] = (
                    {"value": entry.value, "version": entry.version}
                    if entry
                    else {"value": None, "version": 0}
                )
            at_ms = await self.store.now_ms()
        except Exception:
            log.exception("reading state for %s/%s failed; retrying", read.run_id, read.step)
            await asyncio.sleep(0.5)
            self.spawn(self._read_state(read))
            return
        nobody_waits: Reply[bool] = Reply(lambda _result, _error: None)
        self.deliver_to(nobody_waits, StateRead(read.step, values, at_ms), read.run_id)

    def _run_finished(self, run_id: str, output: Any) -> None:
        state = self.runs.get(run_id)
        status = state.status if state is not None else "finished"
        if state is not None:
            self._results[run_id] = RunInfo(
                run_id, state.workflow.spec.name, state.status, state.seq, state.created_ms,
                state.finished_ms or state.created_ms, state.finished_ms, state.input, output, state.error,
            )  # fmt: skip
        for future in self._waiters.pop(run_id, []):
            _answer(future, status)
        self._finished_order.append(run_id)
        self._finished.add(run_id)
        if len(self._finished_order) > FINISHED_CACHE:
            old = self._finished_order[: len(self._finished_order) // 2]
            self._finished_order = self._finished_order[len(old) :]
            for stale in old:
                self._finished.discard(stale)
                self._results.pop(stale, None)
                cached = self.runs.get(stale)
                if cached is not None and cached.finished:
                    del self.runs[stale]

    def _expire_parked(self) -> None:
        if not self._parked:
            return
        now = asyncio.get_running_loop().time()
        keep = []
        for pending in self._parked:
            if pending.park_until <= now:
                _answer(pending.future, [])
            else:
                keep.append(pending)
        self._parked = keep

    def _next_park_deadline(self) -> float | None:
        if not self._parked:
            return None
        now = asyncio.get_running_loop().time()
        return max(0.0, min(c.park_until for c in self._parked) - now)


def _topics_of(writes: dict[str, RunDelta], leased: set[str], touched: set[str]) -> set[str]:
    """The hints of a commit: targets of the tasks it leaves ready (not ``leased``), changed namespaces,
    and ``finished`` if it ends a run."""
    topics = {topic_state(namespace) for namespace in touched}
    for entry in writes.values():
        if entry.finished:
            topics.add(topic_finished())
        topics.update(
            topic_ready(task.target)
            for task in entry.tasks.values()
            if task is not None and task.task_id not in leased
        )
    return topics


def _take(ready: dict[str, int], request: ClaimRequest) -> int:
    """Count ``request``'s free slots against the ``ready`` tasks of its targets; how many it would take.

    Targets whose tasks are all taken leave ``ready``, so an empty ``ready`` means nothing is left.
    """
    room = request.limit
    for target in [t for t in ready if t in request.targets]:
        if room <= 0:
            break
        taken = min(ready[target], room)
        room -= taken
        if taken == ready[target]:
            del ready[target]
        else:
            ready[target] -= taken
    return request.limit - room


def _answer(future: Answer[Any] | None, value: Any) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def _fail(future: Answer[Any] | None, exc: BaseException) -> None:
    if future is not None and not future.done():
        future.set_exception(exc)
