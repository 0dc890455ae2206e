"""``covey serve`` (a runner, optionally with local workers), ``covey worker`` and ``covey timekeeper``."""

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
from covey.runtime.node import EngineNode
from covey.runtime.runner import Runner
from covey.store.open import masked, open_bus_for, open_store
from covey.worker.process import run_store_worker, run_worker, spawn_store_worker

__all__ = ["COMMANDS"]


@click.command("serve")
@click.option("--app", help="Also start local workers for this app (module or .py file).")
@click.option("--workers", default=2, show_default=True, help="Local worker processes (with --app).")
@click.option("--fast", is_flag=True, help="Non-durable mode: commits are not fsync'd.")
@click.pass_obj
def serve_command(settings: Any, app: str | None, workers: int, fast: bool) -> None:
    """Run the engine for the store until interrupted: decide runs, fire timers, serve workers and commands.

    On a shared store (PostgreSQL, Redis) this is an engine node, like
    ``covey timekeeper``, plus local worker processes with ``--app``.
    """
    if not settings.embedded:
        if fast:
            raise ConfigError("--fast applies to the embedded SQLite store only")
        run_async(_serve_shared(settings.store, settings.bus, app, workers, settings.retention_ms))
        return
    run_async(_serve(settings.db_path, app, workers, durable=not fast, retention_ms=settings.retention_ms))


async def _serve_shared(
    store_url: str, bus_url: str | None, app: str | None, workers: int, retention_ms: int | None
) -> None:
    children = [spawn_store_worker(app, store_url, bus_url) for _ in range(workers)] if app else []
    try:
        await _run_node(
            store_url,
            bus_url,
            shard_ttl_ms=10_000,
            retention_ms=retention_ms,
            announce=f"and {len(children)} workers",
        )
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait()


async def _run_node(
    store_url: str, bus_url: str | None, *, shard_ttl_ms: int, retention_ms: int | None, announce: str = ""
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_store(store_url) as store, open_bus_for(store_url, bus_url) as bus:
        node = EngineNode(store, bus, shard_ttl_ms=shard_ttl_ms, retention_ms=retention_ms)
        serving = asyncio.create_task(node.run())
        await asyncio.wait(
            {serving, asyncio.create_task(node.ready.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if not serving.done():
            held = len(node.keeper.held) if node.keeper else 0
            console.print(
                f"covey engine node on {masked(store_url)} holding {held} shards {announce}; Ctrl-C stops"
            )
            await asyncio.wait(
                {serving, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


@click.command("timekeeper")
@click.option(
    "--shard-ttl",
    default=10.0,
    show_default=True,
    help="Seconds a dead node's shards wait before others take them.",
)
@click.pass_obj
def timekeeper_command(settings: Any, shard_ttl: float) -> None:
    """Run an engine node on a shared store until SIGTERM: decide its share of the runs, fire timers.

    Run any number, on any machines: they share the runs by shard, and when
    one dies the others take its shards once their leases end.
    """
    if settings.embedded:
        raise ConfigError(
            "the embedded SQLite store has one runner, which is its timekeeper: use 'covey serve' "
            "(or 'covey run'); 'covey timekeeper' is for PostgreSQL and Redis stores"
        )
    if shard_ttl <= 0:
        raise ConfigError(f"--shard-ttl must be positive, got {shard_ttl}")
    run_async(
        _run_node(
            settings.store,
            settings.bus,
            shard_ttl_ms=int(shard_ttl * 1000),
            retention_ms=settings.retention_ms,
        )
    )


async def _serve(db: Path, app: str | None, workers: int, *, durable: bool, retention_ms: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if app is not None:
        async with Embedded(
            db, app=app, workers=workers, processes=True, durable=durable, retention_ms=retention_ms
        ):
            console.print(f"covey serving {db} with {workers} workers for {app}; Ctrl-C stops")
            await stop.wait()
    else:
        async with Runner(db, durable=durable, retention_ms=retention_ms) as runner:
            console.print(f"covey serving {db} on {runner.socket_path}; Ctrl-C stops")
            await stop.wait()


@click.command("worker")
@click.argument("app")
@click.option("--concurrency", type=int, help="Task slots (default: the sum of the agents' concurrency).")
@click.option("--labels", multiple=True, metavar="KEY=VALUE", help="Labels this worker offers (repeatable).")
@click.option("--grace", default=10.0, show_default=True, help="Seconds a stop waits for running tries.")
@click.option(
    "--lease",
    type=click.FloatRange(min=0.1, max=3600),
    default=30.0,
    show_default=True,
    help="Seconds a claimed task stays this worker's between heartbeats (shared stores; the runner sets it embedded).",
)
@click.pass_obj
def worker_command(
    settings: Any, app: str, concurrency: int | None, labels: tuple[str, ...], grace: float, lease: float
) -> None:
    """Serve the agents of APP (a module or .py file) until SIGTERM.

    On the embedded store it works for the runner that holds the file; on a
    shared store (PostgreSQL, Redis) it claims from the store directly, from
    any machine, woken by the bus.
    """
    offered = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--labels takes key=value, got {item!r}")
        offered[key] = value
    with contextlib.suppress(KeyboardInterrupt):
        if settings.embedded:
            run_async(
                run_worker(app, settings.db_path, concurrency=concurrency, labels=offered, grace_s=grace)
            )
        else:
            run_async(
                run_store_worker(
                    app,
                    settings.store,
                    settings.bus,
                    concurrency=concurrency,
                    labels=offered,
                    grace_s=grace,
                    lease_ms=int(lease * 1000),
                )
            )
    _exit_past_stuck_agents()


def _exit_past_stuck_agents() -> None:
    """Leave even if a sync agent's thread still runs: its lease is released or expired, so covey re-runs it."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


COMMANDS = [serve_command, worker_command, timekeeper_command]
