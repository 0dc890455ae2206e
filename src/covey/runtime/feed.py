"""Waking watchers of shared state when a namespace changes (the embedded runner's bus for state).

The store's change feed is the truth: a watcher reads it from its cursor. This
only tells waiting watchers *when* to read again, so a missed or extra wake
never loses or repeats a change; a watcher that waits too long simply reads
again at its timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from covey.state.model import StateChange
from covey.store.base import Store

__all__ = ["StateFeed"]


class StateFeed:
    """Long-polls on a namespace's change feed; ``changed`` wakes the waiters of the namespaces written."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self.reads = 0
        """Change-feed reads served: what the store pays for watchers (for the broadcast benchmark)."""

    def changed(self, namespaces: Iterable[str]) -> None:
        """Some writes to these namespaces were committed."""
        for namespace in namespaces:
            for event in self._waiters.get(namespace, ()):
                event.set()

    async def wait(
        self, namespace: str, after_seq: int, wait_s: float, limit: int = 1000
    ) -> list[StateChange]:
        """Changes after ``after_seq``; if none yet, wait up to ``wait_s`` for some."""
        event = asyncio.Event()
        self._waiters.setdefault(namespace, set()).add(event)
        try:
            while True:
                event.clear()
                self.reads += 1
                changes = await self.store.state_changes(namespace, after_seq, limit)
                if changes or wait_s <= 0:
                    return changes
                try:
                    async with asyncio.timeout(wait_s):
                        await event.wait()
                except TimeoutError:
                    return []
                wait_s = 0.0  # woken: read once more and answer
        finally:
            waiters = self._waiters.get(namespace)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[namespace]
