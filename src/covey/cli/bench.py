"""``covey bench``: covey's workloads next to the bounds of this machine and its peers.

Not part of the test suite. Runs W1, W1b, W2, W3 and W4 on each backend
chosen (the embedded store, PostgreSQL, Redis, with or without RabbitMQ) with
worker processes and durable commits, the physical bounds of those servers,
and the peers a user would pick instead (LangGraph, Celery, Dramatiq, DBOS)
when the ``bench`` extra is installed; prints the figures side by side with
ratios against the targets, or ``--json`` lines.
"""

from __future__ import annotations

import os
import platform
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

import click
import orjson
from rich import box
from rich.console import Console
from rich.table import Table

from covey.bench.backends import (
    BACKENDS,
    DEFAULT_AMQP,
    DEFAULT_POSTGRES,
    DEFAULT_REDIS,
    Backend,
    Servers,
    backend_named,
    backend_of_urls,
    parse_backends,
)
from covey.bench.config import FULL, QUICK, Env
from covey.bench.figures import Figure
from covey.bench.report import Comparison, compare
from covey.bench.suite import parse_only, persists, run_suite, wanted_peers
from covey.cli.render import console
from covey.errors import ConfigError
from covey.store.open import backend_of, masked, sqlite_path

__all__ = ["COMMANDS", "bench_command", "bench_directory"]

#: Workloads printed side by side, one column per system and store.
SIDE_BY_SIDE = ("W1", "W1b", "W2", "W3", "W4")


def bench_directory(store_url: str) -> Path:
    """Where the bench writes: the directory of a SQLite URL's file (the file itself is not touched).

    For a shared store the bench writes only its logs, in the system's temporary directory.

    Raises:
        ConfigError: when the directory does not exist.
    """
    if "://" in store_url and store_url.partition("://")[0] != "sqlite":
        return Path(tempfile.gettempdir())
    directory = Path(sqlite_path(store_url) or ".").parent
    if not directory.is_dir():
        raise ConfigError(f"no such directory for the bench's files: {directory}")
    return directory


def _backends(ctx: click.Context, names: str | None, servers: Servers) -> list[Backend]:
    if names:
        return parse_backends(",".join(BACKENDS) if names.strip().lower() == "all" else names, servers)
    store = str(getattr(ctx.obj, "store", None) or "sqlite:///covey.db")
    bus = getattr(ctx.obj, "bus", None)
    if backend_of(store) == "sqlite":
        if bus and str(bus).lower() not in ("none", "inprocess", "memory://"):
            raise ConfigError(f"the embedded store runs with its in-process bus, not {masked(str(bus))}")
        return [backend_named("sqlite", servers)]
    return [backend_of_urls(store, str(bus) if bus else None)]


