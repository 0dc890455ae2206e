"""The SQLite store's synchronous core: one connection, used from one thread.

SQLite serializes writers, so covey gives each database file exactly one
writing process (the runner, which holds a lock file) and in it one writing
thread. Every write is ``BEGIN IMMEDIATE`` ... ``COMMIT``; durability is WAL
with ``synchronous=FULL`` (an fsync per commit), which group commit amortizes
over every run in the batch.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from covey.codec import MAX_PAYLOAD_BYTES
from covey.engine.events import TimerFired, event_to_json
from covey.errors import BackendError, Conflict, CoveyError, InputError, StaleLease, VersionConflict
from covey.state.model import StateChange, StateEntry, StateOp, run_namespace
from covey.state.reducers import apply_reducer
from covey.store.base import (
    AGING_MS,
    ClaimRequest,
    CommitBatch,
    CommitResult,
    InboxRow,
    Lease,
    RunInfo,
    RunWrite,
    TaskInfo,
    WorkerInfo,
)
from covey.store.inputs import reads_state, render_input, template_of
from covey.store.sqlite.schema import MIGRATIONS

__all__ = ["SQLiteCore"]

_CHUNK = 400
#: Keys of a run's namespace an input mapping can see (``${state...}``).
MAX_STATE_KEYS = 10_000


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _qmarks(count: int) -> str:
    return ",".join("?" * count)


def _json(body: bytes | None) -> Any:
    return None if body is None else orjson.loads(body)


class SQLiteCore:
    """All SQL of the embedded store; not thread-safe, callers keep it on one thread."""

    def __init__(self, path: str | Path, *, durable: bool = True, readonly: bool = False) -> None:
        self.path = str(path)
        self.readonly = readonly
        try:
            if readonly:
                uri = f"file:{Path(self.path).resolve()}?mode=ro"
                self.db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open SQLite database {self.path}: {exc}") from None
        try:
            self.db.execute("PRAGMA busy_timeout = 5000")
            if not readonly:
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                self._migrate()
            else:
                self._check_version()
        except BaseException:
            self.db.close()  # a refused or unreadable file leaves no connection behind
            raise

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    @staticmethod
    def now_ms() -> int:
        """The store's clock: this machine's wall clock (one machine in embedded mode)."""
        return time.time_ns() // 1_000_000

    # -- schema ------------------------------------------------------------------------

    def _version(self) -> int:
        exists = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
        if not exists:
            return 0
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _check_version(self) -> int:
        version = self._version()
        if version > len(MIGRATIONS):
            raise CoveyError(
                f"{self.path} has schema version {version}, newer than this covey knows "
                f"({len(MIGRATIONS)}); upgrade covey to open it"
            )
        return version

    def _migrate(self) -> None:
        version = self._check_version()
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in script.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(number),))
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', '0')")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    # -- transactions ------------------------------------------------------------------

    def _write(self, fn: Any, *args: Any) -> Any:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(*args)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return result

    def begin_epoch(self) -> int:
        """Bump the epoch and void every lease granted under an earlier one."""
        return int(self._write(self._begin_epoch))

    def _begin_epoch(self) -> int:
        epoch = int(self.db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]) + 1
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (str(epoch),))
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

    def commit(self, batch: CommitBatch) -> CommitResult:
        """Write a batch atomically, then grant its claims."""
        return self._write(self._commit, batch)  # type: ignore[no-any-return]

    def _commit(self, batch: CommitBatch) -> CommitResult:
        epoch = int(self.db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])
        if epoch != batch.epoch:
            raise Conflict(f"epoch {batch.epoch} is stale (store is at {epoch}); another runner took over")
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
        self._write_children(ok, now)
        if batch.consumed:
            self.db.executemany("DELETE FROM inbox WHERE seq = ?", [(seq,) for seq in batch.consumed])
        for write in ok:
            if write.state_ops:
                self._apply_staged(write, result)
            if write.drop_namespace is not None:
                for table in ("state", "state_changes", "state_seq"):
                    self.db.execute(f"DELETE FROM {table} WHERE namespace = ?", (write.drop_namespace,))
            if write.output_template is not None:
                result.outputs[write.run_id] = self._render_run_output(write)
        for request in batch.claims:
            # One worker may claim twice in a batch: keep both grants, or the first would be leased to nobody.
            result.leases.setdefault(request.worker_id, []).extend(self._claim(request, now))
        return result

    def _many(self, sql: str, rows: list[Any]) -> None:
        """executemany, skipped when there is nothing to write (most batches touch few tables)."""
        if rows:
            self.db.executemany(sql, rows)

    def _current_seqs(self, run_ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for part in _chunks(run_ids):
            sql = f"SELECT run_id, seq FROM runs WHERE run_id IN ({_qmarks(len(part))})"
            found.update(self.db.execute(sql, part).fetchall())
        return found

    def _write_runs(self, writes: list[RunWrite], now: int) -> None:
        new = [w for w in writes if w.new is not None]
        self._many(
            "INSERT OR IGNORE INTO specs VALUES (?, ?)", [(w.new.spec_hash, w.new.spec) for w in new if w.new]
        )
        self._many(
            "INSERT INTO runs (run_id, workflow, spec_hash, status, seq, input, parent, created_ms, updated_ms)"
            " VALUES (?, ?, ?, 'running', 0, ?, ?, ?, ?)",
            [
                (w.run_id, w.new.workflow, w.new.spec_hash, w.new.input, w.new.parent, now, now)
                for w in new
                if w.new
            ],
        )
        self._many(
            "UPDATE runs SET seq = ?, updated_ms = ?, status = coalesce(?, status), output = coalesce(?, output),"
            " error = coalesce(?, error), finished_ms = coalesce(?, finished_ms) WHERE run_id = ?",
            [(w.new_seq, now, w.status, w.output, w.error, w.finished_ms, w.run_id) for w in writes],
        )
        self._many(
            "INSERT INTO events (run_id, seq, type, at_ms, body) VALUES (?, ?, ?, ?, ?)",
            [(w.run_id, *event) for w in writes for event in w.events],
        )

    def _write_children(self, writes: list[RunWrite], now: int) -> None:
        self._many("DELETE FROM tasks WHERE task_id = ?", [(t,) for w in writes for t in w.drop])
        self._many(
            "INSERT OR REPLACE INTO tasks (task_id, run_id, step, idx, target, labels, priority, prio_key, status,"
            " try_no, lease_no, timeout_ms, input_template, item, input_schema, ready_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ready', ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    t.task_id, t.run_id, t.step, t.index, t.target,
                    orjson.dumps(t.labels) if t.labels else None,
                    t.priority, t.priority * AGING_MS - now, t.try_no, t.lease_floor, t.timeout_ms,
                    orjson.dumps(t.input_template), orjson.dumps(t.item),
                    orjson.dumps(t.input_schema) if t.input_schema else None, now,
                )
                for w in writes
                for t in w.enqueue
            ],
        )  # fmt: skip
        self._many("DELETE FROM timers WHERE timer_id = ?", [(t,) for w in writes for t in w.cancel_timers])
        self._many(
            "INSERT OR REPLACE INTO timers VALUES (?, ?, ?, ?, ?, ?)",
            [
                (t.timer_id, t.run_id, t.due_ms, t.kind, t.task_id, t.lease_no)
                for w in writes
                for t in w.set_timers
            ],
        )
        self._many(
            "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?)",
            [(w.run_id, step, idx, body) for w in writes for step, idx, body in w.outputs],
        )
        self._many("DELETE FROM inbox WHERE seq = ?", [(seq,) for w in writes for seq in w.consumed])
        self._many(
            "INSERT OR IGNORE INTO seen VALUES (?, ?)", [(i, w.run_id) for w in writes for i in w.seen]
        )

    def _render_run_output(self, write: RunWrite) -> Any:
        assert write.output_template is not None
        template = template_of(write.output_template)
        outputs = self._outputs(write.run_id, sorted(template.steps))
        run_input = _json(
            self.db.execute("SELECT input FROM runs WHERE run_id = ?", (write.run_id,)).fetchone()[0]
        )
        try:
            output = render_input(template, run_input=run_input, outputs=outputs, item=None, index=-1)
        except CoveyError as exc:
            output = {"error": str(exc)}
        self.db.execute("UPDATE runs SET output = ? WHERE run_id = ?", (orjson.dumps(output), write.run_id))
        return output

    # -- claims and leases -------------------------------------------------------------

    def claim(self, request: ClaimRequest) -> list[Lease]:
        """Lease up to ``request.limit`` ready tasks, inputs resolved."""
        return self._write(self._claim, request, self.now_ms())  # type: ignore[no-any-return]

    def _claim(self, request: ClaimRequest, now: int) -> list[Lease]:
        targets = sorted(request.targets)
        if not targets or request.limit <= 0:
            return []
        chosen = self._claimable(targets, request.labels, request.limit)
        updates, leases = [], []
        resolver = _InputResolver(self)
        for (
            task_id,
            run_id,
            step,
            idx,
            target,
            _,
            lease_no,
            try_no,
            timeout_ms,
            template,
            item,
            schema,
        ) in chosen:
            until = now + request.lease_ms
            deadline = now + timeout_ms if timeout_ms else None
            if deadline is not None:
                until = min(until, deadline)
            updates.append((lease_no + 1, request.worker_id, until, deadline, task_id))
            value, error = resolver.resolve(run_id, template, item, idx)
            leases.append(
                Lease(
                    task_id,
                    run_id,
                    step,
                    idx,
                    target,
                    lease_no + 1,
                    try_no,
                    value,
                    _json(schema),
                    timeout_ms,
                    until,
                    error,
                )
            )
        self.db.executemany(
            "UPDATE tasks SET status = 'leased', lease_no = ?, worker_id = ?, lease_until_ms = ?,"
            " try_deadline_ms = ? WHERE task_id = ?",
            updates,
        )
        return leases

    _CLAIM_SQL = (
        "SELECT task_id, run_id, step, idx, target, labels, lease_no, try_no, timeout_ms, input_template,"
        " item, input_schema, prio_key, rowid FROM tasks WHERE status = 'ready' AND target IN ({targets}) {after}"
        " ORDER BY prio_key DESC, rowid DESC LIMIT ?"
    )

    def _claimable(self, targets: list[str], labels: Any, limit: int) -> list[Any]:
        """The first ``limit`` ready rows, in claim order, whose required labels are all offered.

        Rows are read in windows (keyset-paged on prio_key, rowid), so a LIMIT keeps the usual
        claim cheap, yet tasks needing labels this worker lacks cannot hide the ones it can run.
        """
        first = self._CLAIM_SQL.format(targets=_qmarks(len(targets)), after="")
        later = self._CLAIM_SQL.format(
            targets=_qmarks(len(targets)), after="AND (prio_key < ? OR (prio_key = ? AND rowid < ?))"
        )
        chosen: list[Any] = []
        window = limit  # most tasks need no labels; widen only when some were filtered out
        rows = self.db.execute(first, (*targets, window)).fetchall()
        while True:
            for row in rows:
                if self._labels_match(row[5], labels):
                    chosen.append(row[:12])
                    if len(chosen) == limit:
                        return chosen
            if len(rows) < window:
                return chosen
            key, rowid = rows[-1][12], rows[-1][13]
            window *= 2
            rows = self.db.execute(later, (*targets, key, key, rowid, window)).fetchall()

    @staticmethod
    def _labels_match(required: bytes | None, offered: Any) -> bool:
        if required is None:
            return True
        wanted = orjson.loads(required)
        return all(offered.get(key) == value for key, value in wanted.items())

    def heartbeat(self, worker_id: str, leases: Sequence[tuple[str, int]], lease_ms: int) -> list[str]:
        """Extend the worker's leases; return the task ids it no longer holds."""
        return self._write(self._heartbeat, worker_id, leases, lease_ms)  # type: ignore[no-any-return]

    def _heartbeat(self, worker_id: str, leases: Sequence[tuple[str, int]], lease_ms: int) -> list[str]:
        now = self.now_ms()
        until = now + lease_ms
        lost = []
        for task_id, lease_no in leases:
            extended = self.db.execute(
                "UPDATE tasks SET lease_until_ms = CASE WHEN try_deadline_ms IS NULL THEN ?"
                " ELSE min(?, try_deadline_ms) END"
                " WHERE task_id = ? AND lease_no = ? AND worker_id = ? AND status = 'leased'",
                (until, until, task_id, lease_no, worker_id),
            ).rowcount
            if not extended:
                lost.append(task_id)
        self.db.execute("UPDATE workers SET heartbeat_ms = ? WHERE worker_id = ?", (now, worker_id))
        return lost

    def release(self, worker_id: str, leases: Sequence[tuple[str, int]]) -> None:
        """Give leases back: the tasks become ready again with their lease numbers kept."""
        self._write(
            lambda: self.db.executemany(
                "UPDATE tasks SET status = 'ready', worker_id = NULL, lease_until_ms = NULL, try_deadline_ms = NULL"
                " WHERE task_id = ? AND lease_no = ? AND worker_id = ? AND status = 'leased'",
                [(task_id, lease_no, worker_id) for task_id, lease_no in leases],
            )
        )

    # -- inbox and timers --------------------------------------------------------------

    def append_inbox(self, rows: Sequence[InboxRow]) -> None:
        """Append rows; ids already in the inbox or already committed are ignored."""
        self._write(self._append_inbox, rows)

    def _append_inbox(self, rows: Sequence[InboxRow]) -> None:
        seen = self._seen([row.id for row in rows])
        self.db.executemany(
            "INSERT OR IGNORE INTO inbox (id, run_id, body, output) VALUES (?, ?, ?, ?)",
            [(r.id, r.run_id, orjson.dumps(r.event), r.output) for r in rows if r.id not in seen],
        )

    def _append_timer_rows(self, rows: Iterable[tuple[str, str, TimerFired]]) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO inbox (id, run_id, body) VALUES (?, ?, ?)",
            [(row_id, run_id, orjson.dumps(event_to_json(event))) for row_id, run_id, event in rows],
        )

    def read_inbox(self, after_seq: int, limit: int) -> list[InboxRow]:
        """Inbox rows after ``after_seq``, oldest first."""
        rows = self.db.execute(
            "SELECT seq, id, run_id, body, output FROM inbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [
            InboxRow(row_id, run_id, orjson.loads(body), seq, output)
            for seq, row_id, run_id, body, output in rows
        ]

    def fire_due(self, limit: int) -> int:
        """Move due timers and ended leases into the inbox."""
        return self._write(self._fire_due, limit)  # type: ignore[no-any-return]

    def _fire_due(self, limit: int) -> int:
        now = self.now_ms()
        timers = self.db.execute(
            "SELECT timer_id, run_id, kind, task_id, lease_no FROM timers WHERE due_ms <= ? ORDER BY due_ms LIMIT ?",
            (now, limit),
        ).fetchall()
        self.db.executemany("DELETE FROM timers WHERE timer_id = ?", [(t[0],) for t in timers])
        self._append_timer_rows(
            (f"timer:{timer_id}", run_id, TimerFired(timer_id, kind, now, task_id, lease_no))
            for timer_id, run_id, kind, task_id, lease_no in timers
        )
        leases = self.db.execute(
            "SELECT task_id, run_id, lease_no, lease_until_ms, try_deadline_ms FROM tasks"
            " WHERE status = 'leased' AND lease_until_ms <= ? LIMIT ?",
            (now, limit),
        ).fetchall()
        self.db.executemany(
            "UPDATE tasks SET status = 'expired' WHERE task_id = ?", [(row[0],) for row in leases]
        )
        self._append_timer_rows(
            (
                f"lease:{task_id}:{lease_no}",
                run_id,
                TimerFired(
                    f"lease:{task_id}:{lease_no}",
                    "try_timeout" if deadline is not None and until >= deadline else "lease_expired",
                    now,
                    task_id,
                    lease_no,
                ),
            )
            for task_id, run_id, lease_no, until, deadline in leases
        )
        return len(timers) + len(leases)

    def next_due_ms(self) -> int | None:
        """When the earliest timer or lease comes due."""
        row = self.db.execute(
            "SELECT min(t) FROM (SELECT min(due_ms) AS t FROM timers"
            " UNION ALL SELECT min(lease_until_ms) FROM tasks WHERE status = 'leased')"
        ).fetchone()
        return None if row[0] is None else int(row[0])

    # -- reads -------------------------------------------------------------------------

    def _seen(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for part in _chunks(list(ids)):
            sql = f"SELECT id FROM seen WHERE id IN ({_qmarks(len(part))})"
            found.update(row[0] for row in self.db.execute(sql, part))
        return found

    def seen(self, ids: Sequence[str]) -> set[str]:
        """Which client-chosen ids were already committed."""
        return self._seen(ids)

    def load_history(self, run_id: str) -> list[dict[str, Any]]:
        """A run's events as JSON objects, in order, the pinned spec filled in."""
        return self.load_histories([run_id]).get(run_id, [])

    def load_histories(self, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Histories of several runs at once (absent runs are left out), specs filled in."""
        result: dict[str, list[dict[str, Any]]] = {}
        # Deduplicated, or an id repeated across two chunks would have its events read twice.
        for part in _chunks(list(dict.fromkeys(run_ids))):
            sql = (
                f"SELECT run_id, body FROM events WHERE run_id IN ({_qmarks(len(part))}) ORDER BY run_id, seq"
            )
            for run_id, body in self.db.execute(sql, part):
                result.setdefault(run_id, []).append(orjson.loads(body))
        for history in result.values():
            first = history[0]
            ref = first.get("workflow", {}).get("$spec") if first.get("type") == "RunSubmitted" else None
            if ref is not None:
                first["workflow"] = self.load_spec(ref)
        return result

    def load_spec(self, spec_hash: str) -> dict[str, Any] | None:
        """A pinned workflow spec by hash."""
        row = self.db.execute("SELECT body FROM specs WHERE hash = ?", (spec_hash,)).fetchone()
        return None if row is None else dict(orjson.loads(row[0]))

    _RUN_COLUMNS = "run_id, workflow, status, seq, created_ms, updated_ms, finished_ms, input, output, error"

    @staticmethod
    def _run_info(row: Any) -> RunInfo:
        run_id, workflow, status, seq, created_ms, updated_ms, finished_ms, data, output, error = row
        return RunInfo(
            run_id,
            workflow,
            status,
            seq,
            created_ms,
            updated_ms,
            finished_ms,
            _json(data),
            _json(output),
            _json(error),
        )

    def get_run(self, run_id: str) -> RunInfo | None:
        """One run."""
        row = self.db.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else self._run_info(row)

    def list_runs(self, status: str | None, limit: int) -> list[RunInfo]:
        """Runs, newest first."""
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        sql = f"SELECT {self._RUN_COLUMNS} FROM runs {where} ORDER BY created_ms DESC, run_id LIMIT ?"
        return [self._run_info(row) for row in self.db.execute(sql, (*args, limit))]

    def list_tasks(self, run_id: str) -> list[TaskInfo]:
        """A run's unfinished task rows."""
        rows = self.db.execute(
            "SELECT task_id, step, idx, status, try_no, lease_no, worker_id, lease_until_ms FROM tasks"
            " WHERE task_id > ? AND task_id < ? ORDER BY step, idx",
            (f"{run_id}/", f"{run_id}0"),  # task ids are "run/step[/i]"; "0" sorts right after "/"
        )
        return [TaskInfo(*row) for row in rows]

    def _outputs(self, run_id: str, steps: Sequence[str]) -> dict[str, Any]:
        result: dict[str, Any] = dict.fromkeys(steps)
        if not steps:
            return result
        rows = self.db.execute(
            f"SELECT step, idx, body FROM outputs WHERE run_id = ? AND step IN ({_qmarks(len(steps))}) ORDER BY step, idx",
            (run_id, *steps),
        )
        for step, idx, body in rows:
            if idx < 0:
                result[step] = orjson.loads(body)
            else:
                if not isinstance(result[step], list):
                    result[step] = []
                result[step].append(orjson.loads(body))
        return result

    def get_outputs(self, run_id: str, steps: Sequence[str]) -> dict[str, Any]:
        """Outputs of steps: a value, an ordered list for a map step, None if none."""
        return self._outputs(run_id, list(steps))

    # -- shared state ------------------------------------------------------------------

    def state_get(self, namespace: str, key: str) -> StateEntry | None:
        """A key's value and version."""
        row = self.db.execute(
            "SELECT value, version FROM state WHERE namespace = ? AND key = ? AND value IS NOT NULL",
            (namespace, key),
        ).fetchone()
        return None if row is None else StateEntry(namespace, key, orjson.loads(row[0]), row[1])

    def state_list(self, namespace: str, prefix: str, after: str, limit: int) -> list[StateEntry]:
        """Keys starting with ``prefix``, after ``after``, in key order."""
        rows = self.db.execute(
            "SELECT key, value, version FROM state WHERE namespace = ? AND key >= ? AND key > ?"
            " AND substr(key, 1, ?) = ? AND value IS NOT NULL ORDER BY key LIMIT ?",
            (namespace, prefix, after, len(prefix), prefix, max(limit, 0)),  # SQLite reads -1 as "no limit"
        )
        return [StateEntry(namespace, key, orjson.loads(value), version) for key, value, version in rows]

    def state_apply(
        self, ops: Sequence[StateOp], fence: tuple[str, int] | None, lock: tuple[str, int] | None = None
    ) -> list[StateEntry]:
        """Apply writes atomically (see the Store protocol)."""
        return self._write(self._state_apply, ops, fence, lock)  # type: ignore[no-any-return]

    def _state_apply(
        self, ops: Sequence[StateOp], fence: tuple[str, int] | None, lock: tuple[str, int] | None = None
    ) -> list[StateEntry]:
        if lock is not None:
            self._check_lock(lock)
        if fence is not None:
            row = self.db.execute(
                "SELECT lease_no, status FROM tasks WHERE task_id = ?", (fence[0],)
            ).fetchone()
            if row is None or row[0] != fence[1] or row[1] != "leased":
                raise StaleLease(
                    f"lease {fence[1]} of {fence[0]} is no longer current; the write was refused"
                )
        return [self._state_write(op) for op in ops]

    def _state_write(self, op: StateOp) -> StateEntry:
        """One write. A deleted key keeps a tombstone row, so its next version continues the count:
        versions of a key only ever grow, and a compare-and-set cannot mistake a new value for
        one it read before the delete."""
        row = self.db.execute(
            "SELECT value, version FROM state WHERE namespace = ? AND key = ?", (op.namespace, op.key)
        ).fetchone()
        exists = row is not None and row[0] is not None
        last = row[1] if row is not None else 0
        version = last if exists else 0
        if op.if_version is not None and op.if_version != version:
            raise VersionConflict(op.namespace, op.key, op.if_version, version)
        if op.op == "delete":
            if exists:
                self.db.execute(
                    "UPDATE state SET value = NULL, version = ? WHERE namespace = ? AND key = ?",
                    (last + 1, op.namespace, op.key),
                )
                self._state_changed(op.namespace, op.key, last + 1, None)
            return StateEntry(op.namespace, op.key, None, last + 1 if exists else 0)
        if op.op == "update":
            if op.reducer is None:
                raise InputError(f"update of {op.key!r} names no reducer", field="reducer")
            value = apply_reducer(op.reducer, orjson.loads(row[0]) if exists else None, op.value, key=op.key)
        elif op.op == "put":
            value = op.value
        else:
            raise InputError(f"unknown state operation {op.op!r}", field="op")
        try:
            body = orjson.dumps(value)
        except TypeError as exc:  # an add past 64 bits, a value no JSON can hold: refused, never a crash
            raise InputError(
                f"{op.op} on {op.key!r}: the new value cannot be stored: {exc}", field=op.key
            ) from None
        if len(body) > MAX_PAYLOAD_BYTES:
            raise InputError(
                f"{op.op} on {op.key!r}: the new value is {len(body)} bytes, over the limit of {MAX_PAYLOAD_BYTES}",
                field=op.key,
            )
        self.db.execute(
            "INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)", (op.namespace, op.key, body, last + 1)
        )
        self._state_changed(op.namespace, op.key, last + 1, body)
        return StateEntry(op.namespace, op.key, value, last + 1)

    def _state_changed(self, namespace: str, key: str, version: int, body: bytes | None) -> None:
        """Append to the namespace's change feed, numbered in commit order (the single writer's order)."""
        row = self.db.execute(
            "INSERT INTO state_seq VALUES (?, 1) ON CONFLICT (namespace) DO UPDATE SET seq = seq + 1 RETURNING seq",
            (namespace,),
        ).fetchone()
        self.db.execute(
            "INSERT INTO state_changes VALUES (?, ?, ?, ?, ?)", (namespace, row[0], key, version, body)
        )

    def state_changes(self, namespace: str, after_seq: int, limit: int) -> list[StateChange]:
        """Changes of a namespace after a cursor, in commit order."""
        rows = self.db.execute(
            "SELECT seq, key, version, value FROM state_changes WHERE namespace = ? AND seq > ? ORDER BY seq LIMIT ?",
            (namespace, after_seq, limit),
        )
        return [
            StateChange(
                namespace, seq, key, version, None if body is None else orjson.loads(body), body is None
            )
            for seq, key, version, body in rows
        ]

    def _apply_staged(self, write: RunWrite, result: CommitResult) -> None:
        """A commit's staged writes, each in a savepoint: one that does not fit is skipped, not the batch."""
        for op in write.state_ops:
            self.db.execute("SAVEPOINT staged")
            try:
                self._state_write(op)
            except CoveyError as exc:
                self.db.execute("ROLLBACK TO staged")
                result.state_errors.setdefault(write.run_id, []).append(str(exc))
            self.db.execute("RELEASE staged")

    # -- locks and semaphores ------------------------------------------------------------

    def lock_acquire(self, name: str, holder: str, limit: int, ttl_ms: int) -> int | None:
        """Take one of ``limit`` permits of ``name`` (1: a lock); its fencing token, or None if all are held."""
        return self._write(self._lock_acquire, name, holder, limit, ttl_ms)  # type: ignore[no-any-return]

    def _lock_acquire(self, name: str, holder: str, limit: int, ttl_ms: int) -> int | None:
        now = self.now_ms()
        held = {
            slot
            for (slot,) in self.db.execute(
                "SELECT slot FROM locks WHERE name = ? AND holder IS NOT NULL AND expires_ms > ? AND slot < ?",
                (name, now, limit),
            )
        }
        free = next((slot for slot in range(limit) if slot not in held), None)
        if free is None:
            return None
        token = self.db.execute(
            "INSERT INTO lock_tokens VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET token = token + 1 RETURNING token",
            (name,),
        ).fetchone()[0]
        self.db.execute(
            "INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?, ?)", (name, free, holder, token, now + ttl_ms)
        )
        return int(token)

    def lock_release(self, name: str, token: int) -> bool:
        """Give a permit back; False if that token no longer holds it."""
        return bool(
            self._write(
                lambda: (
                    self.db.execute(
                        "UPDATE locks SET holder = NULL WHERE name = ? AND token = ? AND holder IS NOT NULL",
                        (name, token),
                    ).rowcount
                )
            )
        )

    def lock_renew(self, name: str, token: int, ttl_ms: int) -> bool:
        """Extend a held permit; False if it expired or was taken over."""
        now = self.now_ms()
        return bool(
            self._write(
                lambda: (
                    self.db.execute(
                        "UPDATE locks SET expires_ms = ? WHERE name = ? AND token = ? AND holder IS NOT NULL"
                        " AND expires_ms > ?",
                        (now + ttl_ms, name, token, now),
                    ).rowcount
                )
            )
        )

    def _check_lock(self, lock: tuple[str, int]) -> None:
        row = self.db.execute(
            "SELECT 1 FROM locks WHERE name = ? AND token = ? AND holder IS NOT NULL AND expires_ms > ?",
            (lock[0], lock[1], self.now_ms()),
        ).fetchone()
        if row is None:
            raise StaleLease(
                f"token {lock[1]} of lock {lock[0]!r} is no longer current; the write was refused"
            )

    # -- registry ----------------------------------------------------------------------

    def register_worker(self, info: WorkerInfo) -> None:
        """Add or refresh a worker."""
        body = orjson.dumps(
            {"targets": sorted(info.targets), "labels": dict(info.labels), "slots": info.slots}
        )
        self._write(
            lambda: self.db.execute(
                "INSERT OR REPLACE INTO workers VALUES (?, ?, ?, ?)",
                (info.worker_id, body, info.heartbeat_ms, info.started_ms),
            )
        )

    def unregister_worker(self, worker_id: str) -> None:
        """Remove a worker."""
        self._write(lambda: self.db.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,)))

    def list_workers(self) -> list[WorkerInfo]:
        """Registered workers."""
        result = []
        for worker_id, body, heartbeat_ms, started_ms in self.db.execute(
            "SELECT * FROM workers ORDER BY worker_id"
        ):
            info = orjson.loads(body)
            result.append(
                WorkerInfo(
                    worker_id,
                    frozenset(info["targets"]),
                    info["labels"],
                    info["slots"],
                    heartbeat_ms,
                    started_ms,
                )
            )
        return result


