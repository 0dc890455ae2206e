"""Conformance: locks and semaphores with fencing tokens, and writes fenced by a lock."""

from __future__ import annotations

import pytest

from covey.errors import StaleLease
from covey.state.model import StateOp
from covey.store.base import Store
from covey.testing import wait_for

__all__ = ["TestLocks"]


@pytest.mark.asyncio
class TestLocks:
    """lock_acquire, lock_release, lock_renew, and state_apply(lock=...)."""

    async def test_a_lock_has_one_holder_and_tokens_only_grow(self, store: Store) -> None:
        first = await store.lock_acquire("L", "a", ttl_ms=60_000)
        assert first is not None
        assert await store.lock_acquire("L", "b", ttl_ms=60_000) is None
        assert await store.lock_release("L", first) is True
        assert await store.lock_release("L", first) is False, "a token releases once"
        second = await store.lock_acquire("L", "b", ttl_ms=60_000)
        assert second is not None
        assert second > first

    async def test_locks_are_independent_by_name(self, store: Store) -> None:
        assert await store.lock_acquire("L1", "a", ttl_ms=60_000) is not None
        assert await store.lock_acquire("L2", "a", ttl_ms=60_000) is not None

    async def test_an_expired_lock_can_be_taken_and_the_old_token_is_dead(self, store: Store) -> None:
        old = await store.lock_acquire("L", "a", ttl_ms=30)
        assert old is not None

        async def taken() -> int | None:
            return await store.lock_acquire("L", "b", ttl_ms=60_000)

        new = await wait_for(taken, timeout=5, message="the lock expires after its ttl")
        assert new is not None
        assert new > old
        assert await store.lock_renew("L", old, 60_000) is False
        assert await store.lock_release("L", old) is False
        assert await store.lock_renew("L", new, 60_000) is True

    async def test_a_semaphore_admits_limit_holders(self, store: Store) -> None:
        tokens = [await store.lock_acquire("S", f"h{i}", limit=3, ttl_ms=60_000) for i in range(4)]
        assert all(token is not None for token in tokens[:3])
        assert tokens[3] is None
        assert len({*tokens[:3]}) == 3
        first = tokens[0]
        assert first is not None
        assert await store.lock_release("S", first) is True
        assert await store.lock_acquire("S", "h4", limit=3, ttl_ms=60_000) is not None

    async def test_writes_fenced_by_a_lock_need_its_current_token(self, store: Store) -> None:
        old = await store.lock_acquire("L", "a", ttl_ms=30)
        assert old is not None
        (written,) = await store.state_apply([StateOp("put", "ns", "k", "a")], lock=("L", old))
        assert written.version == 1

        async def taken() -> int | None:
            return await store.lock_acquire("L", "b", ttl_ms=60_000)

        new = await wait_for(taken, timeout=5)
        assert new is not None
        with pytest.raises(StaleLease):
            await store.state_apply([StateOp("put", "ns", "k", "stale")], lock=("L", old))
        entry = await store.state_get("ns", "k")
        assert entry is not None
        assert entry.value == "a"
        await store.state_apply([StateOp("put", "ns", "k", "b")], lock=("L", new))
        with pytest.raises(StaleLease):
            await store.state_apply([StateOp("put", "ns", "k", "x")], lock=("L", new + 1))
