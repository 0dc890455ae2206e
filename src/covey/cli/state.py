"""``covey state get|put|update|delete|ls``: shared state from the command line."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

import click
import orjson

from covey.cli.render import console, json_view, state_table
from covey.client import StoreClient
from covey.errors import InputError, NotFound
from covey.runtime.eventloop import run_async
from covey.state.model import StateOp, check_namespace
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
    entry = run_async(settings.client().state_get(namespace, key))
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
    (entry,) = run_async(settings.client().state_apply([op]))
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
    (entry,) = run_async(settings.client().state_apply([op]))
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
    run_async(settings.client().state_apply([op]))
    console.print(f"{namespace}/{key} deleted")


@state_group.command("ls")
@click.argument("namespace")
@click.option("--prefix", default="", help="Only keys starting with this.")
@click.option("--after", default="", help="Start after this key (the last key of the previous page).")
@click.option("--limit", default=100, show_default=True)
@click.pass_obj
def ls_command(settings: Any, namespace: str, prefix: str, after: str, limit: int) -> None:
    """List the keys of NAMESPACE with their versions and values."""
    client = settings.client()
    entries = run_async(client.state_list(namespace, prefix=prefix, after=after, limit=limit))
    console.print(state_table(namespace, entries))


@state_group.command("watch")
@click.argument("namespace")
@click.option("--after", "after_seq", default=0, show_default=True, help="Resume after this change number.")
@click.option("--count", type=int, help="Stop after this many changes.")
@click.pass_obj
def watch_command(settings: Any, namespace: str, after_seq: int, count: int | None) -> None:
    """Print NAMESPACE's changes as they are committed, one JSON line each, from a cursor.

    Each line carries its ``seq``: start again with ``--after SEQ`` to resume
    exactly after the last change seen, missing none and repeating none.
    """
    run_async(_watch(settings.client(), check_namespace(namespace), after_seq, count))


async def _watch(client: StoreClient, namespace: str, cursor: int, count: int | None) -> None:
    seen = 0
    while count is None or seen < count:
        async with client.reader() as store:
            changes = await store.state_changes(namespace, cursor, 1000 if count is None else count - seen)
        for change in changes:
            print(orjson.dumps(asdict(change)).decode(), flush=True)
            cursor = change.seq
            seen += 1
        if not changes:
            await asyncio.sleep(WATCH_POLL_S)


#: How often ``covey state watch`` looks for new changes when it has seen them all, in seconds.
WATCH_POLL_S = 0.1

COMMANDS = [state_group]
