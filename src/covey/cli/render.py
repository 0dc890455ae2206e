"""Rich output for the CLI: tables, progress, JSON. The only module that imports rich."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from rich.console import Console, Group
from rich.json import JSON
from rich.table import Table

from covey.engine.state import RunState
from covey.runtime.shards import ENGINE_PREFIX
from covey.state.model import StateEntry
from covey.store.base import RunInfo, TaskInfo, WorkerInfo

__all__ = [
    "console",
    "events_table",
    "json_view",
    "progress_view",
    "run_detail",
    "runs_table",
    "state_table",
    "when",
    "workers_table",
]

console = Console()

_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "skipped": "dim",
    "running": "cyan",
    "active": "cyan",
    "waiting": "dim",
}


def when(ms: int | None) -> str:
    """A millisecond timestamp as local time."""
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def styled(status: str) -> str:
    """A status word in its colour."""
    style = _STATUS_STYLE.get(status, "white")
    return f"[{style}]{status}[/{style}]"


def json_view(value: Any) -> JSON:
    """A JSON value, pretty and coloured."""
    return JSON(orjson.dumps(value).decode())


def runs_table(runs: list[RunInfo]) -> Table:
    """``covey ls``."""
    table = Table(title="runs")
    table.add_column("run", no_wrap=True)
    for column in ("workflow", "status", "created", "took"):
        table.add_column(column)
    for run in runs:
        took = f"{(run.finished_ms - run.created_ms) / 1000:.2f}s" if run.finished_ms else "-"
        table.add_row(run.run_id, run.workflow, styled(run.status), when(run.created_ms), took)
    return table


def run_detail(run: RunInfo, tasks: list[TaskInfo], steps: list[tuple[str, str, str]]) -> Group:
    """``covey show RUN``: the run, its steps and any unfinished task rows."""
    head = Table.grid(padding=(0, 2))
    head.add_row("run", run.run_id)
    head.add_row("workflow", run.workflow)
    head.add_row("status", styled(run.status))
    head.add_row("created", when(run.created_ms))
    head.add_row("finished", when(run.finished_ms))
    parts: list[Any] = [head]
    if steps:
        table = Table(title="steps")
        for column in ("step", "status", "detail"):
            table.add_column(column)
        for name, status, detail in steps:
            table.add_row(name, styled(status), detail)
        parts.append(table)
    if tasks:
        table = Table(title="tasks in flight")
        for column in ("task", "status", "try", "lease", "worker"):
            table.add_column(column)
        for task in tasks:
            table.add_row(
                task.task_id, task.status, str(task.try_no), str(task.lease_no), task.worker_id or "-"
            )
        parts.append(table)
    if run.error is not None:
        parts += ["[bold red]error[/bold red]", json_view(run.error)]
    if run.output is not None:
        parts += ["[bold]output[/bold]", json_view(run.output)]
    return Group(*parts)


#: A worker silent longer than this (a lease's length by default) is shown as silent.
SILENT_AFTER_MS = 30_000


def workers_table(workers: list[WorkerInfo], now_ms: int) -> Table:
    """``covey workers``: workers, and the engine nodes of a shared store (they register too)."""
    table = Table(title="workers")
    for column in ("worker", "serves", "labels", "slots", "last heard", "state"):
        table.add_column(column)
    for worker in workers:
        age = max(0, now_ms - worker.heartbeat_ms)
        state = styled("running") if age < SILENT_AFTER_MS else "[yellow]silent[/yellow]"
        labels = ", ".join(f"{k}={v}" for k, v in sorted(worker.labels.items())) or "-"
        engine = worker.worker_id.startswith(ENGINE_PREFIX)
        table.add_row(
            worker.worker_id,
            "[dim](engine node: decides runs, fires timers)[/dim]"
            if engine
            else ", ".join(sorted(worker.targets)),
            labels,
            str(worker.slots),
            f"{age / 1000:.1f}s ago",
            state,
        )
    return table


def state_table(namespace: str, entries: list[StateEntry]) -> Table:
    """``covey state ls``."""
    table = Table(title=f"state {namespace}")
    for column in ("key", "version", "value"):
        table.add_column(column)
    for entry in entries:
        table.add_row(entry.key, str(entry.version), orjson.dumps(entry.value).decode()[:120])
    return table


def events_table(history: list[dict[str, Any]]) -> Table:
    """``covey events RUN``."""
    table = Table(title="events")
    for column in ("#", "time", "event", "detail"):
        table.add_column(column)
    for seq, event in enumerate(history, start=1):
        detail = {k: v for k, v in event.items() if k not in ("type", "v", "at_ms", "workflow", "input")}
        text = orjson.dumps(detail).decode()
        table.add_row(str(seq), when(event.get("at_ms")), event["type"], text[:120])
    return table


def progress_view(state: RunState | None, started_ms: int, now_ms: int) -> Table:
    """The live table ``covey run`` shows: each step's status, progress and time."""
    table = Table(title=f"run {state.run_id if state else '...'}  {(now_ms - started_ms) / 1000:.1f}s")
    for column in ("step", "status", "done", "time"):
        table.add_column(column)
    if state is None:
        return table
    for name, step in state.steps.items():
        done = f"{step.done}/{step.total}" if step.total else "-"
        end = step.finished_ms or now_ms
        took = f"{(end - step.started_ms) / 1000:.2f}s" if step.started_ms else "-"
        running = step.status == "active"
        retries = sum(t.try_no - 1 for t in step.tasks.values())
        status = styled("running" if running else step.status) + (f" ({retries} retries)" if retries else "")
        table.add_row(name, status, done, took)
    return table
