"""The ``covey`` command: one group, one module per family of commands.

Global options: ``--store URL`` (or ``COVEY_STORE``), default
``sqlite:///covey.db``, and ``--bus URL`` (or ``COVEY_BUS``), default the
store's own server. Every covey error becomes a one-line message in red
and exit code 2 (75, "try again later", when covey is too busy to accept a
run); a failed run exits 1.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from covey.cli.render import console
from covey.client import StoreClient, connect
from covey.errors import CoveyError, TooBusy
from covey.runtime.retention import DEFAULT_RETENTION, parse_retention
from covey.store.open import backend_of, sqlite_path

__all__ = ["cli", "main"]

DEFAULT_STORE = "sqlite:///covey.db"
#: Exit status of a command refused because covey is too busy: try again later (sysexits' EX_TEMPFAIL).
EXIT_TOO_BUSY = 75


class Settings:
    """Options shared by every command."""

    def __init__(self, store: str, bus: str | None = None, retention: str = DEFAULT_RETENTION) -> None:
        self.store = store
        self.bus = bus
        self.retention_ms = parse_retention(retention)
        """How long the engine this command runs keeps finished runs; None keeps them."""

    @property
    def embedded(self) -> bool:
        """Whether the store is the embedded SQLite one (one runner per file)."""
        return backend_of(self.store) == "sqlite"

    def client(self) -> StoreClient:
        """A client for the chosen store and bus."""
        return connect(self.store, self.bus)

    @property
    def db_path(self) -> Path:
        """The embedded store's file."""
        return Path(sqlite_path(self.store))


def store_option(command: Any) -> Any:
    """Accept ``--store URL`` and ``--bus URL`` after the command name too (``covey worker APP --store URL``)."""

    def keep(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            setattr(ctx.find_object(Settings), str(param.name).removesuffix("_override"), value)

    for name, text in (
        ("--bus", "Bus URL (overrides the global one)."),
        ("--store", "Store URL (overrides the global one)."),
    ):
        command = click.option(name, f"{name[2:]}_override", expose_value=False, callback=keep, help=text)(
            command
        )
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", envvar="COVEY_STORE", default=DEFAULT_STORE, show_default=True, help="Store URL.")
@click.option("--bus", envvar="COVEY_BUS", help="Bus URL (default: the store's own server).")
@click.option(
    "--retention",
    envvar="COVEY_RETENTION",
    default=DEFAULT_RETENTION,
    show_default=True,
    help="How long finished runs are kept before the engine purges them (7d, 12h, 30m, or forever).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what covey does.")
@click.version_option(package_name="covey")
@click.pass_context
def cli(ctx: click.Context, store: str, bus: str | None, retention: str, verbose: bool) -> None:
    """covey: durable workflows for AI agents, embedded or distributed."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        ctx.obj = Settings(store, bus, retention)
    except CoveyError as exc:
        raise click.BadParameter(str(exc), param_hint="--retention / COVEY_RETENTION") from None


def _register() -> None:
    from covey.cli import bench, control, inspect, run, serve, state

    for module in (run, serve, control, inspect, state, bench):
        for command in module.COMMANDS:
            if isinstance(command, click.Group):  # covey state get ... --store URL
                for name, sub in list(command.commands.items()):
                    command.commands[name] = store_option(sub)
            cli.add_command(store_option(command))


_register()


def main() -> None:
    """Entry point: run the command, turning covey errors into clear messages."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        console.print("[red]aborted[/red]")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except CoveyError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        sys.exit(EXIT_TOO_BUSY if isinstance(exc, TooBusy) else 2)
