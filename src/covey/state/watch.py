"""One change-feed subscription per namespace for a whole worker process, fanned out to its agents.

A thousand agents watching one namespace in four worker processes cost the
store four subscriptions, not a thousand: the seed's hierarchical sync, two
levels. Each local subscriber keeps its own cursor; the hub reads the feed
from the lowest cursor among them and hands each subscriber the changes after
its own, so a late joiner gets its backlog and nobody sees a change twice.

A subscriber whose cursor is older than what the namespace's feed still keeps
gets :class:`~covey.errors.CursorExpired` from its iterator (it resyncs from a
snapshot); the others read on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from covey.errors import CursorExpired
from covey.state.model import StateChange

__all__ = ["WatchHub"]

log = logging.getLogger("covey.watch")

Fetch = Callable[[str, int, float], Awaitable[list[StateChange]]]

#: How long one read of the feed waits for a change before asking again, in seconds.
POLL_WAIT_S = 1.0


@dataclass(slots=True, eq=False)
class _Subscriber:
    cursor: int
    queue: asyncio.Queue[StateChange | CursorExpired] = field(default_factory=asyncio.Queue)


class WatchHub:
    """Fans a namespace's change feed out to local subscribers; ``fetch`` long-polls the feed."""

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        """How the feed is read (the worker link's long poll)."""
        self._subscribers: dict[str, set[_Subscriber]] = {}
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._reading_from: dict[str, int] = {}
        self.fetches = 0
        """Reads of the feed this hub made (one subscription's worth, whatever the number of subscribers)."""

    async def subscribe(self, namespace: str, after: int = 0) -> AsyncIterator[StateChange]:
        """Every change of ``namespace`` after ``after``, in commit order, until the caller stops iterating."""
        subscriber = _Subscriber(after)
        self._subscribers.setdefault(namespace, set()).add(subscriber)
        pump = self._pumps.get(namespace)
        if pump is None or pump.done() or after < self._reading_from.get(namespace, 0):
            self._restart(namespace)  # none reading, or an older cursor than the read in flight
        try:
            while True:
                item = await subscriber.queue.get()
                if isinstance(item, CursorExpired):
                    raise item
                yield item
        finally:
            subscribers = self._subscribers.get(namespace, set())
            subscribers.discard(subscriber)
            if not subscribers:
                self._subscribers.pop(namespace, None)
                self._reading_from.pop(namespace, None)
                pump = self._pumps.pop(namespace, None)
                if pump is not None:
                    pump.cancel()

    def _restart(self, namespace: str) -> None:
        pump = self._pumps.pop(namespace, None)
        if pump is not None:
            pump.cancel()
        self._pumps[namespace] = asyncio.create_task(self._pump(namespace))

    async def _pump(self, namespace: str) -> None:
        while self._subscribers.get(namespace):
            cursor = min(s.cursor for s in self._subscribers[namespace])
            self._reading_from[namespace] = cursor
            try:
                self.fetches += 1
                changes = await self.fetch(namespace, cursor, POLL_WAIT_S)
            except asyncio.CancelledError:
                raise
            except CursorExpired as gone:
                self._expire(namespace, gone)
                continue
            except Exception:
                log.exception("reading the change feed of %s failed; retrying", namespace)
                await asyncio.sleep(POLL_WAIT_S)
                continue
            for change in changes:
                for subscriber in self._subscribers.get(namespace, ()):
                    if change.seq > subscriber.cursor:
                        subscriber.cursor = change.seq
                        subscriber.queue.put_nowait(change)

    def _expire(self, namespace: str, gone: CursorExpired) -> None:
        """Tell the subscribers whose cursor the feed has moved past that they cannot resume; the pump reads on."""
        behind = {s for s in self._subscribers.get(namespace, ()) if s.cursor < gone.oldest - 1}
        for subscriber in behind:
            subscriber.queue.put_nowait(CursorExpired(namespace, subscriber.cursor, gone.oldest, gone.head))
        self._subscribers[namespace] = self._subscribers.get(namespace, set()) - behind

    async def close(self) -> None:
        """Stop every subscription."""
        pumps, self._pumps = list(self._pumps.values()), {}
        for pump in pumps:
            pump.cancel()
        for pump in pumps:
            with contextlib.suppress(asyncio.CancelledError):
                await pump
