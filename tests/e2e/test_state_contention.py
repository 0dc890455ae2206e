"""No lost updates: eight worker processes hammer the same keys through reducers and compare-and-set.

Each process performs 500 ``add 1`` updates on one counter, 500 appends to one
list, and 500 compare-and-set increments (read, put if the version is
unchanged, retry on conflict) on another key. Every update must survive.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from covey import Embedded
from covey.state.model import StateEntry
from covey.store.base import RunInfo

APP = str(Path(__file__).parent / "apps" / "contention.py")
PROCESSES = 8
EACH = 500


def check_no_update_lost(
    info: RunInfo, counter: StateEntry | None, items: StateEntry | None, cas: StateEntry | None, total: int
) -> None:
    """The run succeeded and each of the ``total`` adds, appends and compare-and-sets left its mark.

    Also the check of ``tests/distributed/test_state_contention.py``; it lives in a test module so
    pytest rewrites its asserts there too.
    """
    assert info.status == "succeeded", info.error
    assert counter is not None
    assert items is not None
    assert cas is not None
    assert counter.value == total
    assert len(items.value) == total
    assert len(set(items.value)) == total
    assert cas.value == total
    assert cas.version == total


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

    check_no_update_lost(info, counter, items, cas, PROCESSES * EACH)
    pids = {out["pid"] for out in info.output["h"]}
    assert len(pids) >= 2, "the updates really came from several processes"
