"""Claims, leases, the inbox, timers and the worker registry in the PostgreSQL store.

A claim is one statement: it picks ready rows in claim order with
``FOR UPDATE SKIP LOCKED`` (concurrent claimers skip each other's rows instead
of queueing behind them), leases them, and returns with each task what its
input mapping reads: the run's input, the upstream outputs and the run's
shared state. Which of those a mapping reads is worked out when the task is
enqueued (``reads_input``, ``reads_steps``, ``reads_state``), so the inputs are
still resolved at claim time, from what is committed then, without a second
round trip. Required labels are matched in SQL (``labels <@ offered``), so
tasks a worker cannot run never hide those it can.

Each target is read in claim order from its own index range (a ``LATERAL``
scan per target, stopping at the limit): ``target = ANY(...)`` would read and
sort every ready task of every target instead. A claim for several targets
locks up to ``limit`` rows per target and leases the best ``limit``; the
others are unlocked when its transaction ends.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

import orjson

from covey.engine.events import TimerFired, event_to_json
from covey.errors import CoveyError
from covey.store.base import ClaimRequest, InboxRow, Lease, WorkerInfo, shard_of
from covey.store.inputs import reads_input, reads_state, render_input, template_of
from covey.store.postgres.connection import NOW_MS, Conn
from covey.store.postgres.reads import from_json, outputs_of

__all__ = [
    "MAX_STATE_KEYS",
    "append_inbox",
    "append_timer_rows",
    "claim",
    "fire_due",
    "heartbeat",
    "list_workers",
    "read_inbox",
    "register_worker",
    "release",
    "template_reads",
    "unregister_worker",
]

#: Keys of a run's namespace an input mapping can see (``${state...}``).
MAX_STATE_KEYS = 10_000

CLAIM_SQL = f"""
WITH chosen AS (
    SELECT c.task_id FROM unnest($1::text[]) AS g (target)
    CROSS JOIN LATERAL (
        SELECT task_id, prio_key, ord FROM tasks
        WHERE status = 'ready' AND target = g.target AND (labels IS NULL OR labels <@ $2::jsonb)
        ORDER BY prio_key DESC, ord
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY c.prio_key DESC, c.ord
    LIMIT $3
), leased AS (
    UPDATE tasks AS t SET status = 'leased', lease_no = t.lease_no + 1, worker_id = $4,
        lease_until_ms = LEAST({NOW_MS} + $5, {NOW_MS} + NULLIF(t.timeout_ms, 0)),
        try_deadline_ms = {NOW_MS} + NULLIF(t.timeout_ms, 0)
    FROM chosen WHERE t.task_id = chosen.task_id
    RETURNING t.task_id, t.run_id, t.step, t.idx, t.target, t.lease_no, t.try_no, t.timeout_ms,
        t.lease_until_ms, t.input_template, t.item, t.input_schema, t.reads_input, t.reads_steps,
        t.reads_state, t.prio_key, t.ord
)
SELECT l.*, r.input AS run_input, o.steps, o.idxs, o.bodies, s.keys, s.vals
FROM leased AS l
LEFT JOIN runs AS r ON l.reads_input AND r.run_id = l.run_id
LEFT JOIN LATERAL (
    SELECT array_agg(step ORDER BY step, idx) AS steps, array_agg(idx ORDER BY step, idx) AS idxs,
        array_agg(body ORDER BY step, idx) AS bodies
    FROM outputs WHERE run_id = l.run_id AND step = ANY(l.reads_steps)
) AS o ON true
LEFT JOIN LATERAL (
    SELECT array_agg(key) AS keys, array_agg(value) AS vals FROM (
        SELECT key, value FROM state
        WHERE l.reads_state AND namespace = 'run:' || l.run_id AND value IS NOT NULL
        LIMIT {MAX_STATE_KEYS}
    ) AS x
) AS s ON true
ORDER BY l.prio_key DESC, l.ord
"""
HEARTBEAT_SQL = f"""
WITH extended AS (
    UPDATE tasks AS t SET lease_until_ms = LEAST({NOW_MS} + $3, t.try_deadline_ms)
    FROM unnest($1::text[], $2::bigint[]) AS l (task_id, lease_no)
    WHERE t.task_id = l.task_id AND t.lease_no = l.lease_no AND t.worker_id = $4 AND t.status = 'leased'
    RETURNING t.task_id
), beat AS (
    UPDATE workers SET heartbeat_ms = {NOW_MS} WHERE worker_id = $4
)
SELECT task_id FROM extended
"""
RELEASE_SQL = """
UPDATE tasks AS t SET status = 'ready', worker_id = NULL, lease_until_ms = NULL, try_deadline_ms = NULL
FROM unnest($1::text[], $2::bigint[]) AS l (task_id, lease_no)
WHERE t.task_id = l.task_id AND t.lease_no = l.lease_no AND t.worker_id = $3 AND t.status = 'leased'
"""
APPEND_INBOX_SQL = """
INSERT INTO inbox (id, run_id, shard, body, output, state_ops)
SELECT r.id, r.run_id, r.shard, r.body, r.output, r.ops
FROM unnest($1::text[], $2::text[], $3::smallint[], $4::bytea[], $5::bytea[], $6::bytea[])
    WITH ORDINALITY AS r (id, run_id, shard, body, output, ops, n)
WHERE NOT EXISTS (SELECT 1 FROM seen WHERE seen.id = r.id)
ORDER BY r.n
ON CONFLICT (id) DO NOTHING
"""
APPEND_TIMER_ROWS_SQL = """
INSERT INTO inbox (id, run_id, shard, body)
SELECT r.id, r.run_id, r.shard, r.body
FROM unnest($1::text[], $2::text[], $3::smallint[], $4::bytea[]) WITH ORDINALITY AS r (id, run_id, shard, body, n)
ORDER BY r.n
ON CONFLICT (id) DO NOTHING
"""
_INBOX_COLUMNS = "seq, id, run_id, body, output, state_ops"
READ_INBOX_SQL = f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE seq > $1 ORDER BY seq LIMIT $2"
READ_INBOX_BY_SHARD_SQL = (
    f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE seq > $1 AND shard = ANY($3::smallint[]) ORDER BY seq LIMIT $2"
)
FIRE_DUE_SQL = f"""
WITH timers_due AS (
    DELETE FROM timers WHERE timer_id IN (
        SELECT timer_id FROM timers WHERE due_ms <= {NOW_MS} ORDER BY due_ms LIMIT $1 FOR UPDATE SKIP LOCKED
    )
    RETURNING timer_id, run_id, kind, task_id, lease_no
), leases_ended AS (
    UPDATE tasks SET status = 'expired' WHERE task_id IN (
        SELECT task_id FROM tasks WHERE status = 'leased' AND lease_until_ms <= {NOW_MS}
        ORDER BY lease_until_ms LIMIT $1 FOR UPDATE SKIP LOCKED
    )
    RETURNING task_id, run_id, lease_no, lease_until_ms, try_deadline_ms
)
SELECT timer_id AS id, run_id, kind, task_id, lease_no, NULL::bigint AS until_ms,
    NULL::bigint AS deadline_ms, {NOW_MS} AS now_ms
FROM timers_due
UNION ALL
SELECT NULL, run_id, NULL, task_id, lease_no, lease_until_ms, try_deadline_ms, {NOW_MS} FROM leases_ended
"""
REGISTER_SQL = """
INSERT INTO workers (worker_id, targets, labels, slots, heartbeat_ms, started_ms)
VALUES ($1, $2::text[], $3, $4, $5, $6)
ON CONFLICT (worker_id) DO UPDATE SET targets = excluded.targets, labels = excluded.labels,
    slots = excluded.slots, heartbeat_ms = excluded.heartbeat_ms, started_ms = excluded.started_ms
"""
UNREGISTER_SQL = "DELETE FROM workers WHERE worker_id = $1"
LIST_WORKERS_SQL = (
    "SELECT worker_id, targets, labels, slots, heartbeat_ms, started_ms FROM workers ORDER BY worker_id"
)


def template_reads(text: bytes) -> tuple[bool, list[str], bool]:
    """What an input mapping reads at claim time: (the run's input, these steps' outputs, the run's state).

    A mapping that does not compile is marked as reading everything; the
    claim then reports the compile error as the lease's ``input_error``.
    """
    try:
        template = template_of(text)
    except CoveyError:
        return True, [], True
    if template.is_literal:
        return False, [], False
    return reads_input(template), sorted(template.steps), reads_state(template)


async def claim(conn: Conn, request: ClaimRequest) -> list[Lease]:
    """Lease up to ``request.limit`` ready tasks, in claim order, inputs resolved."""
    if not request.targets or request.limit <= 0:
        return []
    rows = await conn.fetch(
        CLAIM_SQL,
        sorted(request.targets),
        orjson.dumps(dict(request.labels)).decode(),
        request.limit,
        request.worker_id,
        request.lease_ms,
    )
    return [_lease(row) for row in rows]


def _lease(row: Any) -> Lease:
    value, error = _resolve(row)
    return Lease(
        row["task_id"],
        row["run_id"],
        row["step"],
        row["idx"],
        row["target"],
        row["lease_no"],
        row["try_no"],
        value,
        from_json(row["input_schema"]),
        row["timeout_ms"],
        row["lease_until_ms"],
        error,
    )


def _resolve(row: Any) -> tuple[Any, str | None]:
    """The task's input, from the values the claim read with it; or the reason it could not be made."""
    index = row["idx"]
    item = from_json(row["item"])
    try:
        template = template_of(row["input_template"])
    except CoveyError as exc:
        return None, str(exc)
    if template.is_literal:
        return (template.source if template.source is not None else (item if index >= 0 else {})), None
    steps = sorted(template.steps)
    outputs = outputs_of(
        steps, list(zip(row["steps"] or (), row["idxs"] or (), row["bodies"] or (), strict=True))
    )
    state = None
    if reads_state(template):
        state = {
            key: orjson.loads(value) for key, value in zip(row["keys"] or (), row["vals"] or (), strict=True)
        }
    try:
        value = render_input(
            template,
            run_input=from_json(row["run_input"]),
            outputs=outputs,
            item=item,
            index=index,
            state=state,
        )
    except CoveyError as exc:
        return None, str(exc)
    return value, None


async def heartbeat(
    conn: Conn, worker_id: str, leases: Sequence[tuple[str, int]], lease_ms: int
) -> list[str]:
    """Extend the worker's leases (never past a try's deadline); the task ids it no longer holds."""
    rows = await conn.fetch(
        HEARTBEAT_SQL, [t for t, _ in leases], [n for _, n in leases], lease_ms, worker_id
    )
    extended = {row["task_id"] for row in rows}
    return [task_id for task_id, _ in leases if task_id not in extended]


async def release(conn: Conn, worker_id: str, leases: Sequence[tuple[str, int]]) -> None:
    """Give leases back: the tasks become ready again with their lease numbers kept."""
    if leases:
        await conn.execute(RELEASE_SQL, [t for t, _ in leases], [n for _, n in leases], worker_id)


# -- inbox and timers ----------------------------------------------------------------------


async def append_inbox(conn: Conn, rows: Sequence[InboxRow]) -> None:
    """Append rows; ids already in the inbox, earlier in ``rows`` or committed as seen are ignored."""
    if not rows:
        return
    await conn.execute(
        APPEND_INBOX_SQL,
        [r.id for r in rows],
        [r.run_id for r in rows],
        [shard_of(r.run_id) for r in rows],
        [orjson.dumps(r.event) for r in rows],
        [r.output for r in rows],
        [orjson.dumps(r.state_ops) if r.state_ops else None for r in rows],
    )


async def append_timer_rows(conn: Conn, rows: Iterable[tuple[str, str, TimerFired]]) -> None:
    """Append TimerFired rows (row id, run id, event); an id already there is ignored."""
    listed = list(rows)
    if listed:
        await conn.execute(
            APPEND_TIMER_ROWS_SQL,
            [row_id for row_id, _, _ in listed],
            [run_id for _, run_id, _ in listed],
            [shard_of(run_id) for _, run_id, _ in listed],
            [orjson.dumps(event_to_json(event)) for _, _, event in listed],
        )


async def read_inbox(
    conn: Conn, after_seq: int, limit: int, shards: Collection[int] | None
) -> list[InboxRow]:
    """Inbox rows after ``after_seq``, oldest first; only runs of ``shards`` when given."""
    if limit <= 0 or (shards is not None and not shards):
        return []
    if shards is None:
        rows = await conn.fetch(READ_INBOX_SQL, after_seq, limit)
    else:
        rows = await conn.fetch(READ_INBOX_BY_SHARD_SQL, after_seq, limit, sorted(shards))
    return [
        InboxRow(
            row["id"],
            row["run_id"],
            orjson.loads(row["body"]),
            row["seq"],
            row["output"],
            None if row["state_ops"] is None else orjson.loads(row["state_ops"]),
        )
        for row in rows
    ]


async def fire_due(conn: Conn, limit: int) -> int:
    """Delete due timers and expire ended leases, appending their TimerFired rows (caller's transaction)."""
    if limit <= 0:
        return 0
    fired = []
    for row in await conn.fetch(FIRE_DUE_SQL, limit):
        task_id, lease_no, now = row["task_id"], row["lease_no"], row["now_ms"]
        if row["id"] is not None:
            timer_id = row["id"]
            event = TimerFired(timer_id, row["kind"], now, task_id, lease_no)
            fired.append((f"timer:{timer_id}", row["run_id"], event))
        else:
            deadline = row["deadline_ms"]
            timed_out = deadline is not None and row["until_ms"] >= deadline
            lease_id = f"lease:{task_id}:{lease_no}"
            kind = "try_timeout" if timed_out else "lease_expired"
            fired.append((lease_id, row["run_id"], TimerFired(lease_id, kind, now, task_id, lease_no)))
    await append_timer_rows(conn, fired)
    return len(fired)


# -- registry ------------------------------------------------------------------------------


async def register_worker(conn: Conn, info: WorkerInfo) -> None:
    """Add or refresh a worker."""
    await conn.execute(
        REGISTER_SQL,
        info.worker_id,
        sorted(info.targets),
        orjson.dumps(dict(info.labels)),
        info.slots,
        info.heartbeat_ms,
        info.started_ms,
    )


async def unregister_worker(conn: Conn, worker_id: str) -> None:
    """Remove a worker."""
    await conn.execute(UNREGISTER_SQL, worker_id)


async def list_workers(conn: Conn) -> list[WorkerInfo]:
    """Registered workers."""
    return [
        WorkerInfo(
            row["worker_id"],
            frozenset(row["targets"]),
            orjson.loads(row["labels"]),
            row["slots"],
            row["heartbeat_ms"],
            row["started_ms"],
        )
        for row in await conn.fetch(LIST_WORKERS_SQL)
    ]
