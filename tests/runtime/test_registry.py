"""Workers register when they start, heartbeat while they run, and leave the registry when they stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from covey import Embedded, Registry, agent
from covey.testing import wait_for

agents = Registry()


@agent(skills=["echo", "repeat"], labels={"zone": "eu"}, concurrency=3, registry=agents)
def echo(value: Any) -> Any:
    return value


async def test_workers_register_and_unregister(tmp_path: Path) -> None:
    covey = Embedded(tmp_path / "covey.db", agents=list(agents), workers=2, lease_ms=300)
    async with covey:
        store = covey.runner.store
        workers = await wait_for(lambda: _two(store), timeout=5)
        assert {w.targets for w in workers} == {frozenset({"echo", "repeat", "agent:echo"})}
        assert {w.slots for w in workers} == {3}
        assert all(w.labels == {"zone": "eu"} for w in workers)

        first = {w.worker_id: w.heartbeat_ms for w in workers}

        async def heard_again() -> bool:
            now = {w.worker_id: w.heartbeat_ms for w in await store.list_workers()}
            return all(now[k] > first[k] for k in first)

        await wait_for(heard_again, timeout=5, message="idle workers keep heartbeating")
    async with Embedded(tmp_path / "covey.db", agents=list(agents), workers=0) as again:
        assert await again.runner.store.list_workers() == [], "a clean stop unregisters"


async def _two(store: Any) -> Any:
    workers = await store.list_workers()
    return workers if len(workers) == 2 else None
