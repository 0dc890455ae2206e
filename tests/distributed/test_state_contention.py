"""No lost updates on a shared store: worker processes hammer the same keys through reducers and CAS.

The scenario of ``tests/e2e/test_state_contention.py`` with its app, on each
shared-store combination: a ``covey timekeeper`` and :data:`PROCESSES`
``covey worker`` processes (one slot each) run one task each, which performs
:data:`EACH` live ``add 1`` updates on one counter, :data:`EACH` appends to one
list, and :data:`EACH` compare-and-set increments (read, put if the version is
unchanged, retry on conflict) on another key. Every update must survive.

Fewer operations per process than the embedded test's 500 (and 4 processes
instead of 8): every live write here is a round trip to the shared server
plus a hint, and the compare-and-set loop's conflicts grow with the number of
contenders, so 8 x 500 would take minutes on a two-core machine. The counts
are still checked exactly.
"""

from __future__ import annotations

from pathlib import Path

from covey.client import StoreClient
from covey.store.open import open_store
from tests.distributed.conftest import Backend
from tests.distributed.fleet import fleet, wait_workers
from tests.e2e.support import APPS as E2E_APPS
from tests.e2e.test_state_contention import check_no_update_lost

PROCESSES = 4
EACH = 100

WORKFLOW = {
    "name": "hammer",
    "steps": {
        "h": {"skill": "hammer", "map": "${input.parts}", "input": {"n": EACH, "contenders": PROCESSES}}
    },
}


async def test_worker_processes_lose_no_update(backend: Backend, tmp_path: Path) -> None:
    app = str(E2E_APPS / "contention.py")
    with fleet(backend, tmp_path) as start:
        start("timekeeper", "--shard-ttl", "5")
        workers = [start("worker", app, "--concurrency", "1") for _ in range(PROCESSES)]
        async with StoreClient(backend.store, backend.bus) as client, open_store(backend.store) as store:
            # Every worker is up before the work exists, so each claims a part.
            await wait_workers(store, workers, tmp_path)
            info = await client.wait(await client.submit(WORKFLOW, {"parts": list(range(PROCESSES))}))
            counter = await client.state_get("contention", "counter")
            items = await client.state_get("contention", "items")
            cas = await client.state_get("contention", "cas")

    check_no_update_lost(info, counter, items, cas, PROCESSES * EACH)
    pids = {out["pid"] for out in info.output["h"]}
    assert len(pids) == PROCESSES, "the updates really came from every worker process"
    assert sum(out["conflicts"] for out in info.output["h"]) > 0, "the compare-and-sets really contended"
