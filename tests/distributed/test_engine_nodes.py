"""Engine nodes and workers sharing one store: every run finishes once, and nodes share the shards.

In one process, on each shared-store combination: two engine nodes (what
``covey timekeeper`` runs) and two workers on StoreLinks. The runs are
submitted through a StoreClient, as a user on another machine would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from covey.agents.app import load_app
from covey.bus.base import Bus
from covey.client import StoreClient
from covey.runtime.node import EngineNode
from covey.store.base import SHARDS, Store
from covey.store.open import open_bus_for, open_store
from covey.testing import wait_for
from covey.testing.faulty_bus import FaultyBus
from covey.worker.store_link import StoreLink
from covey.worker.worker import Worker
from tests.distributed.apps.fanout import FANOUT, expected_output, tasks_per_run
from tests.distributed.conftest import Backend
from tests.distributed.support import APPS, successes_per_task


@asynccontextmanager
async def running(work: list[asyncio.Task[None]]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for task in work:
            task.cancel()
        for task in work:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _workers(store: Store, bus: Bus, count: int) -> list[Worker]:
    app = load_app(str(APPS / "fanout.py"))
    found = []
    for _ in range(count):
        link = StoreLink(store, bus, lease_ms=5_000)
        await link.sync_clock()
        found.append(Worker(app.registry, link, heartbeat_s=1.0, grace_s=1.0))
    return found


@asynccontextmanager
async def _one_node_and_worker(store: Store, bus: Bus) -> AsyncIterator[None]:
    """An engine node and a worker serving ``store`` until the block ends."""
    work = [asyncio.create_task(EngineNode(store, bus).run())]
    work += [asyncio.create_task(worker.run()) for worker in await _workers(store, bus, 1)]
    async with running(work):
        yield


async def _finish_all(client: StoreClient, store: Store, run_ids: list[str], n: int) -> None:
    async def all_finished() -> bool:
        for run_id in run_ids:
            info = await store.get_run(run_id)
            if info is None or info.status == "running":
                return False
        return True

    await wait_for(all_finished, 60.0, 0.05, message="every run to finish")
    for run_id in run_ids:
        info = await client.get_run(run_id)
        assert (info.status, info.output) == ("succeeded", expected_output(n)), run_id
    successes = await successes_per_task(store, run_ids)
    assert len(successes) == len(run_ids) * tasks_per_run(n)
    assert set(successes.values()) == {1}


async def test_two_nodes_share_the_shards_and_finish_every_run_once(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COVEY_TEST_TRACE", str(tmp_path))
    async with (
        open_store(backend.store) as store,
        open_bus_for(backend.store, backend.bus) as bus,
        StoreClient(backend.store, backend.bus) as client,
    ):
        nodes = [EngineNode(store, bus, shard_ttl_ms=1_500) for _ in range(2)]
        node_tasks = [asyncio.create_task(node.run()) for node in nodes]
        workers = await _workers(store, bus, 2)
        worker_tasks = [asyncio.create_task(worker.run()) for worker in workers]
        async with running(node_tasks + worker_tasks):
            # Given two nodes, once they have balanced: each holds about half the shards, none twice.
            async def balanced() -> bool:
                held = [node.keeper.held if node.keeper else frozenset() for node in nodes]
                return len(held[0] | held[1]) == SHARDS and not held[0] & held[1] and min(map(len, held)) > 64

            await wait_for(balanced, 10.0, 0.05, message="the two nodes to share the shards")
            # When runs are submitted, then every one finishes, every task with one recorded success.
            run_ids = [await client.submit(FANOUT, {"n": 3}) for _ in range(30)]
            await _finish_all(client, store, run_ids, 3)

            # When one node stops cleanly, the other takes all the shards and the runs go on.
            node_tasks[0].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await node_tasks[0]
            await wait_for(
                lambda: nodes[1].keeper is not None and len(nodes[1].keeper.held) == SHARDS,
                10.0,
                0.05,
                message="the remaining node to take every shard",
            )
            more = [await client.submit(FANOUT, {"n": 2}) for _ in range(10)]
            await _finish_all(client, store, more, 2)


@pytest.mark.parametrize("drop", [0.5, 1.0])
async def test_hints_dropped_and_duplicated_on_purpose_lose_and_repeat_nothing(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drop: float
) -> None:
    # Given every hint dropped with probability `drop` (1.0: the bus says nothing at all) and the rest
    # sent twice with probability 0.5, for the engine nodes and the workers alike (a fault injector).
    monkeypatch.setenv("COVEY_TEST_TRACE", str(tmp_path))
    async with (
        open_store(backend.store) as store,
        open_bus_for(backend.store, backend.bus) as real_bus,
        StoreClient(backend.store, backend.bus) as client,
    ):
        bus = FaultyBus(real_bus, drop=drop, duplicate=0.5, seed=7)
        node_tasks = [asyncio.create_task(EngineNode(store, bus, shard_ttl_ms=1_500).run()) for _ in range(2)]
        workers = await _workers(store, bus, 2)
        async with running(node_tasks + [asyncio.create_task(worker.run()) for worker in workers]):
            # When runs go through, then each finishes with one recorded success per task: the store's
            # polling covers every lost hint, and a duplicated one only costs a look at the store.
            run_ids = [await client.submit(FANOUT, {"n": 2}) for _ in range(15)]
            await _finish_all(client, store, run_ids, 2)
    stats = bus.statistics()
    assert stats.dropped > 0
    assert drop == 1.0 or stats.duplicated > 0


async def test_a_client_waiting_for_a_run_is_told_when_it_finishes(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COVEY_TEST_TRACE", str(tmp_path))
    async with (
        open_store(backend.store) as store,
        open_bus_for(backend.store, backend.bus) as bus,
        StoreClient(backend.store, backend.bus) as client,
        _one_node_and_worker(store, bus),
    ):
        for n in (1, 2):  # the second wait reuses what the first set up
            run_id = await client.submit(FANOUT, {"n": n})
            # Given a poll far longer than the test may take: only the `finished` hint can end it in time.
            async with asyncio.timeout(30):
                info = await client.wait(run_id, poll_s=3600)
            assert (info.status, info.output) == ("succeeded", expected_output(n))


async def test_a_client_whose_bus_is_unreachable_still_sees_the_run_finish(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COVEY_TEST_TRACE", str(tmp_path))
    async with open_store(backend.store) as store, open_bus_for(backend.store, backend.bus) as bus:
        unreachable = "amqp://guest:guest@127.0.0.1:9/"
        async with _one_node_and_worker(store, bus), StoreClient(backend.store, unreachable) as client:
            run_id = await client.submit(FANOUT, {"n": 1})
            # No hint can come (nothing listens on port 9): the wait reads the store every poll_s.
            async with asyncio.timeout(30):
                info = await client.wait(run_id, poll_s=0.2)
            assert (info.status, info.output) == ("succeeded", expected_output(1))


async def test_a_run_submitted_through_the_inbox_counts_its_deadline_from_its_submit(
    backend: Backend,
) -> None:
    # A run's created time (its deadline counts from it) is the store's clock at submit, also when the
    # submit goes through the store's inbox with no runner to take it.
    gated = {
        "name": "gated",
        "timeout_s": 60,
        "signals": ["go"],
        "steps": {"gate": {"wait": {"signal": "go"}}},
    }
    async with (
        open_store(backend.store) as store,
        open_bus_for(backend.store, backend.bus) as bus,
        StoreClient(backend.store, backend.bus) as client,
    ):
        before = await store.now_ms()
        run_id = await client.submit(gated)
        async with _one_node_and_worker(store, bus):

            async def decided() -> list[dict[str, object]]:
                return await store.load_history(run_id)

            history = await wait_for(decided, 20.0, 0.05, message="the submit to be decided")
            assert history[0]["type"] == "RunSubmitted"
            assert before <= int(history[0]["at_ms"]) <= await store.now_ms()  # type: ignore[call-overload]
            await client.signal(run_id, "go")

            async def succeeded() -> bool:
                info = await store.get_run(run_id)
                return info is not None and info.status == "succeeded"

            await wait_for(succeeded, 20.0, 0.05, message="the run to finish before its deadline")
            signalled = [e for e in await store.load_history(run_id) if e["type"] == "SignalReceived"]
            assert len(signalled) == 1
            assert before <= int(signalled[0]["at_ms"]) <= await store.now_ms()  # type: ignore[call-overload]
