"""Shared state writes, consistent snapshots, and locks and semaphores in the Redis store."""

from __future__ import annotations

import asyncio
import contextlib
import random
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from covey.errors import Conflict, StaleLease, VersionConflict
from covey.state.model import StateEntry, StateOp
from covey.store.feeds import BoundedFeeds
from covey.store.redis.plan import Blobs, KeyState, Planner
from covey.store.redis.reads import Reads

__all__ = ["MAX_ATTEMPTS", "Shared", "Snapshot"]

#: How often a write decided in Python is tried again when the keys it read moved meanwhile.
#: Each retry means another writer succeeded, so only a hot key under heavy contention gets near it.
MAX_ATTEMPTS = 1_000
#: The first pause after a write lost a race on its keys, in seconds; it doubles per retry up to BACKOFF_MAX_S.
BACKOFF_MIN_S = 0.000_5
#: The longest pause between two tries of a contended write, in seconds.
BACKOFF_MAX_S = 0.05


def _backoff_s(attempt: int) -> float:
    """A random pause before retry ``attempt`` (full jitter): contenders spread out instead of colliding again.

    Without it, N writers of one hot key retry in lockstep, and each round lets
    one through: N² reads and scripts for N writes.
    """
    return random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** min(attempt, 16)))


@dataclass(slots=True)
class Snapshot:
    """One consistent read (one script call) of what a decision needs."""

    lock_ok: bool = True
    fence_ok: bool = True
    runs: list[tuple[int | None, bytes | None]] = field(default_factory=list)
    """(seq or None when the run does not exist, input JSON) per run asked for."""
    states: dict[tuple[str, str], KeyState] = field(default_factory=dict)
    outputs: list[dict[bytes, bytes]] = field(default_factory=list)
    """Every stored row (index -> JSON) of each output key asked for."""


def _stale_lock(lock: tuple[str, int]) -> StaleLease:
    return StaleLease(f"token {lock[1]} of lock {lock[0]!r} is no longer current; the write was refused")


def _stale_fence(fence: tuple[str, int]) -> StaleLease:
    return StaleLease(f"lease {fence[1]} of {fence[0]} is no longer current; the write was refused")


