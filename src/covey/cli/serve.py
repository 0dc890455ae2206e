"""``covey serve`` (a runner, optionally with local workers) and ``covey worker``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from covey.cli.render import console
from covey.embedded import Embedded
from covey.errors import ConfigError
from covey.runtime.eventloop import run_async
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
    run_async(_serve(settings.db_path, app, workers, durable=not fast))


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
@click.option("--grace", default=10.0, show_default=True, help="Seconds a stop waits for running tries.")
@click.pass_obj
def worker_command(
    settings: Any, app: str, concurrency: int | None, labels: tuple[str, ...], grace: float
) -> None:
    """Serve the agents of APP (a module or .py file) for the store's runner until SIGTERM."""
    offered = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--labels takes key=value, got {item!r}")
        offered[key] = value
    with contextlib.suppress(KeyboardInterrupt):
        run_async(run_worker(app, settings.db_path, concurrency=concurrency, labels=offered, grace_s=grace))
    _exit_past_stuck_agents()


def _exit_past_stuck_agents() -> None:
    """Leave even if a sync agent's thread still runs: its lease is released or expired, so covey re-runs it."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


COMMANDS = [serve_command, worker_command]
