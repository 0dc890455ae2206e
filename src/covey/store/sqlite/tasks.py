"""Claims, leases, the inbox, timers and the worker registry in the SQLite store."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Self

import orjson

from covey.engine.events import TimerFired, event_to_json
from covey.errors import CoveyError
from covey.state.model import run_namespace
from covey.store.base import ClaimRequest, InboxRow, Lease, RunWrite, WorkerInfo, shard_of
from covey.store.inputs import reads_input, reads_state, render_input, template_of
from covey.store.sqlite.connection import from_json, qmarks
from covey.store.sqlite.shared import Shared

__all__ = ["MAX_STATE_KEYS", "InputResolver", "Tasks", "offers"]

#: Keys of a run's namespace an input mapping can see (``${state...}``).
MAX_STATE_KEYS = 10_000


class Tasks(Shared):
    """Who runs what: claims with inputs resolved, leases, the inbox, timers, the registry."""

    def claim(self, request: ClaimRequest) -> list[Lease]:
        """Lease up to ``request.limit`` ready tasks, inputs resolved."""
        return self._write(self._claim, request, self.now_ms())  # type: ignore[no-any-return]

    def _claim(self, request: ClaimRequest, now: int) -> list[Lease]:
        targets = sorted(request.targets)
        if not targets or request.limit <= 0:
            return []
        chosen = self._claimable(targets, request.labels, request.limit)
        updates, leases = [], []
        resolver = InputResolver(self)
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
                    from_json(schema),
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
        first = self._CLAIM_SQL.format(targets=qmarks(len(targets)), after="")
        later = self._CLAIM_SQL.format(
            targets=qmarks(len(targets)), after="AND (prio_key < ? OR (prio_key = ? AND rowid < ?))"
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
    def _labels_match(required: bytes | None, offered: Mapping[str, str]) -> bool:
        return required is None or offers(offered, orjson.loads(required))

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
            "INSERT OR IGNORE INTO inbox (id, run_id, body, output, state_ops) VALUES (?, ?, ?, ?, ?)",
            [
                (
                    r.id,
                    r.run_id,
                    orjson.dumps(r.event),
                    r.output,
                    orjson.dumps(r.state_ops) if r.state_ops else None,
                )
                for r in rows
                if r.id not in seen
            ],
        )

    def _append_timer_rows(self, rows: Iterable[tuple[str, str, TimerFired]]) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO inbox (id, run_id, body) VALUES (?, ?, ?)",
            [(row_id, run_id, orjson.dumps(event_to_json(event))) for row_id, run_id, event in rows],
        )

    def read_inbox(self, after_seq: int, limit: int, shards: Collection[int] | None = None) -> list[InboxRow]:
        """Inbox rows after ``after_seq``, oldest first; only runs of ``shards`` when given.

        The shard filter runs here, not in SQL: an embedded runner holds every
        shard, so it is only ever used by tests and tools.
        """
        found: list[InboxRow] = []
        while len(found) < limit:
            rows = self.db.execute(
                "SELECT seq, id, run_id, body, output, state_ops FROM inbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
            for seq, row_id, run_id, body, output, ops in rows:
                after_seq = seq
                if shards is None or shard_of(run_id) in shards:
                    state_ops = orjson.loads(ops) if ops is not None else None
                    found.append(InboxRow(row_id, run_id, orjson.loads(body), seq, output, state_ops))
            if len(rows) < limit:
                break
        return found[:limit]

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


def offers(offered: Mapping[str, str], required: Mapping[str, str]) -> bool:
    """Whether a worker offering ``offered`` labels may run a task that requires ``required``."""
    return all(offered.get(key) == value for key, value in required.items())


class InputResolver:
    """Resolves the inputs of one claim batch, reading each run input and output once."""

    def __init__(self, core: Tasks) -> None:
        self.core = core
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[tuple[str, str], Any] = {}
        self.states: dict[str, dict[str, Any]] = {}

    def primed(self, writes: Sequence[RunWrite]) -> Self:
        """Known without a read: the outputs of single steps and the inputs of new runs in ``writes``.

        A map step's output is the list of all its elements, so a batch's
        element outputs are not enough: those are read.
        """
        for write in writes:
            for step, index, body in write.outputs:
                if index < 0:
                    self.outputs[(write.run_id, step)] = orjson.loads(body)
            if write.new is not None:
                self.inputs[write.run_id] = from_json(write.new.input)
        return self

    def _state(self, run_id: str) -> dict[str, Any]:
        """The run's shared-state namespace as a plain object, read once per claim batch."""
        if run_id not in self.states:
            rows = self.core.db.execute(
                "SELECT key, value FROM state WHERE namespace = ? AND value IS NOT NULL LIMIT ?",
                (run_namespace(run_id), MAX_STATE_KEYS),
            )
            self.states[run_id] = {key: orjson.loads(value) for key, value in rows}
        return self.states[run_id]

    def resolve(
        self, run_id: str, template_text: bytes, item_text: bytes | None, index: int
    ) -> tuple[Any, str | None]:
        template = template_of(template_text)
        item = from_json(item_text)
        if template.is_literal:
            return (template.source if template.source is not None else (item if index >= 0 else {})), None
        if reads_input(template) and run_id not in self.inputs:
            row = self.core.db.execute("SELECT input FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            self.inputs[run_id] = from_json(row[0]) if row else None
        steps = template.steps
        missing = [s for s in steps if (run_id, s) not in self.outputs]
        if missing:
            for step, value in self.core.get_outputs(run_id, missing).items():
                self.outputs[(run_id, step)] = value
        outputs = {s: self.outputs[(run_id, s)] for s in steps}
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