class _InputResolver:
    """Resolves the inputs of one claim batch, reading each run input and output once."""

    def __init__(self, core: SQLiteCore) -> None:
        self.core = core
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[tuple[str, str], Any] = {}
        self.states: dict[str, dict[str, Any]] = {}

    def _state(self, run_id: str) -> dict[str, Any]:
        """The run's shared-state namespace as a plain object, read once per claim batch."""
        if run_id not in self.states:
            rows = self.core.db.execute(
                "SELECT key, value FROM state WHERE namespace = ? LIMIT ?",
                (run_namespace(run_id), MAX_STATE_KEYS),
            )
            self.states[run_id] = {key: orjson.loads(value) for key, value in rows}
        return self.states[run_id]

    def resolve(
        self, run_id: str, template_text: bytes, item_text: bytes | None, index: int
    ) -> tuple[Any, str | None]:
        template = template_of(template_text)
        item = _json(item_text)
        if template.is_literal:
            return (template.source if template.source is not None else (item if index >= 0 else {})), None
        reads_input = any("input" in expr.roots for expr in template.exprs)
        if reads_input and run_id not in self.inputs:
            row = self.core.db.execute("SELECT input FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            self.inputs[run_id] = _json(row[0]) if row else None
        missing = [s for s in template.steps if (run_id, s) not in self.outputs]
        for step, value in self.core.get_outputs(run_id, missing).items():
            self.outputs[(run_id, step)] = value
        outputs = {s: self.outputs[(run_id, s)] for s in template.steps}
        state = self._state(run_id) if reads_state(template) else None
        try:
            return render_input(
                template,
                run_input=self.inputs.get(run_id),
                outputs=outputs,
                item=item,
                index=index,
                state=state,
            ), None
        except CoveyError as exc:
            return None, str(exc)
