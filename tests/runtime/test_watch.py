"""A watcher whose connection is killed mid-stream resumes from its cursor: every change once, in order."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from covey import LocalClient, Runner
from covey.errors import ConfigError, CursorExpired
from covey.runtime.feed import StateFeed
from covey.state.model import StateChange, StateOp
from covey.state.resync import StateSnapshot
from covey.state.watch import WatchHub
from covey.store.sqlite import SQLiteStore
from covey.testing import wait_for

WRITES = 150
KEYS = ("a", "b", "c")


async def test_watch_survives_a_killed_connection(tmp_path: Path) -> None:
    db = tmp_path / "covey.db"
    async with Runner(db) as runner:
        watcher = LocalClient(db)
        seen: list[StateChange] = []

        async def watch() -> None:
            async for change in watcher.state_watch("feed"):
                seen.append(change)

        task = asyncio.create_task(watch())
        writer = LocalClient(db)
        for i in range(WRITES):
            await writer.state_apply([StateOp("update", "feed", KEYS[i % 3], 1, "add")])
            if i in (40, 100):
                await wait_for(lambda n=i + 1: len(seen) == n, timeout=10, message="the watcher caught up")
                assert runner.drop_connections() >= 1  # the watcher's long poll among them, killed on purpose
        await wait_for(lambda: len(seen) == WRITES, timeout=20, message="every change arrives")
        task.cancel()

    assert watcher.reconnects == 2, "the connection really was lost, twice"
    assert [c.seq for c in seen] == list(range(1, WRITES + 1)), "each change once, in commit order"
    versions: dict[str, list[int]] = defaultdict(list)
    for change in seen:
        versions[change.key].append(change.version)
    for key in KEYS:
        assert versions[key] == list(range(1, WRITES // 3 + 1)), f"per-key order for {key}"
    assert [c.value for c in seen if c.key == "a"] == list(range(1, WRITES // 3 + 1))


async def test_client_state_calls(tmp_path: Path) -> None:
    from covey import VersionConflict

    client = LocalClient(tmp_path / "covey.db")
    async with Runner(tmp_path / "covey.db"):
        assert (await client.state_put("team", "lead", "ann", if_version=0)).version == 1
        with pytest.raises(VersionConflict) as caught:
            await client.state_put("team", "lead", "bob", if_version=0)
        assert caught.value.version == 1
        assert (await client.state_update("team", "n", "add", 2)).value == 2
        for key in ("a1", "a2", "a3"):
            await client.state_put("team", key, key)
        first = await client.state_list("team", prefix="a", limit=2)
        rest = await client.state_list("team", prefix="a", after=first[-1].key)
        assert [e.key for e in first + rest] == ["a1", "a2", "a3"]
        assert (await client.state_delete("team", "lead")).version == 2
        assert await client.state_get("team", "lead") is None


@asynccontextmanager
async def _trimmed_feed(tmp_path: Path) -> AsyncIterator[LocalClient]:
    """A runner whose feeds keep 3 changes, after 10 puts to ``feed`` (k0 - k3 in turn): 8 - 10 are kept."""
    db = tmp_path / "covey.db"
    client = LocalClient(db)
    async with Runner(db) as runner:
        runner.store.feed_keep = 3
        for i in range(10):
            await client.state_put("feed", f"k{i % 4}", i)
        yield client


async def test_a_watcher_older_than_the_feed_gets_cursor_expired_and_resyncs(tmp_path: Path) -> None:
    async with _trimmed_feed(tmp_path) as client:
        with pytest.raises(CursorExpired) as caught:
            async for _ in client.state_watch("feed"):
                pass
        gone = caught.value
        assert (gone.namespace, gone.after, gone.oldest, gone.head) == ("feed", 0, 8, 10)

        # The resync the error describes: a snapshot, then the feed after its head, skipping what it had.
        view = {entry.key: entry for entry in await client.state_list("feed")}
        await client.state_put("feed", "k0", 10)
        resumed = []
        async for change in client.state_watch("feed", after=gone.head):
            if change.version > view[change.key].version:
                resumed.append((change.seq, change.key, change.value))
            if change.seq == 11:
                break
    assert {key: entry.value for key, entry in view.items()} == {"k0": 8, "k1": 9, "k2": 6, "k3": 7}
    assert resumed == [(11, "k0", 10)], "changes the snapshot had are skipped by version, none is missed"

    with pytest.raises(CursorExpired):  # with no runner up, the client reads the file: the same answer
        async for _ in client.state_watch("feed", after=5):
            pass


async def test_a_hub_subscriber_that_fell_behind_gets_cursor_expired_and_the_others_read_on(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path / "covey.db") as store:
        store.feed_keep = 3
        for i in range(10):
            await store.state_apply([StateOp("put", "feed", "k", i)])

        feed = StateFeed(store)  # the runner's long poll on the feed, as a worker's link reaches it
        hub = WatchHub(feed.wait)
        current = hub.subscribe("feed", after=8)
        behind = hub.subscribe("feed", after=2)
        try:
            assert (await anext(current)).seq == 9
            with pytest.raises(CursorExpired) as caught:
                await anext(behind)
            assert (caught.value.after, caught.value.oldest, caught.value.head) == (2, 8, 10)
            assert (await anext(current)).seq == 10
            await store.state_apply([StateOp("put", "feed", "k", 10)])
            feed.changed(["feed"])
            assert (await asyncio.wait_for(anext(current), 10)).value == 10
        finally:
            await current.aclose()
            await hub.close()


async def test_covey_feed_keep_sets_how_much_every_feed_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COVEY_FEED_KEEP", "2")
    client = LocalClient(tmp_path / "covey.db")
    async with Runner(tmp_path / "covey.db") as runner:
        assert runner.store.feed_keep == 2
        for i in range(5):
            await client.state_put("feed", "k", i)
        assert [c.seq for c in await runner.store.state_changes("feed", 3)] == [4, 5]
        with pytest.raises(CursorExpired):
            await runner.store.state_changes("feed", 2)

    for bad in ("0", "-3", "many", "1.5"):
        monkeypatch.setenv("COVEY_FEED_KEEP", bad)
        with pytest.raises(ConfigError, match=f"COVEY_FEED_KEEP must be a whole number.*{bad!r}"):
            SQLiteStore(tmp_path / "other.db")


async def test_a_client_watch_that_resyncs_gives_a_snapshot_then_each_later_change_once(
    tmp_path: Path,
) -> None:
    async with _trimmed_feed(tmp_path) as client:
        await client.state_delete("feed", "k3")  # change 11

        items: list[StateChange | StateSnapshot] = []
        async for item in client.state_watch_resyncing("feed"):
            items.append(item)
            if isinstance(item, StateSnapshot):
                await client.state_put("feed", "k0", 100)  # change 12
            elif item.seq == 12:
                break

    snapshot, *changes = items
    assert isinstance(snapshot, StateSnapshot)
    assert (snapshot.namespace, snapshot.cursor) == ("feed", 11), "the head when the feed said it moved on"
    assert {e.key: (e.value, e.version) for e in snapshot.entries} == {
        "k0": (8, 3),
        "k1": (9, 3),
        "k2": (6, 2),
    }
    assert [(c.seq, c.key, c.value) for c in changes if isinstance(c, StateChange)] == [(12, "k0", 100)], (
        "9 - 11, the delete among them, are in the snapshot already"
    )
