"""Conformance: each namespace's change feed, its bound, and cursors older than what it keeps."""

from __future__ import annotations

import pytest

from covey.errors import CursorExpired
from covey.state.model import StateChange, StateOp, run_namespace
from covey.store.base import Store
from covey.store.feeds import DEFAULT_FEED_KEEP, feed_trim_every
from covey.testing.conformance import StoreFactory
from covey.testing.conformance.driver import Driver

__all__ = ["TestChangeFeed"]

NS = "feed"
#: Most changes a store may keep past ``feed_keep`` of 3 (the contract allows 1%: none; this is generous).
TRIM_SLACK = 64


def put(key: str, value: object, namespace: str = NS) -> StateOp:
    """A ``put`` write."""
    return StateOp("put", namespace, key, value)


async def _write(store: Store, count: int, namespace: str = NS) -> None:
    """``count`` changes to ``namespace``, one call each (keys k0, k1, ... in turn)."""
    for i in range(count):
        await store.state_apply([put(f"k{i % 5}", i, namespace)])


async def _expired(store: Store, namespace: str, after: int) -> CursorExpired:
    with pytest.raises(CursorExpired) as raised:
        await store.state_changes(namespace, after)
    return raised.value


def _seqs(changes: list[StateChange]) -> list[int]:
    return [change.seq for change in changes]


@pytest.mark.asyncio
class TestChangeFeed:
    """state_changes: commit order, no gaps, the last ``feed_keep`` changes kept, CursorExpired past them."""

    async def test_changes_are_numbered_from_1_without_gaps_in_commit_order(self, store: Store) -> None:
        await store.state_apply([put("a", 1), put("b", 2)])
        await store.state_apply([StateOp("delete", NS, "a")])
        await store.state_apply([StateOp("update", NS, "b", 5, "add")])

        changes = await store.state_changes(NS, 0)

        assert [(c.seq, c.key, c.version, c.value, c.deleted) for c in changes] == [
            (1, "a", 1, 1, False),
            (2, "b", 1, 2, False),
            (3, "a", 2, None, True),
            (4, "b", 2, 7, False),
        ]
        assert _seqs(await store.state_changes(NS, 2)) == [3, 4]
        assert _seqs(await store.state_changes(NS, 1, limit=2)) == [2, 3]
        assert await store.state_changes(NS, 4) == []

    async def test_a_store_keeps_the_default_number_of_changes(self, store: Store) -> None:
        assert store.feed_keep == DEFAULT_FEED_KEEP

    async def test_a_feed_keeps_its_last_changes_and_trims_older_ones(self, store: Store) -> None:
        store.feed_keep = 3
        await _write(store, 100)

        gone = await _expired(store, NS, 0)

        assert (gone.namespace, gone.after, gone.head) == (NS, 0, 100)
        assert 100 - 3 - TRIM_SLACK < gone.oldest <= 100 - 3 + 1, "keeps at least 3, at most 3 + slack"
        kept = await store.state_changes(NS, gone.oldest - 1)
        assert _seqs(kept) == list(range(gone.oldest, 101))
        assert kept[-1].value == 99
        assert _seqs(await store.state_changes(NS, 97)) == [98, 99, 100]
        assert await store.state_changes(NS, 100) == []

    async def test_a_larger_feed_holds_at_most_one_percent_more_than_it_keeps(self, store: Store) -> None:
        store.feed_keep = 200
        await store.state_apply([put(f"k{i}", i) for i in range(300)])
        for i in range(151):
            await store.state_apply([put("k", i)])

        oldest = (await _expired(store, NS, 0)).oldest
        held = 451 - oldest + 1

        assert 200 <= held <= 200 + feed_trim_every(200), f"{held} changes held"

    async def test_a_cursor_inside_what_is_kept_reads_on_without_error(self, store: Store) -> None:
        store.feed_keep = 3
        await _write(store, 10)
        cursor = 8  # a watcher that has seen 8: 9, 10 and then 11 are kept whatever the slack
        await _write(store, 1)

        assert _seqs(await store.state_changes(NS, cursor)) == [9, 10, 11]

    async def test_a_watcher_that_fell_behind_is_told_where_the_feed_starts(self, store: Store) -> None:
        store.feed_keep = 3
        await _write(store, 2)
        cursor = _seqs(await store.state_changes(NS, 0))[-1]
        await _write(store, 98)

        gone = await _expired(store, NS, cursor)

        assert gone.after == cursor == 2
        assert gone.oldest > cursor + 1
        assert gone.head == 100, "the namespace's last change, where a resync resumes"
        assert "watch from 100" in str(gone), "the message says where to resume after a resync"

    async def test_one_busy_namespace_trims_no_other(self, store: Store) -> None:
        store.feed_keep = 3
        await _write(store, 2, namespace="quiet")
        await _write(store, 100)

        assert _seqs(await store.state_changes("quiet", 0)) == [1, 2]
        await _expired(store, NS, 0)

    async def test_one_call_writing_many_changes_is_trimmed_too(self, store: Store) -> None:
        store.feed_keep = 3
        await store.state_apply([put(f"k{i}", i) for i in range(100)])
        await store.state_apply([put("last", 1)])

        gone = await _expired(store, NS, 0)

        assert 101 - 3 - TRIM_SLACK < gone.oldest <= 101 - 3 + 1

    async def test_staged_writes_of_a_commit_are_trimmed_too(self, store: Store) -> None:
        store.feed_keep = 3
        d = await Driver.start(store)
        ns = run_namespace("r1")
        first = d.submit("r1")
        first.state_ops.extend(put("k", i, ns) for i in range(50))
        await d.commit(first)
        for i in range(50):
            later = d.write("r1")
            later.state_ops.append(put("k", 50 + i, ns))
            await d.commit(later)

        gone = await _expired(store, ns, 0)

        assert 100 - 3 - TRIM_SLACK < gone.oldest <= 100 - 3 + 1
        kept = await store.state_changes(ns, gone.oldest - 1)
        assert (kept[-1].seq, kept[-1].value) == (100, 99)

    async def test_another_connection_sees_the_same_trimmed_feed(
        self, store: Store, store_factory: StoreFactory
    ) -> None:
        store.feed_keep = 3
        await _write(store, 100)
        oldest = (await _expired(store, NS, 0)).oldest

        async with store_factory() as other:
            assert (await _expired(other, NS, 0)).oldest == oldest
            assert _seqs(await other.state_changes(NS, 97)) == [98, 99, 100]
