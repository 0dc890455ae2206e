"""``covey state get|put|update|delete|ls``: shared state from the command line."""

from __future__ import annotations

from typing import Any

import click
import orjson

from covey.cli.render import console, json_view, state_table
from covey.client import LocalClient
from covey.errors import InputError, NotFound
from covey.runtime.eventloop import run_async
from covey.state.model import StateOp
from covey.state.reducers import REDUCERS

__all__ = ["COMMANDS"]


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"value is not JSON: {exc}", field="value") from None


@click.group("state")
def state_group() -> None:
    """Read and write shared state (a run's namespace is run:RUN_ID)."""


@state_group.command("get")
@click.argument("namespace")
@click.argument("key")
@click.pass_obj
def get_command(settings: Any, namespace: str, key: str) -> None:
    """Print KEY's value and version."""
    entry = run_async(LocalClient(settings.db_path).state_get(namespace, key))
    if entry is None:
        raise NotFound(f"no key {key!r} in namespace {namespace!r}")
    console.print(f"version {entry.version}")
    console.print(json_view(entry.value))


@state_group.command("put")
@click.argument("namespace")
@click.argument("key")
@click.argument("value")
@click.option("--if-version", type=int, help="Write only if KEY is at this version (0: only if absent).")
@click.pass_obj
def put_command(settings: Any, namespace: str, key: str, value: str, if_version: int | None) -> None:
    """Set KEY to the JSON VALUE."""
    op = StateOp.from_json(
        {"op": "put", "namespace": namespace, "key": key, "value": _json(value), "if_version": if_version}
    )
    (entry,) = run_async(LocalClient(settings.db_path).state_apply([op]))
    console.print(f"{namespace}/{key} is at version {entry.version}")


@state_group.command("update")
@click.argument("namespace")
@click.argument("key")
@click.argument("reducer", type=click.Choice(sorted(REDUCERS)))
@click.argument("value")
@click.pass_obj
def update_command(settings: Any, namespace: str, key: str, reducer: str, value: str) -> None:
    """Apply REDUCER with the JSON VALUE to KEY, atomically."""
    op = StateOp.from_json(
        {"op": "update", "namespace": namespace, "key": key, "value": _json(value), "reducer": reducer}
    )
    (entry,) = run_async(LocalClient(settings.db_path).state_apply([op]))
    console.print(f"{namespace}/{key} is at version {entry.version}")
    console.print(json_view(entry.value))


@state_group.command("delete")
@click.argument("namespace")
@click.argument("key")
@click.option("--if-version", type=int, help="Delete only if KEY is at this version.")
@click.pass_obj
def delete_command(settings: Any, namespace: str, key: str, if_version: int | None) -> None:
    """Delete KEY."""
    op = StateOp.from_json({"op": "delete", "namespace": namespace, "key": key, "if_version": if_version})
    run_async(LocalClient(settings.db_path).state_apply([op]))
    console.print(f"{namespace}/{key} deleted")


@state_group.command("ls")
@click.argument("namespace")
@click.option("--prefix", default="", help="Only keys starting with this.")
@click.option("--limit", default=100, show_default=True)
@click.pass_obj
def ls_command(settings: Any, namespace: str, prefix: str, limit: int) -> None:
    """List the keys of NAMESPACE with their versions and values."""
    entries = run_async(LocalClient(settings.db_path).state_list(namespace, prefix=prefix, limit=limit))
    console.print(state_table(namespace, entries))


COMMANDS = [state_group]
