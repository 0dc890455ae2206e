"""Reading runs, histories, outputs and client ids from the SQLite store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from covey.store.base import RunInfo, TaskInfo
from covey.store.sqlite.connection import Connection, chunks, from_json, qmarks

__all__ = ["Reads"]


class Reads(Connection):
    """Runs, histories, task rows and outputs."""

    def _seen(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for part in chunks(list(ids)):
            sql = f"SELECT id FROM seen WHERE id IN ({qmarks(len(part))})"
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
        for part in chunks(list(dict.fromkeys(run_ids))):
            sql = (
                f"SELECT run_id, body FROM events WHERE run_id IN ({qmarks(len(part))}) ORDER BY run_id, seq"
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
            from_json(data),
            from_json(output),
            from_json(error),
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

    def backlog(self) -> int:
        """Runs running, plus the inputs waiting in the inbox: two index counts."""
        (running,) = self.db.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()
        (waiting,) = self.db.execute("SELECT count(*) FROM inbox").fetchone()
        return int(running) + int(waiting)

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
            f"SELECT step, idx, body FROM outputs WHERE run_id = ? AND step IN ({qmarks(len(steps))}) ORDER BY step, idx",
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
