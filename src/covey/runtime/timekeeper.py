"""The timekeeper: fires due timers and ended leases (invariant 5).

Timers are rows. Firing one deletes the row and appends TimerFired to the
run's inbox in one transaction, so any number of timekeepers may run and each
timer fires once. Lease expiry is the task row's ``lease_until_ms``: past it,
the lease is reported ended and the task's run decides what follows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from covey.store.base import Store

__all__ = ["Timekeeper"]

log = logging.getLogger("covey.timekeeper")

#: Longest sleep between looks at the store, in seconds (timers set meanwhile are seen this late at worst).
MAX_SLEEP_S = 0.05
#: Rows fired per transaction.
FIRE_BATCH = 500


class Timekeeper:
    """Fires due timers; ``on_fired`` tells the engine loop to read its inbox."""

    def __init__(self, store: Store, on_fired: Callable[[], None]) -> None:
        self.store = store
        self.on_fired = on_fired
        self.fired = 0
        self.stopped = False

    def stop(self) -> None:
        """End :meth:`run` at its next turn."""
        self.stopped = True

    async def run(self) -> None:
        """Fire until stopped or cancelled, sleeping until the next due time (at most MAX_SLEEP_S)."""
        while not self.stopped:
            try:
                await self.tick()
                due = await self.store.next_due_ms()
                now = await self.store.now_ms()
            except Exception:
                log.exception("timekeeper tick failed; retrying")
                due, now = None, 0
            delay = MAX_SLEEP_S if due is None else min(MAX_SLEEP_S, max(0.0, (due - now) / 1000))
            await asyncio.sleep(delay)

    async def tick(self) -> int:
        """Fire what is due now; returns how many fired."""
        total = 0
        while True:
            fired = await self.store.fire_due(FIRE_BATCH)
            total += fired
            if fired < FIRE_BATCH:
                break
        if total:
            self.fired += total
            self.on_fired()
        return total
