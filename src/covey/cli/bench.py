"""``covey bench``: covey's workloads next to the bounds of this machine and its peers.

Not part of the test suite. Runs W1, W1b, W2, W3 and W4 on the embedded
store with worker processes and durable commits, one durable SQLite commit as
the physical bound, and LangGraph when the ``bench`` extra is installed; prints
a table with ratios against the targets, or ``--json`` lines.
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

from covey.bench.config import FULL, QUICK, Env
from covey.bench.figures import Figure
from covey.bench.report import Comparison, compare
from covey.bench.suite import parse_only, persists, run_suite
from covey.cli.render import console
from covey.errors import ConfigError
from covey.store.open import sqlite_path

__all__ = ["COMMANDS", "bench_command", "bench_directory"]

_BUSES = ("", "none", "inprocess", "memory://")


def bench_directory(store_url: str) -> Path:
    """Where the bench writes: the directory of the SQLite URL's file (the file itself is not touched).

    Raises:
        ConfigError: for a store or scheme the bench cannot measure yet.
    """
    if "://" in store_url and store_url.partition("://")[0] != "sqlite":
        scheme = store_url.partition("://")[0]
        raise ConfigError(
            f"the {scheme!r} store is not available to covey bench yet; only the embedded store is "
            "(--store sqlite:///PATH, whose directory holds the bench's files)"
        )
    directory = Path(sqlite_path(store_url) or ".").parent
    if not directory.is_dir():
        raise ConfigError(f"no such directory for the bench's files: {directory}")
    return directory


@click.command("bench")
@click.option(
    "--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="covey worker processes."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line, nothing else.")
@click.option("--quick", is_flag=True, help="Small sizes: a smoke run of every code path.")
@click.option("--only", default=None, metavar="W1,W2,...", help="Run only these workloads.")
@click.option("--no-peers", is_flag=True, help="Skip LangGraph even when it is installed.")
@click.pass_context
def bench_command(
    ctx: click.Context, workers: int, as_json: bool, quick: bool, only: str | None, no_peers: bool
) -> None:
    """Measure covey (W1 throughput, W1b map, W2 hand-off, W3 fan-out, W4 sequence) against its bounds.

    Every covey step is committed with fsync before the next starts. The
    bench writes fresh files in a temporary directory beside the --store file
    and removes them afterwards.
    """
    bus = str(getattr(ctx.obj, "bus", None) or "")
    if bus.lower() not in _BUSES:
        raise ConfigError(f"the bus {bus!r} is not available to covey bench yet; only the in-process one is")
    workloads = parse_only(only)
    base = bench_directory(str(getattr(ctx.obj, "store", None) or "sqlite:///covey.db"))
    directory = Path(tempfile.mkdtemp(prefix=".covey-bench-", dir=base))
    try:
        if as_json:
            env = Env(directory, workers=workers, sizes=QUICK if quick else FULL)
            for figure in run_suite(env, workloads, with_peers=not no_peers):
                click.echo(orjson.dumps(figure.to_json()).decode())
            return
        figures: list[Figure] = []
        with console.status("covey bench: starting") as status:
            env = Env(
                directory,
                workers=workers,
                sizes=QUICK if quick else FULL,
                say=lambda text: status.update(f"covey bench: {text}"),
            )
            lines = persists(env, with_peers=not no_peers)
            figures.extend(run_suite(env, workloads, with_peers=not no_peers))
        _print_report(figures, lines, workers=workers, quick=quick, directory=base, peers_wanted=not no_peers)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _value(figure: Figure) -> str:
    if figure.metric.endswith("ms"):
        return f"{figure.value:,.1f}"
    return f"{figure.value:,.0f}"


def _comparison_text(comparison: Comparison) -> tuple[str, str]:
    ratio = f"{comparison.ratio:.2f}x {comparison.against}" if comparison.ratio is not None else ""
    if comparison.met is None:
        verdict = comparison.target and f"{comparison.target} ?"
    elif comparison.met:
        verdict = f"[green]{comparison.target} met[/green]"
    else:
        verdict = f"[red]{comparison.target} MISSED[/red]"
    return ratio, verdict


def _print_report(
    figures: list[Figure],
    lines: list[str],
    *,
    workers: int,
    quick: bool,
    directory: Path,
    peers_wanted: bool,
) -> None:
    comparisons = compare(figures)
    table = Table(title=f"covey bench{' --quick' if quick else ''}", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("workload")
    table.add_column("system")
    table.add_column("metric")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("vs")
    table.add_column("target")
    table.add_column("note")
    previous = ""
    for figure in figures:
        mine = [_comparison_text(c) for c in comparisons if c.figure is figure]
        ratios = "\n".join(r for r, _ in mine if r)
        targets = "\n".join(t for _, t in mine if t)
        table.add_row(
            figure.workload if figure.workload != previous else "",
            figure.system,
            figure.metric,
            _value(figure),
            f"{figure.n:,}" if figure.n else "",
            ratios,
            targets,
            figure.note,
            end_section=False,
        )
        previous = figure.workload
    # Piped output has no width: give the table room rather than wrap every cell.
    out = console if console.is_terminal else Console(width=130)
    out.print(table)
    out.print(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{workers} covey worker processes, files in {directory.resolve()}",
        highlight=False,
    )
    for line in lines:
        out.print(f"  {line}", highlight=False, markup=False)
    if not peers_wanted:
        out.print("  langgraph: skipped (--no-peers)", highlight=False, markup=False)
    elif not any(line.startswith("langgraph") for line in lines):
        out.print(
            f"  langgraph: not installed, not measured (install: {Path(sys.executable).name} -m pip install "
            "'covey[bench]')",
            highlight=False,
            markup=False,
        )


COMMANDS = [bench_command]
