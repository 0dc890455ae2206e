"""Conformance: the worker registry (what each worker serves, when it was last heard from)."""

from __future__ import annotations

import pytest

from covey.store.base import Store, WorkerInfo

__all__ = ["TestRegistry"]


def _worker(worker_id: str, *, slots: int = 4, heartbeat_ms: int = 1_000) -> WorkerInfo:
    return WorkerInfo(
        worker_id,
        frozenset({"echo", f"agent:{worker_id}"}),
        {"gpu": "true", "region": "eu"},
        slots,
        heartbeat_ms,
        500,
    )


@pytest.mark.asyncio
class TestRegistry:
    """register_worker, list_workers, unregister_worker, and heartbeats."""

    async def test_register_list_refresh_and_unregister(self, store: Store) -> None:
        assert await store.list_workers() == []
        await store.register_worker(_worker("w1"))
        await store.register_worker(_worker("w2", slots=2))

        workers = {w.worker_id: w for w in await store.list_workers()}
        assert workers == {"w1": _worker("w1"), "w2": _worker("w2", slots=2)}
        assert isinstance(workers["w1"].targets, frozenset)

        await store.register_worker(_worker("w1", slots=8, heartbeat_ms=2_000))
        workers = {w.worker_id: w for w in await store.list_workers()}
        assert workers["w1"] == _worker("w1", slots=8, heartbeat_ms=2_000)
        assert len(workers) == 2

        await store.unregister_worker("w1")
        await store.unregister_worker("never-registered")
        assert [w.worker_id for w in await store.list_workers()] == ["w2"]

    async def test_a_heartbeat_updates_the_workers_heartbeat_time(self, store: Store) -> None:
        await store.register_worker(_worker("w1", heartbeat_ms=1))
        await store.register_worker(_worker("w2", heartbeat_ms=1))
        before = await store.now_ms()

        assert await store.heartbeat("w1", [], 10_000) == []
        await store.heartbeat("ghost", [], 10_000)

        after = await store.now_ms()
        workers = {w.worker_id: w for w in await store.list_workers()}
        assert before <= workers["w1"].heartbeat_ms <= after
        assert workers["w2"].heartbeat_ms == 1
        assert (workers["w1"].slots, workers["w1"].started_ms) == (4, 500)
        assert set(workers) == {"w1", "w2"}
