"""Retention on the SQLite store: finished runs past their time deleted, with all that was theirs."""

from __future__ import annotations

from covey.state.model import run_namespace
from covey.store.sqlite.commit import Commit
from covey.store.sqlite.connection import chunks, qmarks

__all__ = ["Retention"]

#: The tables holding a run's rows, by its ``run_id`` (its own namespace goes with them).
_RUN_TABLES = ("events", "tasks", "outputs", "timers", "inbox", "seen", "runs")


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
            for table in _RUN_TABLES:
                self.db.execute(f"DELETE FROM {table} WHERE run_id IN ({qmarks(len(part))})", part)
        self._drop_namespaces([run_namespace(run_id) for run_id in run_ids])
        return run_ids
