"""A worker on a shared store: the worker protocol straight against the store, hinted by a bus.

Used with PostgreSQL and Redis, where workers on many machines claim, report
and heartbeat in the store itself and engine nodes (``covey timekeeper``)
decide. A claim that finds nothing waits for a ``ready:<target>`` hint, and
also polls the store, backing off to :data:`POLL_MAX_S`, so a lost hint only
delays a task (invariant 1). A report is appended to the store's inbox,
idempotent by task and lease number, then hinted to the engine nodes.

Event times come from the store's clock, estimated locally from an offset
measured at start and refreshed with every heartbeat: it is off by at most
one round trip to the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from covey.bus.base import Bus, topic_inbox, topic_ready, topic_state
from covey.engine.events import TaskSucceeded, event_to_json
from covey.runtime.hints import HintRouter
from covey.state.model import StateChange, StateEntry, StateOp
from covey.store.base import ClaimRequest, InboxRow, Lease, Store, WaitingClaims, report_row_id
from covey.worker.link import NextClaim, StoreCalls, Take, result_event

__all__ = ["POLL_MAX_S", "StoreLink"]

#: Longest wait between two claims with no hint.
POLL_MAX_S = 1.0
#: First wait after an empty claim; it doubles each idle round up to POLL_MAX_S.
POLL_MIN_S = 0.01


class StoreLink(StoreCalls):
    """The :class:`~covey.worker.link.WorkerLink` calls, made on the store; see the module docstring."""

    recovers_from_outages = True
    claims_with_reports = False

    def __init__(self, store: Store, bus: Bus, *, lease_ms: int = 30_000) -> None:
        self.store = store
        self.bus = bus
        self.lease_ms = lease_ms
        self._offset_ms = 0
        self.hints = HintRouter(bus)
        self._ready_topics: set[str] = set()
        self._unparked: dict[str, asyncio.Event] = {}
        self._drained: dict[str, set[str]] = {}
        """Workers whose last claim left no ready task behind, with the hint topics armed for it."""
        self._inbox_hinted_by_store = store.carry_hints(bus)
        self._waiting = store if isinstance(store, WaitingClaims) else None
        """The store as one that holds claims, if it is: checked once, an isinstance of a
        runtime-checkable protocol costs tens of µs, and claims are on the hand-off's path."""

    async def sync_clock(self) -> None:
        """Measure the offset of the store's clock from this machine's (half a round trip of error)."""
        before = time.time()
        store_ms = await self.store.now_ms()
        after = time.time()
        self._offset_ms = store_ms - int((before + after) * 500)

    def now_ms(self) -> int:
        """The store's clock, estimated."""
        return int(time.time() * 1000) + self._offset_ms

    async def close(self) -> None:
        """Drop the bus subscription."""
        await self.hints.close()

    # -- claiming and reporting --------------------------------------------------------

    async def claim(
        self,
        worker_id: str,
        targets: frozenset[str],
        labels: Mapping[str, str],
        limit: int,
        wait_s: float,
        *,
        take: Take | None = None,
    ) -> list[Lease]:
        """Claim in the store (see :meth:`_claim`), handing the leases to ``take`` too."""
        leases = await self._claim(worker_id, targets, labels, limit, wait_s)
        if take is not None:
            take(leases)
        return leases

    async def _claim(
        self, worker_id: str, targets: frozenset[str], labels: Mapping[str, str], limit: int, wait_s: float
    ) -> list[Lease]:
        """Claim in the store; if nothing is ready, wait for a hint or the next poll, until ``wait_s``.

        On a store that holds claims (:class:`~covey.store.base.WaitingClaims`)
        the wait is in the store, which hands this worker a task as soon as one
        is ready for it; each wait still ends by :data:`POLL_MAX_S` with a fresh
        look at the store.
        """
        topics = {topic_ready(target) for target in targets}
        self._ready_topics |= topics
        request = ClaimRequest(worker_id, targets, dict(labels), limit, self.lease_ms)
        stop = self._unparked.setdefault(worker_id, asyncio.Event())
        deadline = time.monotonic() + wait_s
        if self._waiting is not None:
            while True:
                left = deadline - time.monotonic()
                leases = await self._waiting.claim_or_wait(request, min(POLL_MAX_S, left) if left > 0 else 0)
                if leases or time.monotonic() >= deadline or stop.is_set():
                    stop.clear()
                    return leases
        pause = POLL_MIN_S
        # A claim that got fewer tasks than it asked for saw none left: the next one waits for a hint
        # first (armed before that claim's read, so none is missed) instead of asking the store again.
        look = self._drained.get(worker_id) != topics
        while True:
            if look:
                await self.hints.arm(topics)
                leases = await self.store.claim(request)
                if 0 < len(leases) < limit:
                    self._drained[worker_id] = topics
                else:
                    self._drained.pop(worker_id, None)
                left = deadline - time.monotonic()
                if leases or left <= 0 or stop.is_set():
                    stop.clear()
                    return leases
            else:
                self._drained.pop(worker_id, None)
                left = deadline - time.monotonic()
            look = True
            hinted = await self.hints.wait(topics, min(pause, left), stop)
            pause = POLL_MIN_S if hinted else min(POLL_MAX_S, pause * 2)

    async def unpark(self, worker_id: str) -> None:
        """End the worker's waiting claim now, empty (it is stopping)."""
        self._unparked.setdefault(worker_id, asyncio.Event()).set()
        if self._waiting is not None:
            await self._waiting.wake_waiting(worker_id)

    async def report(self, results: Sequence[dict[str, Any]], *, claim: NextClaim | None = None) -> None:
        """Append the results to the inbox (durable once this returns), then hint the engine nodes.

        A store that carries hints (:meth:`~covey.store.base.Store.carry_hints`) sends that hint itself.
        No claim travels with it (``claims_with_reports`` is False): engine nodes decide the inbox.
        """
        at_ms = self.now_ms()
        rows = []
        for result in results:
            event, ops = result_event(result, at_ms)
            task_id, lease_no = str(result["task_id"]), int(result["lease_no"])
            output = orjson.dumps(result.get("output")) if isinstance(event, TaskSucceeded) else None
            rows.append(
                InboxRow(
                    report_row_id(task_id, lease_no),
                    str(result["run_id"]),
                    event_to_json(event),
                    output=output,
                    state_ops=[op.to_json() for op in ops] or None,
                )
            )
        await self.store.append_inbox(rows)
        if not self._inbox_hinted_by_store:
            await self._hint({topic_inbox()})

    async def heartbeat(self, worker_id: str, leases: Sequence[tuple[str, int]]) -> list[str]:
        """Extend leases in the store (and refresh the clock offset on the way)."""
        before = time.time()
        lost = await self.store.heartbeat(worker_id, leases, self.lease_ms)
        if time.time() - before < 0.05:
            await self.sync_clock()
        return lost

    async def release(self, worker_id: str, leases: Sequence[tuple[str, int]]) -> None:
        """Give leases back; hint the targets this link serves, so others claim them now."""
        await self.store.release(worker_id, leases)
        if leases and self._ready_topics:
            await self._hint(set(self._ready_topics))

    async def _hint(self, topics: set[str]) -> None:
        try:
            await self.bus.publish(topics)
        except Exception:  # a hint is only a hint: the others poll the store
            return

    # -- shared state, locks, registry -------------------------------------------------

    async def state_apply(
        self, ops: Sequence[StateOp], fence: tuple[str, int] | None, lock: tuple[str, int] | None = None
    ) -> list[StateEntry]:
        """Write to the store now, then hint the namespaces' watchers."""
        entries = await self.store.state_apply(ops, fence=fence, lock=lock)
        await self._hint({topic_state(op.namespace) for op in ops})
        return entries

    async def state_watch(self, namespace: str, after: int, wait_s: float) -> list[StateChange]:
        """Changes after the cursor; with none, wait for a hint (or the next poll) up to ``wait_s``."""
        topics = {topic_state(namespace)}
        deadline = time.monotonic() + wait_s
        pause = POLL_MIN_S
        while True:
            await self.hints.arm(topics)
            changes = await self.store.state_changes(namespace, after)
            left = deadline - time.monotonic()
            if changes or left <= 0:
                return changes
            hinted = await self.hints.wait(topics, min(pause, left))
            pause = POLL_MIN_S if hinted else min(POLL_MAX_S, pause * 2)
