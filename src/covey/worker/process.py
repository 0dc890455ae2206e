"""Worker processes: the ``covey worker`` entry point and starting local ones.

A worker process imports its app, connects (to the embedded runner's socket,
or straight to a shared store and its bus), serves until SIGTERM or SIGINT
(which drain and release its leases), and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from pathlib import Path

from covey.agents.app import load_app
from covey.errors import ConfigError
from covey.runtime.lockfile import find_runner_socket
from covey.store.open import open_bus_for, open_store
from covey.worker.socket_link import SocketLink
from covey.worker.store_link import StoreLink
from covey.worker.worker import Worker

__all__ = ["run_store_worker", "run_worker", "spawn_store_worker", "spawn_worker"]


async def run_worker(
    app_ref: str,
    db_path: Path,
    *,
    concurrency: int | None = None,
    labels: dict[str, str] | None = None,
    heartbeat_s: float | None = None,
    grace_s: float = 10.0,
) -> int:
    """Serve ``app_ref``'s agents for the runner of ``db_path`` until told to stop; returns tries completed."""
    app = load_app(app_ref)
    socket_path = find_runner_socket(db_path)
    if socket_path is None:
        raise ConfigError(
            f"no covey runner holds {db_path}; start one with 'covey serve --store sqlite:///{db_path}'"
        )
    async with SocketLink(socket_path) as link:
        beat = heartbeat_s if heartbeat_s is not None else max(0.05, link.lease_ms / 3000)
        worker = Worker(
            app.registry, link, concurrency=concurrency, labels=labels, heartbeat_s=beat, grace_s=grace_s
        )
        return await _serve_until_signalled(worker)


async def run_store_worker(
    app_ref: str,
    store_url: str,
    bus_url: str | None = None,
    *,
    concurrency: int | None = None,
    labels: dict[str, str] | None = None,
    lease_ms: int = 30_000,
    heartbeat_s: float | None = None,
    grace_s: float = 10.0,
) -> int:
    """Serve ``app_ref``'s agents straight on a shared store (PostgreSQL, Redis) until told to stop."""
    app = load_app(app_ref)
    async with open_store(store_url) as store, open_bus_for(store_url, bus_url) as bus:
        link = StoreLink(store, bus, lease_ms=lease_ms)
        await link.sync_clock()
        beat = heartbeat_s if heartbeat_s is not None else max(0.05, lease_ms / 3000)
        worker = Worker(
            app.registry, link, concurrency=concurrency, labels=labels, heartbeat_s=beat, grace_s=grace_s
        )
        try:
            return await _serve_until_signalled(worker)
        finally:
            await link.close()


async def _serve_until_signalled(worker: Worker) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return worker.completed


def spawn_worker(app_ref: str, db_path: Path, *, concurrency: int | None = None) -> subprocess.Popen[bytes]:
    """Start ``covey worker`` for a local runner in a child process."""
    command = [sys.executable, "-m", "covey", "worker", app_ref, "--store", f"sqlite:///{db_path}"]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL)


def spawn_store_worker(
    app_ref: str, store_url: str, bus_url: str | None = None, *, concurrency: int | None = None
) -> subprocess.Popen[bytes]:
    """Start ``covey worker`` on a shared store in a child process."""
    command = [sys.executable, "-m", "covey", "worker", app_ref, "--store", store_url]
    if bus_url is not None:
        command += ["--bus", bus_url]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL)