@click.command("bench")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Worker processes (covey and peers).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line, nothing else.")
@click.option("--quick", is_flag=True, help="Small sizes: a smoke run of every code path.")
@click.option("--only", default=None, metavar="W1,W2,...", help="Run only these workloads.")
@click.option(
    "--backends",
    default=None,
    metavar="LIST",
    help=f"Measure these, side by side: {','.join(BACKENDS)} or all (default: the --store given).",
)
@click.option(
    "--postgres-url", default=DEFAULT_POSTGRES, show_default=True, help="PostgreSQL server for --backends."
)
@click.option("--redis-url", default=DEFAULT_REDIS, show_default=True, help="Redis server for --backends.")
@click.option("--amqp-url", default=DEFAULT_AMQP, show_default=True, help="RabbitMQ server for --backends.")
@click.option("--no-peers", is_flag=True, help="Skip the peers (LangGraph, Celery, Dramatiq, DBOS).")
@click.pass_context
def bench_command(
    ctx: click.Context,
    workers: int,
    as_json: bool,
    quick: bool,
    only: str | None,
    backends: str | None,
    postgres_url: str,
    redis_url: str,
    amqp_url: str,
    no_peers: bool,
) -> None:
    """Measure covey (W1 throughput, W1b map, W2 hand-off, W3 fan-out, W4 sequence) against its bounds and peers.

    Every covey step is committed before the next starts. On the embedded
    store the bench writes fresh files in a temporary directory beside the
    --store file; on PostgreSQL and Redis each workload gets a fresh schema or
    key prefix, with one covey timekeeper and --workers worker processes. All
    of it is removed afterwards.
    """
    servers = Servers(postgres=postgres_url, redis=redis_url, amqp=amqp_url)
    chosen = _backends(ctx, backends, servers)
    workloads = parse_only(only)
    base = bench_directory(str(getattr(ctx.obj, "store", None) or "sqlite:///covey.db"))
    directory = Path(tempfile.mkdtemp(prefix=".covey-bench-", dir=base))
    sizes = QUICK if quick else FULL
    try:
        if as_json:
            env = Env(directory, workers=workers, sizes=sizes, backend=chosen[0], servers=servers)
            for figure in run_suite(env, workloads, chosen, with_peers=not no_peers):
                click.echo(orjson.dumps(figure.to_json()).decode())
            return
        figures: list[Figure] = []
        with console.status("covey bench: starting") as status:
            env = Env(
                directory,
                workers=workers,
                sizes=sizes,
                backend=chosen[0],
                servers=servers,
                say=lambda text: status.update(f"covey bench: {text}"),
            )
            lines = persists(env, chosen, with_peers=not no_peers, workloads=workloads)
            for figure in run_suite(env, workloads, chosen, with_peers=not no_peers):
                figures.append(figure)
        _print_report(figures, lines, chosen, workers=workers, quick=quick, peers_wanted=not no_peers)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _value(value: float, metric: str) -> str:
    if metric.endswith("ms"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _verdict(comparison: Comparison) -> str:
    if comparison.met is None:
        return comparison.target and f"{comparison.target} ?"  # no target: the ratio is for reference
    if comparison.met:
        return f"[green]{comparison.target} met[/green]"
    return f"[red]{comparison.target} MISSED[/red]"


def _side_by_side(figures: list[Figure], quick: bool) -> Table:
    columns = list(dict.fromkeys((f.system, f.store) for f in figures if f.workload in SIDE_BY_SIDE))
    rows = list(dict.fromkeys((f.workload, f.metric) for f in figures if f.workload in SIDE_BY_SIDE))
    cells = {(f.workload, f.metric, f.system, f.store): f for f in figures}
    table = Table(title=f"covey bench{' --quick' if quick else ''}", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("workload")
    table.add_column("metric")
    for system, store in columns:
        table.add_column(f"{system}\n{store}", justify="right", no_wrap=True)
    for workload, metric in rows:
        values = []
        for system, store in columns:
            found = cells.get((workload, metric, system, store))
            values.append(_value(found.value, metric) if found else "")
        table.add_row(workload, metric, *values)
    return table


def _others(figures: list[Figure]) -> Table:
    table = Table(title="bounds and other workloads", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("workload", "system", "store", "metric"):
        table.add_column(name)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("note")
    for f in figures:
        if f.workload not in SIDE_BY_SIDE:
            table.add_row(
                f.workload, f.system, f.store, f.metric, _value(f.value, f.metric), f"{f.n:,}", f.note
            )
    return table


def _targets(comparisons: list[Comparison]) -> Table:
    table = Table(
        title="targets, and other ratios for reference (within this run)", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for name in ("covey on", "workload", "metric", "vs", "ratio", "target"):
        table.add_column(name)
    for c in comparisons:
        if not c.target and c.ratio is None:
            continue
        ratio = f"{c.ratio:.2f}x" if c.ratio is not None else ""
        table.add_row(c.figure.store, c.figure.workload, c.figure.metric, c.against, ratio, _verdict(c))
    return table


def _print_report(
    figures: list[Figure],
    lines: list[str],
    backends: list[Backend],
    *,
    workers: int,
    quick: bool,
    peers_wanted: bool,
) -> None:
    # Piped output has no width: give the tables room rather than wrap every cell.
    out = console if console.is_terminal else Console(width=180)
    out.print(_side_by_side(figures, quick))
    if any(f.workload not in SIDE_BY_SIDE for f in figures):
        out.print(_others(figures))
    out.print(_targets(compare(figures)))
    out.print(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{workers} worker processes per system; backends: {', '.join(b.name for b in backends)}",
        highlight=False,
    )
    for line in lines:
        out.print(f"  {line}", highlight=False, markup=False)
    if not peers_wanted:
        out.print("  peers: skipped (--no-peers)", highlight=False, markup=False)
        return
    missing = [peer.label for peer in wanted_peers(backends) if peer.available() is None]
    if missing:
        out.print(
            f"  {', '.join(missing)}: not installed, not measured (install: {Path(sys.executable).name} -m pip "
            "install 'covey[bench]')",
            highlight=False,
            markup=False,
        )


COMMANDS = [bench_command]
