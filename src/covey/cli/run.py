"""``covey run FILE``: run one workflow with live progress (embedded, or on a shared store)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import click
import orjson
from rich.live import Live

from covey.agents.app import load_app
from covey.cli.render import console, json_view, progress_view
from covey.client import StoreClient
from covey.embedded import Embedded
from covey.engine.events import event_from_json
from covey.engine.replay import fold
from covey.errors import ConfigError, InputError
from covey.runtime.eventloop import run_async
from covey.runtime.node import EngineNode
from covey.store.base import RunInfo
from covey.store.open import open_bus_for, open_store
from covey.worker.process import spawn_store_worker
from covey.worker.store_link import StoreLink
from covey.worker.worker import Worker

__all__ = ["COMMANDS", "parse_inputs"]


def parse_inputs(pairs: tuple[str, ...], input_file: str | None) -> Any:
    """The run input from ``--input-file`` and ``--input k=v`` pairs (values parsed as JSON when they are JSON)."""
    value: Any = {}
    if input_file:
        try:
            value = orjson.loads(Path(input_file).read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"no such input file: {input_file}") from None
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{input_file} is not JSON: {exc}", field="input") from None
    if pairs and not isinstance(value, dict):
        raise InputError("--input k=v needs the input file to hold a JSON object", field="input")
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--input takes key=value, got {pair!r}", field="input")
        try:
            value[key] = orjson.loads(text)
        except orjson.JSONDecodeError:
            value[key] = text
    return value


def _workflow_and_app(file: str, app: str | None) -> tuple[Any, str]:
    if file.endswith(".py"):
        loaded = load_app(file)
        if loaded.workflow is None:
            raise ConfigError(f"{file} defines no 'workflow'")
        return loaded.workflow, file
    from covey.spec.load import load_spec_file

    if app is None:
        raise ConfigError("running a spec file needs --app naming the module or file with its agents")
    return load_spec_file(file), app


@click.command("run")
@click.argument("file")
@click.option("--input", "inputs", multiple=True, metavar="KEY=VALUE", help="Input field (repeatable).")
@click.option("--input-file", type=click.Path(dir_okay=False), help="JSON file holding the input.")
@click.option("--app", help="Module or .py file with the agents (when FILE is a spec).")
@click.option("--workers", default=2, show_default=True, help="Local workers to start.")
@click.option("--in-process", is_flag=True, help="Run workers in this process instead of child processes.")
@click.option("--run-id", help="Choose the run id (repeating one is a no-op).")
@click.option("--fast", is_flag=True, help="Non-durable mode: commits are not fsync'd.")
@click.pass_obj
def run_command(
    settings: Any,
    file: str,
    inputs: tuple[str, ...],
    input_file: str | None,
    app: str | None,
    workers: int,
    in_process: bool,
    run_id: str | None,
    fast: bool,
) -> None:
    """Run the workflow in FILE (a .py app with `workflow`, or a YAML/JSON spec) and print its output.

    On a shared store (PostgreSQL, Redis) it starts an engine node and the
    workers in this machine for the time of the run, beside any others.
    """
    workflow, app_ref = _workflow_and_app(file, app)
    run_input = parse_inputs(inputs, input_file)
    if not settings.embedded:
        if fast:
            raise ConfigError("--fast applies to the embedded SQLite store only")
        info = run_async(
            _run_shared(
                settings.store,
                settings.bus,
                workflow,
                run_input,
                app_ref,
                workers,
                in_process,
                run_id,
                retention_ms=settings.retention_ms,
            )
        )
    else:
        info = run_async(
            _run(
                settings.db_path,
                workflow,
                run_input,
                app_ref,
                workers,
                not in_process,
                run_id,
                durable=not fast,
                retention_ms=settings.retention_ms,
            )
        )
    if info.status == "succeeded":
        console.print(json_view(info.output))
        return
    console.print(f"[bold red]run {info.run_id} {info.status}[/bold red]")
    if info.error is not None:
        console.print(json_view(info.error))
    sys.exit(1)


async def _run(
    db: Path,
    workflow: Any,
    run_input: Any,
    app_ref: str,
    workers: int,
    processes: bool,
    run_id: str | None,
    *,
    durable: bool,
    retention_ms: int | None,
) -> RunInfo:
    async with Embedded(
        db, app=app_ref, workers=workers, processes=processes, durable=durable, retention_ms=retention_ms
    ) as covey:
        chosen = await covey.submit(workflow, run_input, run_id=run_id)
        started = time.time_ns() // 1_000_000
        waiting = asyncio.create_task(covey.wait(chosen))
        engine = covey.runner.engine
        with Live(console=console, refresh_per_second=10, transient=False) as live:
            while not waiting.done():
                covey.check_workers()
                live.update(progress_view(engine.runs.get(chosen), started, time.time_ns() // 1_000_000))
                await asyncio.wait({waiting}, timeout=0.1)
            live.update(progress_view(engine.runs.get(chosen), started, time.time_ns() // 1_000_000))
        _end_live_line()
        return waiting.result()


async def _run_shared(
    store_url: str,
    bus_url: str | None,
    workflow: Any,
    run_input: Any,
    app_ref: str,
    workers: int,
    in_process: bool,
    run_id: str | None,
    *,
    retention_ms: int | None,
) -> RunInfo:
    """One run on a shared store, with an engine node and workers of our own while it lasts."""
    async with (
        open_store(store_url) as store,
        open_bus_for(store_url, bus_url) as bus,
        StoreClient(store_url, bus_url) as client,
        AsyncExitStack() as stack,
    ):
        chosen = await client.submit(workflow, run_input, run_id=run_id)
        node = EngineNode(store, bus, retention_ms=retention_ms)
        background = [asyncio.create_task(node.run())]
        if in_process:
            link = StoreLink(store, bus)
            await link.sync_clock()
            stack.push_async_callback(link.close)
            background.append(asyncio.create_task(Worker(load_app(app_ref).registry, link).run()))
        else:
            children = [spawn_store_worker(app_ref, store_url, bus_url) for _ in range(workers)]
            stack.callback(_stop_children, children)
        stack.push_async_callback(_cancel, background)
        started = time.time_ns() // 1_000_000
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while True:
                history = await store.load_history(chosen)
                state = fold([event_from_json(e) for e in history], check=False) if history else None
                live.update(progress_view(state, started, time.time_ns() // 1_000_000))
                if state is not None and state.finished:
                    break
                await asyncio.sleep(0.25)
        _end_live_line()
        return await client.get_run(chosen)


def _end_live_line() -> None:
    """Off a terminal, Live leaves its last frame without a newline: end it, so the output starts a line."""
    if not console.is_terminal:
        console.line()


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        child.terminate()
    for child in children:
        child.wait()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


COMMANDS = [run_command]
