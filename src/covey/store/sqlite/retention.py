"""Retention on the SQLite store: finished runs past their time deleted, with all that was theirs."""

from __future__ import annotations

from covey.state.model import run_namespace
from covey.store.sqlite.commit import Commit
from covey.store.sqlite.connection import chunks, qmarks

__all__ = ["Retention"]

#: A run's rows, by table and the column that names the run (its namespace, for shared state).
_RUN_ROWS = (
    ("events", "run_id"),
    ("tasks", "run_id"),
    ("outputs", "run_id"),
    ("timers", "run_id"),
    ("inbox", "run_id"),
    ("seen", "run_id"),
    ("runs", "run_id"),
)
_NAMESPACE_ROWS = ("state", "state_changes", "state_seq")


class Retention(Commit):
    """``purge_finished``: one transaction deletes a batch of finished runs entirely."""

    def purge_finished(self, before_ms: int, limit: int) -> list[str]:
        """Delete up to ``limit`` runs finished before ``before_ms``, oldest first; the ids deleted.

        The runs' sequence numbers this connection remembers are forgotten
        with them: a run id used again starts a new run.
        """
        if limit <= 0:
            return []
        purged: list[str] = self._write(self._purge, before_ms, limit)
        if purged:
            self._own.forget()
        return purged

    def _purge(self, before_ms: int, limit: int) -> list[str]:
        run_ids = [
            run_id
            for (run_id,) in self.db.execute(
                "SELECT run_id FROM runs WHERE finished_ms < ? AND status != 'running'"
                " ORDER BY finished_ms, run_id LIMIT ?",
                (before_ms, limit),
            )
        ]
        if not run_ids:
            return []
        for part in chunks(run_ids):
            marks = qmarks(len(part))
            for table, column in _RUN_ROWS:
                self.db.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", part)
            namespaces = [run_namespace(run_id) for run_id in part]
            for table in _NAMESPACE_ROWS:
                self.db.execute(f"DELETE FROM {table} WHERE namespace IN ({marks})", namespaces)
        return run_ids
