"""The group commit of the SQLite store, and taking over as the runner (epochs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from covey.engine.commands import EnqueueTask
from covey.engine.events import TimerFired
from covey.errors import Conflict, CoveyError
from covey.store.base import (
    AGING_MS,
    SHARDS,
    ClaimRequest,
    CommitBatch,
    CommitResult,
    Lease,
    RunWrite,
    shard_of,
)
from covey.store.inputs import render_input, template_of
from covey.store.sqlite.connection import chunks, from_json, qmarks
from covey.store.sqlite.journal import encode_writes
from covey.store.sqlite.own_writes import OwnWrites
from covey.store.sqlite.tasks import InputResolver, Tasks, offers

__all__ = ["Commit"]

#: Largest batch, in runs, that commits as a journal row (larger ones are throughput's, not latency's).
JOURNAL_RUNS = 2
#: Largest journal row: a batch whose writes take more (a large output) writes the tables directly.
JOURNAL_MAX_BYTES = 64 * 1024
#: A lease end that never comes: the embedded runner holds its shards until another runner starts.
FOREVER_MS = 2**62

_INSERT_SPECS = "INSERT OR IGNORE INTO specs VALUES (?, ?)"
_INSERT_RUNS = (
    "INSERT INTO runs (run_id, workflow, spec_hash, status, seq, input, parent, created_ms, updated_ms)"
    " VALUES (?, ?, ?, 'running', 0, ?, ?, ?, ?)"
)
# A run whose status stays is updated without naming the status: SQLite rewrites the
# entries of every index on an assigned column, and runs_by_status would cost a WAL page.
_MOVE_RUNS = "UPDATE runs SET seq = ?, updated_ms = ? WHERE run_id = ?"
_FINISH_RUNS = (
    "UPDATE runs SET seq = ?, updated_ms = ?, status = coalesce(?, status), output = coalesce(?, output),"
    " error = coalesce(?, error), finished_ms = coalesce(?, finished_ms) WHERE run_id = ?"
)
_INSERT_EVENTS = "INSERT INTO events (run_id, seq, type, at_ms, body) VALUES (?, ?, ?, ?, ?)"
_DROP_TASKS = "DELETE FROM tasks WHERE task_id = ?"
_CANCEL_TIMERS = "DELETE FROM timers WHERE timer_id = ?"
_SET_TIMERS = "INSERT OR REPLACE INTO timers VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_OUTPUTS = "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?)"
_CONSUME_INBOX = "DELETE FROM inbox WHERE seq = ?"
_INSERT_SEEN = "INSERT OR IGNORE INTO seen VALUES (?, ?)"


class Commit(Tasks):
    """``commit``: every run of a batch in one transaction, then its claims."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._own = OwnWrites()
        """Shards and run sequence numbers known without a read while no other connection writes."""
        self._journal_seq = 0
        """The journal row the transaction in progress inserted (kept once its commit returns)."""

    def release(self, worker_id: str, leases: Sequence[tuple[str, int]]) -> None:
        """Give leases back (see :meth:`Tasks.release`): ready tasks again, so no longer known to be none."""
        self._own.none_ready = False
        super().release(worker_id, leases)

    def begin_epoch(self) -> int:
        """Bump the epoch and void every lease granted under an earlier one."""
        self._own.forget()
        return int(self._write(self._begin_epoch))

    def _next_epoch(self) -> int:
        epoch = int(self.db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]) + 1
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (str(epoch),))
        return epoch

    def join_epoch(self) -> int:
        """A new epoch holding no shard."""
        self._own.forget()
        return int(self._write(self._next_epoch))

    def take_shards(self, epoch: int, shards: Sequence[int], ttl_ms: int) -> set[int]:
        """Lease free, ended or own shards to ``epoch``; returns those it holds."""
        self._own.forget()
        return self._write(self._take_shards, epoch, shards, ttl_ms)  # type: ignore[no-any-return]

    def _take_shards(self, epoch: int, shards: Sequence[int], ttl_ms: int) -> set[int]:
        now = self.now_ms()
        self.db.executemany(
            "INSERT INTO shards (shard, epoch, until_ms) VALUES (?, ?, ?) ON CONFLICT (shard) DO UPDATE"
            " SET epoch = excluded.epoch, until_ms = excluded.until_ms"
            " WHERE shards.epoch = excluded.epoch OR shards.until_ms <= ?",
            [(shard, epoch, now + ttl_ms, now) for shard in shards],
        )
        return self._held(epoch, shards)

    def _held(self, epoch: int, shards: Sequence[int]) -> set[int]:
        held: set[int] = set()
        for part in chunks(list(shards)):
            held.update(
                row[0]
                for row in self.db.execute(
                    f"SELECT shard FROM shards WHERE epoch = ? AND shard IN ({qmarks(len(part))})",
                    (epoch, *part),
                )
            )
        return held

    def release_shards(self, epoch: int, shards: Sequence[int]) -> None:
        """End ``epoch``'s leases of ``shards`` now (the epoch stays on them until someone takes them)."""
        self._own.forget()
        self._write(
            lambda: self.db.executemany(
                "UPDATE shards SET until_ms = 0 WHERE shard = ? AND epoch = ?",
                [(shard, epoch) for shard in shards],
            )
        )

    def shard_leases(self) -> dict[int, tuple[int, int]]:
        """shard -> (epoch, until_ms)."""
        return {s: (e, u) for s, e, u in self.db.execute("SELECT shard, epoch, until_ms FROM shards")}

    def _check_epoch(self, batch: CommitBatch) -> None:
        """Conflict unless ``batch.epoch`` holds the shard of every run the batch writes.

        A batch that writes no run (claims only) needs no shard.
        """
        needed = {shard_of(w.run_id) for w in batch.runs}
        if self._own.holds(batch.epoch, needed):
            return
        held = self._held(batch.epoch, sorted(needed))
        self._own.held(batch.epoch, held)
        lost = needed - held
        if lost:
            raise Conflict(
                f"epoch {batch.epoch} no longer holds shard(s) {sorted(lost)[:5]}; another engine loop took over"
            )

    def _begin_epoch(self) -> int:
        epoch = self._next_epoch()
        self.db.executemany(
            "INSERT OR REPLACE INTO shards (shard, epoch, until_ms) VALUES (?, ?, ?)",
            [(shard, epoch, FOREVER_MS) for shard in range(SHARDS)],
        )
        now = self.now_ms()
        rows = self.db.execute(
            "SELECT task_id, run_id, lease_no FROM tasks WHERE status = 'leased'"
        ).fetchall()
        self.db.execute("UPDATE tasks SET status = 'expired' WHERE status = 'leased'")
        self._append_timer_rows(
            (
                f"void:{task_id}:{lease_no}:{epoch}",
                run_id,
                TimerFired(f"void:{task_id}", "lease_voided", now, task_id, lease_no),
            )
            for task_id, run_id, lease_no in rows
        )
        return epoch

    def commit(self, batch: CommitBatch, *, journal: bool = False) -> CommitResult:
        """Write a batch atomically, then grant its claims.

        With ``journal``, a small batch that reads nothing it writes commits as
        a journal row (:mod:`.journal`), and its writes wait in
        :attr:`unapplied` for :meth:`settle`: until then only this connection
        sees them.
        """
        self.settle()
        self._recording = [] if journal and self._journal_eligible(batch) else None
        try:
            result: CommitResult = self._write(self._commit, batch)
            if self._recording:
                self.unapplied.append((self._journal_seq, self._recording))
        finally:
            self._recording = None
        self._own.committed({w.run_id: w.new_seq for w in batch.runs if w.run_id not in result.conflicts})
        return result

    def _journal_eligible(self, batch: CommitBatch) -> bool:
        """Whether ``batch`` may commit as a journal row: a few runs, and no read of what it writes.

        Writes are held until the end of the transaction, so nothing the batch
        does may read them back: staged state writes and dropped namespaces
        (read and written together), a run's output (rendered from its stored
        outputs), a map element's output (a join's input is read from all the
        stored elements). A claim the batch's own tasks cannot serve reads the
        ready tasks, this batch's among them: the held writes are executed
        before it (:meth:`_stop_recording`). Without durability a row saves
        nothing.
        """
        return (
            self.durable
            and 0 < len(batch.runs) <= JOURNAL_RUNS
            and all(
                not w.state_ops
                and w.drop_namespace is None
                and w.output_template is None
                and all(index < 0 for _, index, _ in w.outputs)
                for w in batch.runs
            )
        )

    def _stop_recording(self) -> None:
        """Execute the writes held so far and write directly from now on (the batch has to read them)."""
        held, self._recording = self._recording, None
        for sql, rows in held or ():
            self.db.executemany(sql, rows)

    def _finish_recording(self) -> None:
        """End a recording commit: its writes become one journal row, or, if large, go into the tables."""
        if not self._recording:
            return
        body = encode_writes(self._recording)
        if len(body) > JOURNAL_MAX_BYTES:
            self._stop_recording()  # a large output: one copy in the tables beats two in the WAL
            return
        self._journal_seq = self.db.execute("INSERT INTO journal (body) VALUES (?)", (body,)).lastrowid or 0

    def _on_begin(self) -> None:
        """Forget what this connection knows without reading if another one committed meanwhile."""
        self._own.check(self.db)

    def _commit(self, batch: CommitBatch) -> CommitResult:
        if not self.began_ahead:  # else checked when it began, and nobody could commit since
            self._on_begin()
        self._check_epoch(batch)
        result = CommitResult()
        current = self._current_seqs([w.run_id for w in batch.runs])
        ok: list[RunWrite] = []
        for write in batch.runs:
            # A run that does not exist yet can only be written by its first commit (``new``).
            found = current.get(write.run_id)
            if (found if found is not None else 0) != write.expected_seq or (
                found is None and write.new is None
            ):
                result.conflicts.add(write.run_id)
            else:
                ok.append(write)
        now = self.now_ms()
        self._write_runs(ok, now)
        self._many(_CONSUME_INBOX, [(seq,) for seq in batch.consumed])
        for write in ok:
            if write.state_ops:
                self._apply_staged(write, result)
            if write.drop_namespace is not None:
                self._drop_namespaces([write.drop_namespace])
            if write.output_template is not None:
                result.outputs[write.run_id] = self._render_run_output(write)
        served, rest = self._enqueue(ok, batch.claims, now)
        # One worker may claim twice in a batch: keep both grants, or the first would be leased to nobody.
        for request, leases in served:
            result.leases.setdefault(request.worker_id, []).extend(leases)
        if rest:
            self._stop_recording()
        for request in rest:
            result.leases.setdefault(request.worker_id, []).extend(self._claim(request, now))
        self._finish_recording()
        return result

    def _enqueue(
        self, writes: list[RunWrite], claims: Sequence[ClaimRequest], now: int
    ) -> tuple[list[tuple[ClaimRequest, list[Lease]]], list[ClaimRequest]]:
        """Insert the batch's new tasks, leasing some at once to the batch's own claims.

        A claim whose targets have no ready task in the store can only take
        tasks of its own batch. Those are inserted already leased to it, their
        inputs resolved from the batch's own outputs, and the claim query, its
        output reads, its update and a page of the ready index are skipped.
        That is the hand-off's path: a report and its worker's next claim
        commit together, and the claim takes the task the report made ready.

        Returns the claims served so, with their leases, and the claims left
        for the usual claim query.
        """
        tasks = [task for write in writes for task in write.enqueue]
        direct, served = self._direct_leases(tasks, claims)
        leases: dict[int, list[Lease]] = {i: [] for i in served}
        resolver = InputResolver(self).primed(writes) if direct else None
        rows: list[tuple[Any, ...]] = []
        for task in tasks:
            labels = orjson.dumps(task.labels) if task.labels else None
            template, item = orjson.dumps(task.input_template), orjson.dumps(task.item)
            schema = orjson.dumps(task.input_schema) if task.input_schema else None
            row = (
                task.task_id, task.run_id, task.step, task.index, task.target, labels, task.priority,
                task.priority * AGING_MS - now, task.try_no, task.timeout_ms, template, item, schema, now,
            )  # fmt: skip
            i = direct.get(task.task_id)
            if i is None:
                rows.append((*row, "ready", task.lease_floor, None, None, None))
                self._own.none_ready = False
                continue
            assert resolver is not None
            request, lease_no = claims[i], task.lease_floor + 1
            deadline = now + task.timeout_ms if task.timeout_ms else None
            until = now + request.lease_ms if deadline is None else min(now + request.lease_ms, deadline)
            value, error = resolver.resolve(task.run_id, template, item, task.index)
            leases[i].append(
                Lease(
                    task.task_id, task.run_id, task.step, task.index, task.target, lease_no, task.try_no,
                    value, task.input_schema, task.timeout_ms, until, error,
                )
            )  # fmt: skip
            rows.append((*row, "leased", lease_no, request.worker_id, until, deadline))
        self._many(
            "INSERT OR REPLACE INTO tasks (task_id, run_id, step, idx, target, labels, priority, prio_key, try_no,"
            " timeout_ms, input_template, item, input_schema, ready_ms, status, lease_no, worker_id,"
            " lease_until_ms, try_deadline_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return [(claims[i], leases[i]) for i in served], [c for i, c in enumerate(claims) if i not in leases]

    def _direct_leases(
        self, tasks: list[EnqueueTask], claims: Sequence[ClaimRequest]
    ) -> tuple[dict[str, int], list[int]]:
        """Which new tasks go straight to which claim (by index), and the claims that need no query.

        Claims are served in their order, higher priority tasks first, then
        in the order they were enqueued.
        """
        direct: dict[str, int] = {}
        served: list[int] = []
        pool = sorted(tasks, key=lambda task: -task.priority)
        any_ready: bool | None = None  # whether the store has any ready task at all, read once if needed
        for i, request in enumerate(claims):
            if request.limit <= 0 or not any(task.target in request.targets for task in pool):
                continue
            if any_ready is None:
                any_ready = self._any_ready()
            if any_ready and self._ready_exists(sorted(request.targets)):
                continue
            served.append(i)
            room, kept = request.limit, []
            for task in pool:
                if room and task.target in request.targets and offers(request.labels, task.labels):
                    direct[task.task_id] = i
                    room -= 1
                else:
                    kept.append(task)
            pool = kept
        return direct, served

    def _any_ready(self) -> bool:
        """Whether any task at all is ready in the store, before this batch's are inserted.

        One step into the ready index, under half the cost of one step per target of
        :meth:`_ready_exists`; on a quiet store, where none is, it answers for every claim of the batch.
        Once it found none, it is not asked again until a write of this connection makes a task ready
        or another connection commits (:class:`~covey.store.sqlite.own_writes.OwnWrites`).
        """
        if self._own.none_ready:
            return False
        found = self.db.execute("SELECT 1 FROM tasks WHERE status = 'ready' LIMIT 1").fetchone() is not None
        self._own.none_ready = not found
        return found

    def _ready_exists(self, targets: list[str]) -> bool:
        """Whether any task of ``targets`` is ready in the store (before this batch's are inserted)."""
        sql = f"SELECT 1 FROM tasks WHERE status = 'ready' AND target IN ({qmarks(len(targets))}) LIMIT 1"
        return self.db.execute(sql, targets).fetchone() is not None

    def _current_seqs(self, run_ids: Sequence[str]) -> dict[str, int]:
        """Each existing run's sequence number: remembered from this connection's commits, else read."""
        found: dict[str, int] = {}
        unknown = []
        for run_id in run_ids:
            seq = self._own.seq(run_id)
            if seq is None:
                unknown.append(run_id)
            else:
                found[run_id] = seq
        for part in chunks(unknown):
            sql = f"SELECT run_id, seq FROM runs WHERE run_id IN ({qmarks(len(part))})"
            found.update(self.db.execute(sql, part).fetchall())
        return found

    def _write_runs(self, writes: list[RunWrite], now: int) -> None:
        """Write the runs' rows and their children's, one statement per kind of row for the whole batch.

        One pass over the batch gathers every statement's rows; a hand-off's
        batch fills four of the eleven kinds, and the others cost nothing.
        The statements run in a fixed order (a recorded commit replays them so).
        """
        specs: list[tuple[Any, ...]] = []
        created: list[tuple[Any, ...]] = []
        moved: list[tuple[Any, ...]] = []
        finished: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        dropped: list[tuple[str]] = []
        cancelled: list[tuple[str]] = []
        timers: list[tuple[Any, ...]] = []
        outputs: list[tuple[Any, ...]] = []
        consumed: list[tuple[int]] = []
        seen: list[tuple[str, str]] = []
        for w in writes:
            run_id, new = w.run_id, w.new
            if new is not None:
                specs.append((new.spec_hash, new.spec))
                created.append((run_id, new.workflow, new.spec_hash, new.input, new.parent, now, now))
            if w.status is None and w.output is None and w.error is None and w.finished_ms is None:
                moved.append((w.new_seq, now, run_id))
            else:
                finished.append((w.new_seq, now, w.status, w.output, w.error, w.finished_ms, run_id))
            events += [(run_id, *event) for event in w.events]
            if w.drop:
                dropped += [(task_id,) for task_id in w.drop]
            if w.cancel_timers:
                cancelled += [(timer_id,) for timer_id in w.cancel_timers]
            if w.set_timers:
                timers += [
                    (t.timer_id, t.run_id, t.due_ms, t.kind, t.task_id, t.lease_no) for t in w.set_timers
                ]
            if w.outputs:
                outputs += [(run_id, step, index, body) for step, index, body in w.outputs]
            if w.consumed:
                consumed += [(seq,) for seq in w.consumed]
            if w.seen:
                seen += [(seen_id, run_id) for seen_id in w.seen]
        for sql, rows in (
            (_INSERT_SPECS, specs),
            (_INSERT_RUNS, created),
            (_MOVE_RUNS, moved),
            (_FINISH_RUNS, finished),
            (_INSERT_EVENTS, events),
            (_DROP_TASKS, dropped),
            (_CANCEL_TIMERS, cancelled),
            (_SET_TIMERS, timers),
            (_INSERT_OUTPUTS, outputs),
            (_CONSUME_INBOX, consumed),
            (_INSERT_SEEN, seen),
        ):
            if rows:
                self._many(sql, rows)

    def _render_run_output(self, write: RunWrite) -> Any:
        assert write.output_template is not None
        template = template_of(write.output_template)
        outputs = self._outputs(write.run_id, sorted(template.steps))
        run_input = from_json(
            self.db.execute("SELECT input FROM runs WHERE run_id = ?", (write.run_id,)).fetchone()[0]
        )
        try:
            output = render_input(template, run_input=run_input, outputs=outputs, item=None, index=-1)
        except CoveyError as exc:
            output = {"error": str(exc)}
        self.db.execute("UPDATE runs SET output = ? WHERE run_id = ?", (orjson.dumps(output), write.run_id))
        return output
