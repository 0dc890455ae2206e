"""Conformance: shards are leased to engine loops by epoch, and a commit needs its runs' shards."""

from __future__ import annotations

import pytest

from covey.engine.events import SignalReceived
from covey.errors import Conflict
from covey.store.base import SHARDS, Store, shard_of
from covey.testing.conformance.driver import Driver, inbox_row, wait_past

__all__ = ["TestShards"]


def _run_in_shard(shard: int, tag: str = "r") -> str:
    """A run id that hashes into ``shard``."""
    n = 0
    while shard_of(f"{tag}{n}") != shard:
        n += 1
    return f"{tag}{n}"


@pytest.mark.asyncio
class TestShards:
    """join_epoch, take_shards, release_shards, shard_leases, and the commit's shard check."""

    async def test_shard_of_is_stable_and_in_range(self) -> None:
        # The hash is part of the on-disk format: every machine and release must agree.
        assert shard_of("run-1") == shard_of("run-1")
        assert {shard_of(f"run-{n}") for n in range(5_000)} == set(range(SHARDS))
        assert shard_of("abc") == 0x352441C2 % SHARDS  # crc32("abc")

    async def test_joined_epochs_are_new_and_hold_nothing(self, store: Store) -> None:
        d = await Driver.start(store)
        first = await store.join_epoch()
        second = await store.join_epoch()
        assert d.epoch < first < second
        # Joining takes no shard: the embedded owner still holds every one.
        leases = await store.shard_leases()
        assert {epoch for epoch, _ in leases.values()} == {d.epoch}

    async def test_take_grants_free_shards_and_renews_own_but_not_others(self, store: Store) -> None:
        one, two = await store.join_epoch(), await store.join_epoch()
        assert await store.take_shards(one, [0, 1, 2], 60_000) == {0, 1, 2}
        assert await store.take_shards(two, [2, 3], 60_000) == {3}
        before = (await store.shard_leases())[0][1]
        await wait_past(store, before - 60_000 + 2)
        assert await store.take_shards(one, [0], 60_000) == {0}
        leases = await store.shard_leases()
        assert leases[0][0] == one
        assert leases[0][1] > before
        assert (leases[2][0], leases[3][0]) == (one, two)

    async def test_an_ended_shard_lease_can_be_taken(self, store: Store) -> None:
        one, two = await store.join_epoch(), await store.join_epoch()
        assert await store.take_shards(one, [5], 30) == {5}
        until = (await store.shard_leases())[5][1]
        await wait_past(store, until)
        assert await store.take_shards(two, [5], 60_000) == {5}
        assert (await store.shard_leases())[5][0] == two
        # Renewing the lost shard does not take it back.
        assert await store.take_shards(one, [5], 60_000) == set()

    async def test_released_shards_are_free_at_once(self, store: Store) -> None:
        one, two = await store.join_epoch(), await store.join_epoch()
        await store.take_shards(one, [7, 8], 60_000)
        await store.release_shards(one, [7])
        assert await store.take_shards(two, [7, 8], 60_000) == {7}

    async def test_a_commit_needs_the_shard_of_every_run_it_writes(self, store: Store) -> None:
        # Given two loops, each holding one shard.
        mine, theirs = _run_in_shard(10), _run_in_shard(11)
        one, two = await store.join_epoch(), await store.join_epoch()
        await store.take_shards(one, [10], 60_000)
        await store.take_shards(two, [11], 60_000)
        d = Driver(store, one)
        await d.start_run(mine)
        # When the first loop writes a run of the other's shard, alone or beside its own.
        with pytest.raises(Conflict):
            await d.commit(d.submit(theirs))
        with pytest.raises(Conflict):
            await d.commit(d.write(mine), d.submit(theirs))
        # Then nothing of those commits is written.
        assert await store.get_run(theirs) is None
        assert (await store.get_run(mine)).seq == 1  # type: ignore[union-attr]

    async def test_a_commit_after_the_shard_was_taken_over_fails(self, store: Store) -> None:
        run = _run_in_shard(12)
        one, two = await store.join_epoch(), await store.join_epoch()
        await store.take_shards(one, [12], 30)
        d = Driver(store, one)
        await d.start_run(run)
        until = (await store.shard_leases())[12][1]
        await wait_past(store, until)
        # The paused owner's lease ended and another loop took the shard.
        assert await store.take_shards(two, [12], 60_000) == {12}
        with pytest.raises(Conflict):
            await d.commit(d.write(run))
        newer = Driver(store, two)
        newer.seqs[run] = 1
        assert not (await newer.commit(newer.write(run))).conflicts

    async def test_a_new_runner_epoch_takes_every_shard(self, store: Store) -> None:
        one = await store.join_epoch()
        await store.take_shards(one, [1], 60_000)
        d = await Driver.start(store)
        leases = await store.shard_leases()
        assert set(leases) == set(range(SHARDS))
        assert {epoch for epoch, _ in leases.values()} == {d.epoch}

    async def test_read_inbox_filters_by_shard(self, store: Store) -> None:
        a, b = _run_in_shard(20), _run_in_shard(21)
        await store.append_inbox(
            [
                inbox_row(f"s{n}", run, SignalReceived(f"s{n}", "go", None, 0))
                for n, run in enumerate([a, b, a])
            ]
        )
        assert [r.id for r in await store.read_inbox(0, 10, shards={20})] == ["s0", "s2"]
        assert [r.id for r in await store.read_inbox(0, 1, shards={20})] == ["s0"]
        assert [r.id for r in await store.read_inbox(0, 10, shards={21, 99})] == ["s1"]
        assert await store.read_inbox(0, 10, shards=set()) == []
        assert len(await store.read_inbox(0, 10)) == 3
