"""Reading runs, histories, outputs, shards and client ids from the PostgreSQL store.

Each read is one statement (histories: one more for the specs they pin), so
none needs a transaction; each sees what was committed when it started.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from covey.store.base import RunInfo, TaskInfo
from covey.store.postgres.connection import Conn

__all__ = [
    "backlog",
    "from_json",
    "get_run",
    "list_runs",
    "list_tasks",
    "load_histories",
    "next_due_ms",
    "outputs_of",
    "seen",
    "shard_leases",
]

_RUN_COLUMNS = "run_id, workflow, status, seq, created_ms, updated_ms, finished_ms, input, output, error"

GET_RUN_SQL = f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = $1"
LIST_RUNS_SQL = f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_ms DESC, run_id LIMIT $1"
LIST_RUNS_BY_STATUS_SQL = (
    f"SELECT {_RUN_COLUMNS} FROM runs WHERE status = $1 ORDER BY created_ms DESC, run_id LIMIT $2"
)
BACKLOG_SQL = "SELECT (SELECT count(*) FROM runs WHERE status = 'running') + (SELECT count(*) FROM inbox)"
LIST_TASKS_SQL = (
    "SELECT task_id, step, idx, status, try_no, lease_no, worker_id, lease_until_ms FROM tasks"
    " WHERE run_id = $1 ORDER BY step, idx"
)
OUTPUTS_SQL = (
    "SELECT step, idx, body FROM outputs WHERE run_id = $1 AND step = ANY($2::text[]) ORDER BY step, idx"
)
HISTORIES_SQL = "SELECT run_id, body FROM events WHERE run_id = ANY($1::text[]) ORDER BY run_id, seq"
SPECS_SQL = "SELECT hash, body FROM specs WHERE hash = ANY($1::text[])"
SEEN_SQL = "SELECT id FROM seen WHERE id = ANY($1::text[])"
SHARD_LEASES_SQL = "SELECT shard, epoch, until_ms FROM shards"
NEXT_DUE_SQL = (
    "SELECT LEAST((SELECT min(due_ms) FROM timers),"
    " (SELECT min(lease_until_ms) FROM tasks WHERE status = 'leased'))"
)

#: Pinned specs kept in memory: a spec never changes under its hash.
SPEC_CACHE_SIZE = 256


def from_json(body: bytes | None) -> Any:
    """A stored JSON column's value (NULL stays None)."""
    return None if body is None else orjson.loads(body)


def _run_info(row: Any) -> RunInfo:
    return RunInfo(
        row["run_id"],
        row["workflow"],
        row["status"],
        row["seq"],
        row["created_ms"],
        row["updated_ms"],
        row["finished_ms"],
        from_json(row["input"]),
        from_json(row["output"]),
        from_json(row["error"]),
    )


async def seen(conn: Conn, ids: Sequence[str]) -> set[str]:
    """Which client-chosen ids were already committed."""
    if not ids:
        return set()
    return {row["id"] for row in await conn.fetch(SEEN_SQL, list(ids))}


async def load_histories(
    conn: Conn, run_ids: Sequence[str], specs: dict[str, bytes]
) -> dict[str, list[dict[str, Any]]]:
    """Histories of several runs (absent runs left out), the pinned spec filled in.

    ``specs`` caches pinned specs' JSON by hash; each history gets its own parsed copy.
    """
    result: dict[str, list[dict[str, Any]]] = {}
    if not run_ids:
        return result
    for row in await conn.fetch(HISTORIES_SQL, list(dict.fromkeys(run_ids))):
        result.setdefault(row["run_id"], []).append(orjson.loads(row["body"]))
    refs: dict[str, list[dict[str, Any]]] = {}
    for history in result.values():
        first = history[0]
        ref = first.get("workflow", {}).get("$spec") if first.get("type") == "RunSubmitted" else None
        if ref is not None:
            refs.setdefault(ref, []).append(first)
    missing = [ref for ref in refs if ref not in specs]
    if missing:
        if len(specs) + len(missing) > SPEC_CACHE_SIZE:
            specs.clear()
        for row in await conn.fetch(SPECS_SQL, missing):
            specs[row["hash"]] = row["body"]
    for ref, firsts in refs.items():
        for first in firsts:
            first["workflow"] = from_json(specs.get(ref))
    return result


async def get_run(conn: Conn, run_id: str) -> RunInfo | None:
    """One run."""
    row = await conn.fetchrow(GET_RUN_SQL, run_id)
    return None if row is None else _run_info(row)


async def list_runs(conn: Conn, status: str | None, limit: int) -> list[RunInfo]:
    """Runs, newest first."""
    limit = max(limit, 0)
    if status:
        rows = await conn.fetch(LIST_RUNS_BY_STATUS_SQL, status, limit)
    else:
        rows = await conn.fetch(LIST_RUNS_SQL, limit)
    return [_run_info(row) for row in rows]


async def backlog(conn: Conn) -> int:
    """Runs running, plus the inputs waiting in the inbox (an index count each)."""
    return int(await conn.fetchval(BACKLOG_SQL))


async def list_tasks(conn: Conn, run_id: str) -> list[TaskInfo]:
    """A run's unfinished task rows."""
    return [TaskInfo(*row) for row in await conn.fetch(LIST_TASKS_SQL, run_id)]


def outputs_of(steps: Sequence[str], rows: Sequence[tuple[str, int, bytes]]) -> dict[str, Any]:
    """Outputs by step from (step, index, body) rows in (step, index) order: a value, or a map step's list."""
    result: dict[str, Any] = dict.fromkeys(steps)
    for step, idx, body in rows:
        if idx < 0:
            result[step] = orjson.loads(body)
        else:
            if not isinstance(result[step], list):
                result[step] = []
            result[step].append(orjson.loads(body))
    return result


async def get_outputs(conn: Conn, run_id: str, steps: Sequence[str]) -> dict[str, Any]:
    """Outputs of steps: a value, an ordered list for a map step, None if none."""
    if not steps:
        return {}
    rows = await conn.fetch(OUTPUTS_SQL, run_id, list(steps))
    return outputs_of(steps, [(row["step"], row["idx"], row["body"]) for row in rows])


async def shard_leases(conn: Conn) -> dict[int, tuple[int, int]]:
    """shard -> (epoch, until_ms)."""
    return {row["shard"]: (row["epoch"], row["until_ms"]) for row in await conn.fetch(SHARD_LEASES_SQL)}


async def next_due_ms(conn: Conn) -> int | None:
    """When the earliest timer or lease comes due."""
    due = await conn.fetchval(NEXT_DUE_SQL)
    return None if due is None else int(due)
