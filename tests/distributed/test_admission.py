"""On a shared store, clients refuse new runs while the store's backlog is full, and admit them once runs finish.

Two runs waiting for a signal fill a backlog of two: a third submit is refused
with TooBusy and stored nowhere, a repeated run id is still answered, and once
the engine node (a ``covey timekeeper``) finishes one of them a new submit is
admitted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from covey.client import StoreClient
from covey.errors import TooBusy
from covey.runtime.submit import submitted_before
from covey.testing import wait_for
from tests.distributed.conftest import Backend
from tests.distributed.fleet import fleet
from tests.runtime.test_admission import WAITING, admitted_within


async def test_a_full_backlog_refuses_then_makes_room(backend: Backend, tmp_path: Path) -> None:
    async with StoreClient(backend.store, backend.bus, max_backlog=2) as client:
        await client.submit(WAITING, run_id="r1")
        await client.submit(WAITING, run_id="r2")
        with pytest.raises(TooBusy) as refused:
            await client.submit(WAITING, run_id="r3")
        assert (refused.value.backlog, refused.value.limit) == (2, 2)
        assert await client.submit(WAITING, run_id="r1") == "r1"

        with fleet(backend, tmp_path) as start:
            start("timekeeper")
            await wait_for(lambda: _running(client, "r1"), 30.0, message="r1 decided by the engine node")
            await client.signal("r1", "go")
            await client.wait("r1")

            assert await admitted_within(lambda: client.submit(WAITING, run_id="r3"), 10.0) == "r3"
        async with client.reader() as store:
            assert await submitted_before(store, "r3")


async def _running(client: StoreClient, run_id: str) -> bool:
    async with client.reader() as store:
        info = await store.get_run(run_id)
    return info is not None
