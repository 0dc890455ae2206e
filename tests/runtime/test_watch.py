"""A watcher whose connection is killed mid-stream resumes from its cursor: every change once, in order."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest

from covey import LocalClient, Runner
from covey.state.model import StateChange, StateOp
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
