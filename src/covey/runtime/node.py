"""An engine node for a shared store: what ``covey timekeeper`` runs, on any number of machines.

A node joins the store with an epoch of its own, keeps a fair share of the
shards (:class:`~covey.runtime.shards.ShardKeeper`), decides the runs of
those shards from the store's inbox (:class:`~covey.runtime.loop.EngineLoop`),
fires due timers and ended leases for everyone (:class:`~covey.runtime.
timekeeper.Timekeeper`), and publishes hints after its commits. None is
special: kill one and the others take its shards when their leases end.

It wakes on the bus's ``inbox`` hint, and also polls the inbox, backing off to
:data:`POLL_MAX_S` when idle, so a lost hint delays work but never loses it
(invariant 1). A store that hands new rows to their shard's node
(:class:`~covey.store.base.PushesInbox`, Redis) saves it the hint and the read;
the node then polls at :data:`POLL_MAX_S` only, and skips a poll while rows
keep being handed over (up to :data:`POLLS_SKIPPED_MAX` in a row): a read then
finds the rows on their way, and under a backlog it would walk all of them
beside their copies, parsing each twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from covey.bus.base import RESYNC, Bus, Subscription, topic_inbox
from covey.runtime.hints import HintPublisher, wait_for_hints
from covey.runtime.loop import EngineLoop
from covey.runtime.retention import DEFAULT_RETENTION_MS, RetentionKeeper
from covey.runtime.shards import ShardKeeper
from covey.runtime.timekeeper import Timekeeper
from covey.store.base import PushesInbox, Store

__all__ = ["POLLS_SKIPPED_MAX", "POLL_MAX_S", "EngineNode"]

log = logging.getLogger("covey.node")

#: Inbox rows one commit of a node decides at most: a Redis commit is one script, and while it runs the
#: server serves nobody else, so batches stay small enough to keep that pause in the low milliseconds.
NODE_INBOX_BATCH = 256
#: Longest wait between two looks at the inbox with no hint.
POLL_MAX_S = 1.0
#: First wait after activity; it doubles each idle round up to POLL_MAX_S.
POLL_MIN_S = 0.01
#: Longest wait for inbox rows a store hands over (``PushesInbox``), in seconds.
PUSH_WAIT_S = 1.0
#: Polls in a row a node skips while rows are handed over; the next one reads the inbox regardless,
#: for a row that came with neither a push nor a hint that arrived.
POLLS_SKIPPED_MAX = 9


class _Part(Protocol):
    """One of the node's concurrent duties: runs until stopped."""

    def run(self) -> Coroutine[Any, Any, None]: ...

    def stop(self) -> None: ...


class EngineNode:
    """One engine loop with its share of the shards, a timekeeper, and hints; see the module docstring."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        *,
        shard_ttl_ms: int = 10_000,
        retention_ms: int | None = DEFAULT_RETENTION_MS,
    ) -> None:
        self.store = store
        self.bus = bus
        self.shard_ttl_ms = shard_ttl_ms
        self.retention_ms = retention_ms
        """How long finished runs are kept before this node purges them; None keeps them."""
        self.loop: EngineLoop | None = None
        self.keeper: ShardKeeper | None = None
        self.ready = asyncio.Event()
        """Set once the node holds its first shards (or found none free)."""
        self.pushes = 0
        """Batches of inbox rows the store has handed over so far."""

    async def run(self) -> None:
        """Serve until cancelled; a clean stop gives the shards back at once."""
        epoch = await self.store.join_epoch()
        loop = self.loop = EngineLoop(self.store, epoch=epoch, shards=(), inbox_batch=NODE_INBOX_BATCH)
        hints = HintPublisher(self.bus)
        loop.on_hints = hints.add
        loop.hints_in_commit = self.store.carry_hints(self.bus)
        keeper = self.keeper = ShardKeeper(self.store, epoch, loop.set_shards, ttl_ms=self.shard_ttl_ms)
        await keeper.balance()
        self.ready.set()
        log.info("engine node %s holds %d shards", epoch, len(keeper.held))

        def fired() -> None:
            loop.poke_inbox()
            hints.add({topic_inbox()})  # the other nodes' shards may have got rows too

        timekeeper = Timekeeper(self.store, fired)
        subscription = await self.bus.subscribe({topic_inbox()})
        parts: tuple[_Part, ...] = (loop, keeper, timekeeper, hints)
        if self.retention_ms is not None:
            parts += (RetentionKeeper(self.store, self.retention_ms, loop),)
        pusher = self.store if isinstance(self.store, PushesInbox) else None
        try:
            async with asyncio.TaskGroup() as group:
                for part in parts:
                    group.create_task(part.run())
                group.create_task(self._wake_on_inbox(subscription, loop, pushed=pusher is not None))
                if pusher is not None:
                    group.create_task(self._take_pushed(pusher, loop))
                try:
                    await asyncio.Event().wait()  # until cancelled
                except asyncio.CancelledError:
                    # Each part also stops at its next turn: a driver may lose the cancellation
                    # of a call it was in (redis-py can), and the part would otherwise go on.
                    for part in parts:
                        part.stop()
                    raise
        finally:
            if pusher is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pusher.stop_waiting_inbox(epoch))
            with contextlib.suppress(Exception):
                await subscription.close()
            with contextlib.suppress(Exception):
                await asyncio.shield(keeper.release_all())

    async def _take_pushed(self, store: PushesInbox, loop: EngineLoop) -> None:
        """Take the inbox rows the store hands over as they are appended (no hint, no read of the inbox)."""
        while not loop.stopped:
            try:
                rows = await store.wait_inbox(loop.epoch, PUSH_WAIT_S)
            except Exception:
                log.exception("waiting for inbox rows failed; the inbox is read on hints and polls meanwhile")
                await asyncio.sleep(PUSH_WAIT_S)
                continue
            if rows:
                self.pushes += 1
                loop.offer_inbox(rows)
                # The engine loop decides these rows and sends their commit before the wait is
                # armed again: arming is a pipeline call (about 100 µs of Python) that would
                # otherwise sit on the hand-off's path.
                await asyncio.sleep(0)

    async def _wake_on_inbox(self, subscription: Subscription, loop: EngineLoop, *, pushed: bool) -> None:
        """Read the inbox on every hint, and on a poll when none comes, backing off to :data:`POLL_MAX_S`.

        With ``pushed`` (the store hands rows over), polls come every
        :data:`POLL_MAX_S`, and one is skipped when rows were handed over since
        the last, up to :data:`POLLS_SKIPPED_MAX` in a row.
        """
        first_poll_s = POLL_MAX_S if pushed else POLL_MIN_S
        wait_s, pushes, skipped = first_poll_s, self.pushes, 0
        while not loop.stopped:
            topics = await wait_for_hints(subscription, wait_s)  # a closed subscription: a poll every wait_s
            hinted = bool(topics) and topics != {RESYNC}
            if topics or not pushed or self.pushes == pushes or skipped >= POLLS_SKIPPED_MAX:
                loop.poke_inbox()
                skipped = 0
            else:
                skipped += 1
            pushes = self.pushes
            wait_s = first_poll_s if hinted else min(POLL_MAX_S, wait_s * 2)
