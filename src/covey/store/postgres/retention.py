"""Retention in the PostgreSQL store: finished runs deleted, with all that was theirs, oldest first.

A purge is one transaction of few round trips, whatever the number of runs:

1. one statement picks the oldest runs finished before the cutoff, from the
   ``runs_finished`` index, and locks their rows ``FOR UPDATE SKIP LOCKED``:
   concurrent purges take different runs and never wait for each other, and
   a run a commit holds is skipped (a later sweep takes it), never deleted
   under the commit;
2. one statement deletes those runs' rows from every table keyed by run,
   as data-modifying CTEs (no row is touched twice, so one snapshot is enough);
3. their shared-state namespaces go as a commit drops one
   (:func:`~covey.store.postgres.shared.drop_namespaces`): the change feed's
   counter first, since it is the lock writers of the namespace queue on.

The workflow specs the runs pinned stay: other runs share them by hash.
"""

from __future__ import annotations

from covey.state.model import run_namespace
from covey.store.postgres.connection import Conn
from covey.store.postgres.shared import drop_namespaces

__all__ = ["purge_finished"]

# The predicate repeats the index's, so the planner reads the index in this order and stops at the limit.
PICK_SQL = """
SELECT run_id FROM runs
WHERE status <> 'running' AND finished_ms IS NOT NULL AND finished_ms < $1
ORDER BY finished_ms, run_id
LIMIT $2
FOR UPDATE SKIP LOCKED
"""
DELETE_SQL = """
WITH events_gone AS (
    DELETE FROM events WHERE run_id = ANY($1::text[])
), tasks_gone AS (
    DELETE FROM tasks WHERE run_id = ANY($1::text[])
), outputs_gone AS (
    DELETE FROM outputs WHERE run_id = ANY($1::text[])
), timers_gone AS (
    DELETE FROM timers WHERE run_id = ANY($1::text[])
), inbox_gone AS (
    DELETE FROM inbox WHERE run_id = ANY($1::text[])
), seen_gone AS (
    DELETE FROM seen WHERE run_id = ANY($1::text[])
)
DELETE FROM runs WHERE run_id = ANY($1::text[])
"""


async def purge_finished(conn: Conn, before_ms: int, limit: int) -> list[str]:
    """Delete up to ``limit`` runs finished before ``before_ms``, oldest first (caller's transaction).

    Returns the ids deleted, in finish order; an empty list when no unlocked
    run finished before the cutoff.
    """
    if limit <= 0:
        return []
    run_ids = [row["run_id"] for row in await conn.fetch(PICK_SQL, before_ms, limit)]
    if run_ids:
        await conn.execute(DELETE_SQL, run_ids)
        await drop_namespaces(conn, [run_namespace(run_id) for run_id in run_ids])
    return run_ids