class Shared(BoundedFeeds, Reads):
    """state_apply (versions, compare-and-set, reducers, fences) and locks."""

    def __init__(self, url: str, *, prefix: str = "covey", check_eviction: bool = True) -> None:
        super().__init__(url, prefix=prefix, check_eviction=check_eviction)
        self._key_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._read_feed_keep()

    def _guard(self, fence: tuple[str, int] | None, lock: tuple[str, int] | None) -> dict[str, Any]:
        guard: dict[str, Any] = {}
        if fence is not None:
            guard["fence"] = [self.keys.task(fence[0]), fence[1]]
        if lock is not None:
            guard["lock"] = [self.keys.lock(lock[0]), lock[1]]
        return guard

    async def snapshot(
        self,
        *,
        guard: dict[str, Any] | None = None,
        runs: Sequence[str] = (),
        keys: Sequence[tuple[str, str]] = (),
        outputs: Sequence[str] = (),
    ) -> Snapshot:
        """Read lock and fence, runs (by key), state keys (namespace, key) and output keys at one instant."""
        payload = dict(guard or {})
        payload["runs"] = list(runs)
        payload["keys"] = [[self.keys.ns_tag(ns), ns, key] for ns, key in keys]
        payload["outs"] = list(outputs)
        reply = await self.script("snapshot", [orjson.dumps(payload)], idempotent=True)
        lock_ok, fence_ok, run_rows, entries, outs = reply
        snap = Snapshot(bool(lock_ok), bool(fence_ok))
        snap.runs = [(None if seq is None else int(seq), data) for seq, data in run_rows]
        for (ns, key), (body, last) in zip(keys, entries, strict=True):
            snap.states[(ns, key)] = KeyState(body is not None, int(last), body)
        snap.outputs = [dict(zip(flat[::2], flat[1::2], strict=True)) for flat in outs]
        return snap

    async def state_apply(
        self,
        ops: Sequence[StateOp],
        *,
        fence: tuple[str, int] | None = None,
        lock: tuple[str, int] | None = None,
    ) -> list[StateEntry]:
        """Apply writes atomically, all or none (see the Store protocol).

        Puts and deletes take one script call. A batch with an update (a
        reducer) first reads its keys, runs the reducers here, and writes if
        no key moved meanwhile, else reads again.
        """
        ops = list(ops)
        guard = self._guard(fence, lock)
        if not ops and not guard:
            return []
        blobs = Blobs()
        writes = Planner(self.keys, blobs).undecided(ops)
        if writes is not None:
            versions = await self._write_state(writes, guard, blobs, fence, lock)
            assert versions is not None, "writes the script evaluates never ask for a retry"
            return [
                StateEntry(op.namespace, op.key, op.value if op.op == "put" else None, version)
                for op, version in zip(ops, versions, strict=True)
            ]
        keys = list(dict.fromkeys((op.namespace, op.key) for op in ops))
        async with contextlib.AsyncExitStack() as held:
            # Writers in this process take turns per key: they would only make each other retry.
            for key in sorted(keys):
                await held.enter_async_context(self._key_lock(key))
            return await self._apply_decided(ops, keys, guard, fence, lock)

    def _key_lock(self, key: tuple[str, str]) -> asyncio.Lock:
        """The lock of ``key`` in this store object (kept only while someone holds or awaits it)."""
        found = self._key_locks.get(key)
        if found is None:
            found = self._key_locks[key] = asyncio.Lock()
        return found

    async def _apply_decided(
        self,
        ops: list[StateOp],
        keys: list[tuple[str, str]],
        guard: dict[str, Any],
        fence: tuple[str, int] | None,
        lock: tuple[str, int] | None,
    ) -> list[StateEntry]:
        """Read the keys, run the reducers here, write if no key moved meanwhile; else again, after a pause."""
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                await asyncio.sleep(_backoff_s(attempt))
            snap = await self.snapshot(guard=guard, keys=keys)
            if not snap.lock_ok:
                assert lock is not None
                raise _stale_lock(lock)
            if not snap.fence_ok:
                assert fence is not None
                raise _stale_fence(fence)
            blobs = Blobs()
            planner = Planner(self.keys, blobs, snap.states)
            decided = [planner.decide(op) for op in ops]
            if await self._write_state([d[0] for d in decided], guard, blobs, fence, lock) is not None:
                return [
                    StateEntry(op.namespace, op.key, value, version)
                    for op, (_, value, version) in zip(ops, decided, strict=True)
                ]
        raise Conflict(f"shared state kept changing under {len(ops)} write(s); tried {MAX_ATTEMPTS} times")

    async def _write_state(
        self,
        writes: list[list[Any]],
        guard: dict[str, Any],
        blobs: Blobs,
        fence: tuple[str, int] | None,
        lock: tuple[str, int] | None,
    ) -> list[int] | None:
        """Run the write script; the versions written, or None when a decision read a moved key."""
        payload = orjson.dumps({**guard, "ops": writes, "keep": self.feed_keep})
        reply = await self.script("state_apply", [payload, *blobs.items])
        kind = reply[0]
        if kind == b"ok":
            return [int(v) for v in reply[1]]
        if kind == b"retry":
            return None
        if kind == b"stale":
            if reply[1] == b"lock":
                assert lock is not None
                raise _stale_lock(lock)
            assert fence is not None
            raise _stale_fence(fence)
        _, number, found = reply
        write = writes[int(number) - 1]
        raise VersionConflict(write[2], write[3], int(write[5]), int(found))

    # -- locks and semaphores ------------------------------------------------------------

    async def lock_acquire(self, name: str, holder: str, *, limit: int = 1, ttl_ms: int) -> int | None:
        """Take one of ``limit`` permits of ``name``; its fencing token, or None if all are held."""
        token = await self.script("locks", ["acquire", name, holder, str(limit), str(ttl_ms)])
        return None if token is None else int(token)

    async def lock_release(self, name: str, token: int) -> bool:
        """Give a permit back; False if that token no longer holds it."""
        return bool(await self.script("locks", ["release", name, str(token)]))

    async def lock_renew(self, name: str, token: int, ttl_ms: int) -> bool:
        """Extend a held permit by ``ttl_ms`` from now; False if it expired or was taken over."""
        return bool(await self.script("locks", ["renew", name, str(token), str(ttl_ms)], idempotent=True))
