"""No lost updates: eight worker processes hammer the same keys through reducers and compare-and-set.

Each process performs 500 ``add 1`` updates on one counter, 500 appends to one
list, and 500 compare-and-set increments (read, put if the version is
unchanged, retry on conflict) on another key. Every update must survive.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from covey import Embedded

APP = str(Path(__file__).parent / "apps" / "contention.py")
PROCESSES = 8
EACH = 500


@pytest.mark.slow
async def test_eight_processes_lose_no_update(tmp_path: Path) -> None:
    workflow = {
        "name": "hammer",
        "steps": {"h": {"skill": "hammer", "map": "${input.parts}", "input": {"n": EACH}}},
    }
    async with Embedded(
        tmp_path / "covey.db", app=APP, workers=PROCESSES, processes=True, concurrency=1
    ) as covey:
        info = await covey.wait(await covey.submit(workflow, {"parts": list(range(PROCESSES))}))
        store = covey.runner.store
        counter = await store.state_get("contention", "counter")
        items = await store.state_get("contention", "items")
        cas = await store.state_get("contention", "cas")

    assert info.status == "succeeded", info.error
    assert counter is not None
    assert items is not None
    assert cas is not None
    assert counter.value == PROCESSES * EACH
    assert len(items.value) == PROCESSES * EACH
    assert len(set(items.value)) == PROCESSES * EACH
    assert cas.value == PROCESSES * EACH
    assert cas.version == PROCESSES * EACH
    pids = {out["pid"] for out in info.output["h"]}
    assert len(pids) >= 2, "the updates really came from several processes"
