"""FaultyBus drops and duplicates hints on purpose, reproducibly; and losing them loses no work."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection

import pytest

from covey.bus.base import topic_ready
from covey.bus.memory import MemoryBus
from covey.testing import wait_for
from covey.testing.faulty_bus import FaultStatistics, FaultyBus


class RecordingBus(MemoryBus):
    """An in-process bus that remembers every publish call it got."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    async def publish(self, topics: Collection[str]) -> None:
        self.calls.append(list(topics))
        await super().publish(topics)


def topics(n: int) -> list[str]:
    return [topic_ready(f"skill-{i}") for i in range(n)]


@pytest.mark.parametrize(("drop", "duplicate"), [(-0.1, 0.0), (0.0, 1.5), (float("nan"), 0.0)])
def test_probabilities_must_be_between_0_and_1(drop: float, duplicate: float) -> None:
    with pytest.raises(ValueError, match="probability"):
        FaultyBus(MemoryBus(), drop=drop, duplicate=duplicate, seed=1)


async def test_no_faults_pass_every_hint_through_once() -> None:
    inner = RecordingBus()
    async with FaultyBus(inner, drop=0.0, duplicate=0.0, seed=1) as bus:
        await bus.publish(["inbox", "ready:a"])
        assert inner.calls == [["inbox", "ready:a"]]
        assert bus.statistics() == FaultStatistics(published=2, dropped=0, duplicated=0)


async def test_drop_1_loses_every_hint() -> None:
    inner = RecordingBus()
    async with FaultyBus(inner, drop=1.0, duplicate=1.0, seed=1) as bus:
        subscription = await bus.subscribe({"inbox"})
        await bus.publish(["inbox"] * 10)
        assert inner.calls == []
        assert await subscription.wait(0.01) == set()
        assert bus.statistics() == FaultStatistics(published=10, dropped=10, duplicated=0)


async def test_duplicate_1_sends_every_hint_again_in_a_second_publish() -> None:
    inner = RecordingBus()
    async with FaultyBus(inner, drop=0.0, duplicate=1.0, seed=1) as bus:
        await bus.publish(["inbox", "ready:a"])
        assert inner.calls == [["inbox", "ready:a"], ["inbox", "ready:a"]]
        assert bus.statistics().duplicated == 2


async def test_faults_replay_with_the_seed() -> None:
    async def faults(seed: int) -> list[list[str]]:
        inner = RecordingBus()
        async with FaultyBus(inner, drop=0.3, duplicate=0.3, seed=seed) as bus:
            for topic in topics(200):
                await bus.publish([topic])
        return inner.calls

    assert await faults(7) == await faults(7)
    assert await faults(7) != await faults(8)


async def test_fault_rates_follow_the_probabilities() -> None:
    async with FaultyBus(MemoryBus(), drop=0.3, duplicate=0.5, seed=3) as bus:
        await bus.publish(topics(2000))
        stats = bus.statistics()
    assert stats.published == 2000
    assert 500 < stats.dropped < 700  # 600 expected; these bounds are about 6 standard deviations wide
    assert 600 < stats.duplicated < 800  # half of the 1400 or so kept


async def test_work_is_done_once_each_even_when_the_bus_drops_and_duplicates_hints() -> None:
    # Given a "store" of ready items that consumers claim atomically, and a bus
    # that loses half the hints and repeats half of the rest
    ready: list[int] = []
    done: Counter[int] = Counter()
    stop = asyncio.Event()

    async def consumer(bus: FaultyBus) -> None:
        subscription = await bus.subscribe({"ready:work"})
        while not stop.is_set():
            await subscription.wait(0.02)  # a hint, or the poll interval: either way, look at the store
            while ready:
                done[ready.pop()] += 1

    async with FaultyBus(MemoryBus(), drop=0.5, duplicate=0.5, seed=11) as bus:
        workers = [asyncio.create_task(consumer(bus)) for _ in range(3)]
        # When items are committed one by one, each followed by a hint
        for item in range(300):
            ready.append(item)
            await bus.publish(["ready:work"])
            if item % 50 == 0:
                await asyncio.sleep(0)  # let consumers run between bursts
        await wait_for(lambda: len(done) == 300, message="every item done")
        stop.set()
        await asyncio.gather(*workers)
    # Then every item was done, and none twice
    assert set(done) == set(range(300))
    assert set(done.values()) == {1}
    assert bus.statistics().dropped > 0
    assert bus.statistics().duplicated > 0
