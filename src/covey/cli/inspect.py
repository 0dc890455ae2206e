"""``covey ls``, ``show`` and ``events``: read-only views of the store."""

from __future__ import annotations

from typing import Any

import click
import orjson

from covey.cli.render import console, events_table, run_detail, runs_table, workers_table
from covey.engine.events import event_from_json
from covey.engine.replay import fold
from covey.errors import NotFound
from covey.runtime.eventloop import run_async

__all__ = ["COMMANDS"]


@click.command("ls")
@click.option("--status", type=click.Choice(["running", "succeeded", "failed", "cancelled"]))
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def ls_command(settings: Any, status: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first."""

    async def go() -> None:
        async with settings.client().reader() as store:
            runs = await store.list_runs(status=status, limit=limit)
        if as_json:
            for run in runs:
                print(
                    orjson.dumps(
                        {"run_id": run.run_id, "workflow": run.workflow, "status": run.status}
                    ).decode()
                )
        else:
            console.print(runs_table(runs))

    run_async(go())


@click.command("show")
@click.argument("run_id")
@click.pass_obj
def show_command(settings: Any, run_id: str) -> None:
    """Show a run: status, steps, tasks in flight, output or error."""

    async def go() -> None:
        async with settings.client().reader() as store:
            info = await store.get_run(run_id)
            if info is None:
                raise NotFound(f"no run {run_id!r}")
            tasks = await store.list_tasks(run_id)
            history = await store.load_history(run_id)
        state = fold([event_from_json(e) for e in history], check=False)
        steps = []
        if state is not None:
            for name, step in state.steps.items():
                detail = f"{step.done}/{step.total} tasks" if step.total else ""
                steps.append((name, step.status, detail))
        console.print(run_detail(info, tasks, steps))

    run_async(go())


@click.command("events")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@click.pass_obj
def events_command(settings: Any, run_id: str, as_json: bool) -> None:
    """Print a run's history: every event, in order."""

    async def go() -> None:
        async with settings.client().reader() as store:
            history = await store.load_history(run_id)
        if not history:
            raise NotFound(f"no run {run_id!r}")
        if as_json:
            for event in history:
                print(orjson.dumps(event).decode())
        else:
            console.print(events_table(history))

    run_async(go())


@click.command("workers")
@click.pass_obj
def workers_command(settings: Any) -> None:
    """List registered workers: what they serve, their slots, when each was last heard from."""

    async def go() -> None:
        async with settings.client().reader() as store:
            workers = await store.list_workers()
            now = await store.now_ms()
        console.print(workers_table(workers, now))

    run_async(go())


COMMANDS = [ls_command, show_command, events_command, workers_command]
