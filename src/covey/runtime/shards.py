"""Sharing the runs among engine loops: each holds a fair share of the shards, by lease.

Every engine node (``covey timekeeper``) registers itself in the worker
registry as ``engine:<epoch>`` and heartbeats there. Each round it renews the
shards it holds, counts the live engine nodes, and moves toward its fair share
(``ceil(SHARDS / live nodes)``): it takes free shards and shards whose lease
ended (a dead node's), and gives back what it holds beyond its share so a
newcomer finds some free. A paused node that wakes after its shards were taken
cannot write: every commit checks the epoch holding each run's shard.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from covey.store.base import SHARDS, Store, WorkerInfo

__all__ = ["ENGINE_PREFIX", "ShardKeeper"]

log = logging.getLogger("covey.shards")

#: Registry ids of engine nodes start with this.
ENGINE_PREFIX = "engine:"


class ShardKeeper:
    """Keeps one epoch's share of the shards and tells its engine loop when the set changes."""

    def __init__(
        self,
        store: Store,
        epoch: int,
        on_change: Callable[[frozenset[int]], None],
        *,
        ttl_ms: int = 10_000,
    ) -> None:
        self.store = store
        self.epoch = epoch
        self.on_change = on_change
        self.ttl_ms = ttl_ms
        self.held: frozenset[int] = frozenset()
        self.node_id = f"{ENGINE_PREFIX}{epoch}"
        self.stopped = False

    def stop(self) -> None:
        """End :meth:`run` at its next turn."""
        self.stopped = True

    async def run(self) -> None:
        """Balance every third of the lease, until stopped or cancelled."""
        while not self.stopped:
            try:
                await self.balance()
            except Exception:
                log.exception("keeping shards failed; retrying")
            await asyncio.sleep(self.ttl_ms / 3000)

    async def balance(self) -> frozenset[int]:
        """One round: heartbeat, renew, then take or give back toward the fair share."""
        now = await self.store.now_ms()
        await self.store.register_worker(WorkerInfo(self.node_id, frozenset(), {}, 0, now, now))
        live = await self._live_nodes(now)
        fair = math.ceil(SHARDS / max(1, len(live | {self.node_id})))
        leases = await self.store.shard_leases()
        mine = sorted(s for s, (epoch, _) in leases.items() if epoch == self.epoch)
        held = await self.store.take_shards(self.epoch, mine, self.ttl_ms) if mine else set()
        if len(held) < fair:
            free = [s for s in range(SHARDS) if s not in leases or leases[s][1] <= now]
            if free:
                held |= await self.store.take_shards(self.epoch, free[: fair - len(held)], self.ttl_ms)
        elif len(held) > fair:
            extra = sorted(held)[fair:]
            self._set(frozenset(held) - set(extra))
            await self.store.release_shards(self.epoch, extra)
            held -= set(extra)
        self._set(frozenset(held))
        return self.held

    async def release_all(self) -> None:
        """A clean stop: stop deciding, give every shard back and leave the registry."""
        held = sorted(self.held)
        self._set(frozenset())
        if held:
            await self.store.release_shards(self.epoch, held)
        await self.store.unregister_worker(self.node_id)

    async def _live_nodes(self, now: int) -> set[str]:
        # A node heartbeats every third of the lease: one silent for a whole lease is gone, and its
        # shards' leases end at about the same time, so the others take them over at once.
        return {
            w.worker_id
            for w in await self.store.list_workers()
            if w.worker_id.startswith(ENGINE_PREFIX) and now - w.heartbeat_ms < self.ttl_ms
        }

    def _set(self, shards: frozenset[int]) -> None:
        if shards != self.held:
            log.info("engine %s now holds %d shards", self.epoch, len(shards))
            self.held = shards
            self.on_change(shards)
