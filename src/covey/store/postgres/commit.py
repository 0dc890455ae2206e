"""The group commit of the PostgreSQL store, and shards leased to engine loops by epoch.

A commit is one transaction of few round trips, whatever the number of runs:

1. one statement locks the batch's shards (``FOR SHARE``: a shard cannot be
   taken over while a commit that needs it is in flight, and a commit waiting
   behind a takeover sees the new epoch), inserts the runs the batch creates
   (``ON CONFLICT DO NOTHING``: of two loops creating one run, one wins) and
   locks the other runs' rows (``FOR UPDATE``), returning their sequence numbers;
2. Python drops the runs whose sequence number does not match;
3. one statement writes everything of the others: run rows, events, task
   rows, timers, outputs, consumed inbox rows and seen ids, each table from
   arrays (``unnest``), as data-modifying CTEs;
4. only if the batch has them: staged state writes (:mod:`.shared`), run
   outputs rendered from the outputs just written, and the batch's claims,
   which see every row the batch wrote.

Rows a batch writes twice (a task dropped and enqueued again, a timer
cancelled and set again) are resolved in Python first, the way the SQLite
store's statement order resolves them, because the CTEs of one statement
share one snapshot and must not touch a row twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from covey.engine.commands import EnqueueTask, SetTimer
from covey.engine.events import TimerFired
from covey.errors import Conflict, CoveyError
from covey.state.model import StateOp
from covey.store.base import AGING_MS, SHARDS, CommitBatch, CommitResult, RunWrite, shard_of
from covey.store.inputs import render_input, template_of
from covey.store.postgres.connection import NOW_MS, Conn
from covey.store.postgres.reads import from_json, outputs_of
from covey.store.postgres.shared import apply_staged, drop_namespaces
from covey.store.postgres.tasks import append_timer_rows, claim, template_reads

__all__ = ["FOREVER_MS", "begin_epoch", "commit", "join_epoch", "release_shards", "take_shards"]

#: A lease end that never comes: a runner that began an epoch holds every shard until another begins one.
FOREVER_MS = 2**62

JOIN_EPOCH_SQL = "UPDATE meta SET value = value + 1 WHERE key = 'epoch' RETURNING value"
BEGIN_EPOCH_SQL = f"""
WITH epoch AS (
    UPDATE meta SET value = value + 1 WHERE key = 'epoch' RETURNING value
), taken AS (
    INSERT INTO shards (shard, epoch, until_ms)
    SELECT g, epoch.value, {FOREVER_MS} FROM epoch, generate_series(0, {SHARDS - 1}) AS g
    ON CONFLICT (shard) DO UPDATE SET epoch = excluded.epoch, until_ms = excluded.until_ms
), voided AS (
    UPDATE tasks SET status = 'expired' WHERE status = 'leased' RETURNING task_id, run_id, lease_no
)
SELECT epoch.value AS epoch, {NOW_MS} AS now_ms, v.task_id, v.run_id, v.lease_no
FROM epoch LEFT JOIN voided AS v ON true
"""
TAKE_SHARDS_SQL = f"""
INSERT INTO shards AS s (shard, epoch, until_ms)
SELECT g, $1, {NOW_MS} + $3 FROM unnest($2::smallint[]) AS g ORDER BY g
ON CONFLICT (shard) DO UPDATE SET epoch = excluded.epoch, until_ms = excluded.until_ms
WHERE s.epoch = excluded.epoch OR s.until_ms <= {NOW_MS}
RETURNING shard
"""
RELEASE_SHARDS_SQL = "UPDATE shards SET until_ms = 0 WHERE epoch = $1 AND shard = ANY($2::smallint[])"

LOCK_SQL = f"""
WITH held AS (
    SELECT shard FROM shards WHERE epoch = $1 AND shard = ANY($2::smallint[]) ORDER BY shard FOR SHARE
), specs_added AS (
    INSERT INTO specs (hash, body) SELECT * FROM unnest($3::text[], $4::bytea[]) ON CONFLICT (hash) DO NOTHING
), created AS (
    INSERT INTO runs (run_id, workflow, spec_hash, status, seq, input, parent, created_ms, updated_ms)
    SELECT n.run_id, n.workflow, n.spec_hash, 'running', 0, n.input, n.parent, {NOW_MS}, {NOW_MS}
    FROM unnest($5::text[], $6::text[], $7::text[], $8::bytea[], $9::text[])
        AS n (run_id, workflow, spec_hash, input, parent)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id
), existing AS (
    SELECT run_id, seq FROM runs WHERE run_id = ANY($10::text[]) ORDER BY run_id FOR UPDATE
)
SELECT NULL::text AS run_id, shard, NULL::bigint AS seq FROM held
UNION ALL SELECT run_id, NULL, NULL FROM created
UNION ALL SELECT run_id, NULL, seq FROM existing
"""
WRITE_SQL = f"""
WITH runs_updated AS (
    UPDATE runs SET seq = w.seq, updated_ms = {NOW_MS}, status = coalesce(w.status, runs.status),
        output = coalesce(w.output, runs.output), error = coalesce(w.error, runs.error),
        finished_ms = coalesce(w.finished_ms, runs.finished_ms)
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bytea[], $5::bytea[], $6::bigint[])
        AS w (run_id, seq, status, output, error, finished_ms)
    WHERE runs.run_id = w.run_id
), events_added AS (
    INSERT INTO events (run_id, seq, type, at_ms, body)
    SELECT * FROM unnest($7::text[], $8::bigint[], $9::text[], $10::bigint[], $11::bytea[])
), tasks_dropped AS (
    DELETE FROM tasks WHERE task_id = ANY($12::text[])
), tasks_added AS (
    INSERT INTO tasks (task_id, run_id, step, idx, target, labels, priority, prio_key, ord, status, try_no,
        lease_no, worker_id, lease_until_ms, try_deadline_ms, timeout_ms, input_template, item, input_schema,
        reads_input, reads_steps, reads_state, ready_ms)
    SELECT t.task_id, t.run_id, t.step, t.idx, t.target, t.labels::jsonb, t.priority,
        t.priority::bigint * {AGING_MS} - {NOW_MS}, nextval('task_order'), 'ready', t.try_no, t.lease_floor,
        NULL, NULL, NULL, t.timeout_ms, t.template, t.item, t.input_schema, t.reads_input,
        ARRAY(SELECT jsonb_array_elements_text(t.reads_steps::jsonb)), t.reads_state, {NOW_MS}
    FROM unnest($13::text[], $14::text[], $15::text[], $16::integer[], $17::text[], $18::text[],
        $19::integer[], $20::integer[], $21::bigint[], $22::bigint[], $23::bytea[], $24::bytea[], $25::bytea[],
        $26::boolean[], $27::text[], $28::boolean[])
        AS t (task_id, run_id, step, idx, target, labels, priority, try_no, lease_floor, timeout_ms, template,
            item, input_schema, reads_input, reads_steps, reads_state)
    ON CONFLICT (task_id) DO UPDATE SET run_id = excluded.run_id, step = excluded.step, idx = excluded.idx,
        target = excluded.target, labels = excluded.labels, priority = excluded.priority,
        prio_key = excluded.prio_key, ord = excluded.ord, status = excluded.status, try_no = excluded.try_no,
        lease_no = excluded.lease_no, worker_id = NULL, lease_until_ms = NULL, try_deadline_ms = NULL,
        timeout_ms = excluded.timeout_ms, input_template = excluded.input_template, item = excluded.item,
        input_schema = excluded.input_schema, reads_input = excluded.reads_input,
        reads_steps = excluded.reads_steps, reads_state = excluded.reads_state, ready_ms = excluded.ready_ms
), timers_cancelled AS (
    DELETE FROM timers WHERE timer_id = ANY($29::text[])
), timers_set AS (
    INSERT INTO timers (timer_id, run_id, due_ms, kind, task_id, lease_no)
    SELECT * FROM unnest($30::text[], $31::text[], $32::bigint[], $33::text[], $34::text[], $35::bigint[])
    ON CONFLICT (timer_id) DO UPDATE SET run_id = excluded.run_id, due_ms = excluded.due_ms,
        kind = excluded.kind, task_id = excluded.task_id, lease_no = excluded.lease_no
), outputs_kept AS (
    INSERT INTO outputs (run_id, step, idx, body)
    SELECT * FROM unnest($36::text[], $37::text[], $38::integer[], $39::bytea[])
    ON CONFLICT (run_id, step, idx) DO UPDATE SET body = excluded.body
), inbox_consumed AS (
    DELETE FROM inbox WHERE seq = ANY($40::bigint[])
)
INSERT INTO seen (id, run_id) SELECT * FROM unnest($41::text[], $42::text[]) ON CONFLICT (id) DO NOTHING
"""
RENDER_READ_SQL = """
SELECT o.run_id, o.step, o.idx, o.body FROM outputs AS o
JOIN unnest($1::text[], $2::text[]) AS w (run_id, step) ON o.run_id = w.run_id AND o.step = w.step
UNION ALL
SELECT run_id, NULL, NULL, input FROM runs WHERE run_id = ANY($3::text[])
"""
SET_OUTPUTS_SQL = """
UPDATE runs SET output = o.output FROM unnest($1::text[], $2::bytea[]) AS o (run_id, output)
WHERE runs.run_id = o.run_id
"""


# -- epochs and shards ---------------------------------------------------------------------


async def begin_epoch(conn: Conn) -> int:
    """Bump the epoch, take every shard, and void every lease granted before (caller's transaction)."""
    rows = await conn.fetch(BEGIN_EPOCH_SQL)
    epoch = int(rows[0]["epoch"])
    await append_timer_rows(
        conn,
        (
            (
                f"void:{row['task_id']}:{row['lease_no']}:{epoch}",
                row["run_id"],
                TimerFired(
                    f"void:{row['task_id']}", "lease_voided", row["now_ms"], row["task_id"], row["lease_no"]
                ),
            )
            for row in rows
            if row["task_id"] is not None
        ),
    )
    return epoch


async def join_epoch(conn: Conn) -> int:
    """A new epoch holding no shard."""
    return int(await conn.fetchval(JOIN_EPOCH_SQL))


async def take_shards(conn: Conn, epoch: int, shards: Sequence[int], ttl_ms: int) -> set[int]:
    """Lease free, ended or own shards to ``epoch``; the requested ones it holds now."""
    if not shards:
        return set()
    return {row["shard"] for row in await conn.fetch(TAKE_SHARDS_SQL, epoch, sorted(set(shards)), ttl_ms)}


async def release_shards(conn: Conn, epoch: int, shards: Sequence[int]) -> None:
    """End ``epoch``'s leases of ``shards`` now (the epoch stays on them until someone takes them)."""
    if shards:
        await conn.execute(RELEASE_SHARDS_SQL, epoch, sorted(set(shards)))


# -- the commit ----------------------------------------------------------------------------


async def commit(conn: Conn, batch: CommitBatch, keep: int) -> CommitResult:
    """Write a batch (caller's transaction), then grant its claims; Conflict for a stale epoch.

    Change feeds the batch's staged state writes add to keep their last ``keep`` changes.
    """
    result = CommitResult()
    ok = await _lock(conn, batch, result) if batch.runs else []
    if ok or batch.consumed:
        await conn.execute(WRITE_SQL, *_write_args(ok, batch.consumed))
    await _apply_state(conn, ok, result, keep)
    result.outputs.update(await _render_outputs(conn, ok))
    for request in batch.claims:
        # One worker may claim twice in a batch: keep both grants, or the first would be leased to nobody.
        result.leases.setdefault(request.worker_id, []).extend(await claim(conn, request))
    return result


async def _lock(conn: Conn, batch: CommitBatch, result: CommitResult) -> list[RunWrite]:
    """Lock the batch's shards and runs, create its new runs; the writes that pass their sequence check."""
    needed = sorted({shard_of(w.run_id) for w in batch.runs})
    # Inserted in key order, so two commits inserting the same keys take their locks in one order.
    new = sorted((w for w in batch.runs if w.new is not None and w.expected_seq == 0), key=lambda w: w.run_id)
    specs = dict(sorted({w.new.spec_hash: w.new.spec for w in new if w.new is not None}.items()))
    rows = await conn.fetch(
        LOCK_SQL,
        batch.epoch,
        needed,
        list(specs),
        list(specs.values()),
        *_columns([(w.run_id, n.workflow, n.spec_hash, n.input, n.parent) for w in new if (n := w.new)], 5),
        sorted({w.run_id for w in batch.runs}),
    )
    held = {row["shard"] for row in rows if row["shard"] is not None}
    lost = set(needed) - held
    if lost:
        raise Conflict(
            f"epoch {batch.epoch} no longer holds shard(s) {sorted(lost)[:5]}; another engine loop took over"
        )
    created = {row["run_id"] for row in rows if row["shard"] is None and row["seq"] is None}
    current = {row["run_id"]: row["seq"] for row in rows if row["seq"] is not None}
    ok = []
    for write in batch.runs:
        # A run that does not exist yet can only be written by its first commit (``new``), created above.
        if write.run_id in created or current.get(write.run_id, -1) == write.expected_seq:
            ok.append(write)
        else:
            result.conflicts.add(write.run_id)
    return ok


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as ``width`` column lists: the arrays ``unnest`` turns back into rows."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def _write_args(writes: list[RunWrite], consumed: Sequence[int]) -> list[list[Any]]:
    """The 42 arrays of ``WRITE_SQL``, rows a batch writes twice resolved as applying in order would."""
    enqueued: dict[str, EnqueueTask] = {t.task_id: t for w in writes for t in w.enqueue}
    timers: dict[str, SetTimer] = {t.timer_id: t for w in writes for t in w.set_timers}
    outputs = {(w.run_id, step, idx): body for w in writes for step, idx, body in w.outputs}
    seen: dict[str, str] = {}
    for write in writes:
        for client_id in write.seen:
            seen.setdefault(client_id, write.run_id)
    runs = [(w.run_id, w.new_seq, w.status, w.output, w.error, w.finished_ms) for w in writes]
    events = [(w.run_id, *event) for w in writes for event in w.events]
    return [
        *_columns(runs, 6),
        *_columns(events, 5),
        sorted({t for w in writes for t in w.drop} - enqueued.keys()),
        *_columns([_task_row(t) for t in enqueued.values()], 16),
        sorted({t for w in writes for t in w.cancel_timers} - timers.keys()),
        *_columns(
            [(t.timer_id, t.run_id, t.due_ms, t.kind, t.task_id, t.lease_no) for t in timers.values()], 6
        ),
        *_columns([(*key, body) for key, body in outputs.items()], 4),
        sorted({*consumed, *(seq for w in writes for seq in w.consumed)}),
        list(seen),
        list(seen.values()),
    ]


def _task_row(t: EnqueueTask) -> tuple[Any, ...]:
    template = orjson.dumps(t.input_template)
    reads_input, reads_steps, reads_state = template_reads(template)
    return (
        t.task_id,
        t.run_id,
        t.step,
        t.index,
        t.target,
        orjson.dumps(t.labels).decode() if t.labels else None,
        t.priority,
        t.try_no,
        t.lease_floor,
        t.timeout_ms,
        template,
        orjson.dumps(t.item),
        orjson.dumps(t.input_schema) if t.input_schema else None,
        reads_input,
        orjson.dumps(reads_steps).decode(),
        reads_state,
    )


async def _apply_state(conn: Conn, writes: list[RunWrite], result: CommitResult, keep: int) -> None:
    """Staged writes and namespace drops, with the effect of applying them write by write.

    A namespace is dropped after every staged write of the writes up to the
    one that drops it; when a later write of the batch stages into it again,
    the writes so far are applied and the namespace dropped there, else its
    drop waits for the end, so a batch takes two statements, not two per run.
    """
    last_write = {op.namespace: n for n, w in enumerate(writes) for op in w.state_ops}
    pending: list[tuple[str, StateOp]] = []
    deferred: list[str] = []
    for n, write in enumerate(writes):
        pending.extend((write.run_id, op) for op in write.state_ops)
        namespace = write.drop_namespace
        if namespace is None:
            continue
        if last_write.get(namespace, -1) > n:
            await apply_staged(conn, pending, result.state_errors, keep)
            pending = []
            await drop_namespaces(conn, [namespace])
        else:
            deferred.append(namespace)
    await apply_staged(conn, pending, result.state_errors, keep)
    await drop_namespaces(conn, deferred)


async def _render_outputs(conn: Conn, writes: list[RunWrite]) -> dict[str, Any]:
    """Render and store the output of every run this batch finished with an output mapping."""
    finishing = [(w.run_id, w.output_template) for w in writes if w.output_template is not None]
    if not finishing:
        return {}
    templates: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for run_id, text in finishing:
        try:
            templates[run_id] = template_of(text)
        except CoveyError as exc:
            outputs[run_id] = {"error": str(exc)}
    pairs = sorted({(run_id, step) for run_id, template in templates.items() for step in template.steps})
    rows = await conn.fetch(RENDER_READ_SQL, [p[0] for p in pairs], [p[1] for p in pairs], list(templates))
    inputs: dict[str, Any] = {}
    found: dict[str, list[tuple[str, int, bytes]]] = {}
    for row in rows:
        if row["step"] is None:
            inputs[row["run_id"]] = from_json(row["body"])
        else:
            found.setdefault(row["run_id"], []).append((row["step"], row["idx"], row["body"]))
    for run_id, template in templates.items():
        values = outputs_of(sorted(template.steps), sorted(found.get(run_id, [])))
        try:
            outputs[run_id] = render_input(
                template, run_input=inputs.get(run_id), outputs=values, item=None, index=-1
            )
        except CoveyError as exc:
            outputs[run_id] = {"error": str(exc)}
    await conn.execute(SET_OUTPUTS_SQL, list(outputs), [orjson.dumps(value) for value in outputs.values()])
    return outputs
