"""``covey serve`` (a runner, optionally with local workers) and ``covey worker``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

import click

from covey.cli.render import console
from covey.embedded import Embedded
from covey.runtime.runner import Runner
from covey.worker.process import run_worker

__all__ = ["COMMANDS"]


@click.command("serve")
@click.option("--app", help="Also start local workers for this app (module or .py file).")
@click.option("--workers", default=2, show_default=True, help="Local worker processes (with --app).")
@click.option("--fast", is_flag=True, help="Non-durable mode: commits are not fsync'd.")
@click.pass_obj
def serve_command(settings: Any, app: str | None, workers: int, fast: bool) -> None:
    """Run the engine for the store until interrupted: decide runs, fire timers, serve workers and commands."""
    asyncio.run(_serve(settings.db_path, app, workers, durable=not fast))


async def _serve(db: Path, app: str | None, workers: int, *, durable: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if app is not None:
        async with Embedded(db, app=app, workers=workers, processes=True, durable=durable):
            console.print(f"covey serving {db} with {workers} workers for {app}; Ctrl-C stops")
            await stop.wait()
    else:
        async with Runner(db, durable=durable) as runner:
            console.print(f"covey serving {db} on {runner.socket_path}; Ctrl-C stops")
            await stop.wait()


@click.command("worker")
@click.argument("app")
@click.option("--concurrency", type=int, help="Task slots (default: the sum of the agents' concurrency).")
@click.option("--labels", multiple=True, metavar="KEY=VALUE", help="Labels this worker offers (repeatable).")
@click.pass_obj
def worker_command(settings: Any, app: str, concurrency: int | None, labels: tuple[str, ...]) -> None:
    """Serve the agents of APP (a module or .py file) for the store's runner until SIGTERM."""
    offered = dict(item.partition("=")[::2] for item in labels)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_worker(app, settings.db_path, concurrency=concurrency, labels=offered))


COMMANDS = [serve_command, worker_command]
