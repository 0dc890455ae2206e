"""A watch that resyncs by itself when its cursor is older than what the change feed keeps.

A namespace's feed keeps its latest changes only, so a watcher away for long
gets :class:`~covey.errors.CursorExpired`. :func:`resyncing` turns that into
data: it lists the namespace (a :class:`StateSnapshot`, every key's value
now), then watches again from the error's ``head``, the namespace's last
change when the error was raised. Every change up to it had committed before
the listing began, so the listing holds them; those committed while it was
being read are recognized by their versions and skipped. Nothing is missed
and nothing seen twice. The watcher replaces its view with the snapshot and
goes on applying changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from covey.errors import CursorExpired
from covey.state.model import StateChange, StateEntry

__all__ = ["LIST_PAGE", "StateSnapshot", "list_all", "resyncing"]

#: Keys read per page while taking a snapshot.
LIST_PAGE = 1000

#: Reads one page of a namespace: (namespace, after key, limit) -> entries in key order.
ListPage = Callable[[str, str, int], Awaitable[list[StateEntry]]]
#: Watches a namespace from a cursor.
Watch = Callable[[int], AsyncIterator[StateChange]]


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """Every key of a namespace as a resyncing watch found it; changes after ``cursor`` follow.

    A watcher replaces what it holds of the namespace with ``entries``: keys
    deleted while it was away are simply absent.
    """

    namespace: str
    cursor: int
    entries: list[StateEntry]


async def list_all(namespace: str, page: ListPage) -> list[StateEntry]:
    """Every key of ``namespace``, read a page at a time."""
    entries: list[StateEntry] = []
    while batch := await page(namespace, entries[-1].key if entries else "", LIST_PAGE):
        entries += batch
        if len(batch) < LIST_PAGE:
            break
    return entries


async def resyncing(
    namespace: str, after: int, watch: Watch, page: ListPage
) -> AsyncIterator[StateChange | StateSnapshot]:
    """The changes of ``watch`` from ``after``, with a :class:`StateSnapshot` wherever the feed had moved on."""
    cursor = after
    listed: dict[str, int] = {}
    """The versions the last snapshot gave: a change at or below one is in the snapshot already."""
    while True:
        try:
            async for change in watch(cursor):
                cursor = change.seq
                if change.version <= listed.get(change.key, 0):
                    continue
                listed.pop(change.key, None)  # past the snapshot for this key: nothing more to skip
                yield change
            return
        except CursorExpired as gone:
            # The head was read before the listing starts: every change up to it is in the listing.
            # Without one, oldest - 1 is as safe, with older changes to skip by version.
            cursor = gone.head if gone.head is not None else gone.oldest - 1
            entries = await list_all(namespace, page)
            listed = {entry.key: entry.version for entry in entries}
            yield StateSnapshot(namespace, cursor, entries)
