"""``covey state get|put|update|delete|ls``: shared state from the command line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import asdict
from typing import Any

import click
import orjson

from covey.cli.render import console, json_view, state_table
from covey.client import StoreClient
from covey.errors import InputError, NotFound
from covey.runtime.eventloop import run_async
from covey.state.model import StateChange, StateEntry, StateOp, check_namespace
from covey.state.reducers import REDUCERS
from covey.state.resync import StateSnapshot, resyncing

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
@click.option(
    "--resync",
    is_flag=True,
    help="If the feed no longer keeps the changes after the cursor, print a snapshot and go on from it.",
)
@click.pass_obj
def watch_command(settings: Any, namespace: str, after_seq: int, count: int | None, resync: bool) -> None:
    """Print NAMESPACE's changes as they are committed, one JSON line each, from a cursor.

    Each line carries its ``seq``: start again with ``--after SEQ`` to resume
    exactly after the last change seen, missing none and repeating none. A
    feed keeps each namespace's latest changes (``COVEY_FEED_KEEP``, 10,000 by
    default); from an older cursor the command fails with the oldest change
    kept, or with ``--resync`` prints one line ``{"snapshot": {"namespace",
    "cursor", "entries"}}`` holding every key now, then the changes after it.
    """
    run_async(_watch(settings.client(), check_namespace(namespace), after_seq, count, resync))


async def _watch(client: StoreClient, namespace: str, cursor: int, count: int | None, resync: bool) -> None:
    seen = 0

    async def changes(after: int) -> AsyncIterator[StateChange]:
        while True:
            async with client.reader() as store:
                batch = await store.state_changes(namespace, after, 1000)
            for change in batch:
                after = change.seq
                yield change
            if not batch:
                await asyncio.sleep(WATCH_POLL_S)

    def page(ns: str, after_key: str, limit: int) -> Awaitable[list[StateEntry]]:
        return client.state_list(ns, after=after_key, limit=limit)

    stream = resyncing(namespace, cursor, changes, page) if resync else changes(cursor)
    async for item in stream:
        if isinstance(item, StateSnapshot):
            print(orjson.dumps({"snapshot": asdict(item)}).decode(), flush=True)
            continue
        print(orjson.dumps(asdict(item)).decode(), flush=True)
        seen += 1
        if count is not None and seen >= count:
            return


#: How often ``covey state watch`` looks for new changes when it has seen them all, in seconds.
WATCH_POLL_S = 0.1

COMMANDS = [state_group]
