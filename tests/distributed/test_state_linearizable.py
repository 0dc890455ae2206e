"""Shared state is linearizable per key on a shared store: timed get/put/CAS histories from four processes check out.

The scenario of ``tests/e2e/test_state_linearizable.py`` on each shared-store
combination, with its calls and its checker (:mod:`tests.linearizability`):
four processes make random reads, writes and compare-and-sets on two keys at
once, recording when each call started and returned. Two are ``covey worker``
processes whose agent makes the calls through ``ctx.state`` (live writes,
fenced by the try's lease; a ``covey timekeeper`` runs the workflow), and two
are client processes using :class:`~covey.client.StoreClient`. All four wait
for one signal before their first call, so their calls overlap.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from covey.client import StoreClient
from covey.store.open import open_store
from covey.testing import wait_for
from tests.distributed.conftest import Backend
from tests.distributed.fleet import fleet, wait_workers
from tests.distributed.support import APPS
from tests.linearizability import check_key

WORKERS = 2
CLIENTS = 2
OPS = 150


def by_caller(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    callers = sorted({r["client"] for r in records})
    return [[r for r in records if r["client"] == caller] for caller in callers]


WORKFLOW = {"name": "lin", "steps": {"l": {"skill": "lin", "map": "${input.callers}", "input": "${item}"}}}


async def test_concurrent_histories_are_linearizable(backend: Backend, tmp_path: Path) -> None:
    app = APPS / "lin_ops.py"
    callers = WORKERS + CLIENTS
    env = {**os.environ, "COVEY_TEST_TRACE": str(tmp_path)}
    clients: list[asyncio.subprocess.Process] = []
    with fleet(backend, tmp_path) as start:
        start("timekeeper", "--shard-ttl", "5")
        workers = [start("worker", str(app), "--concurrency", "1") for _ in range(WORKERS)]
        try:
            async with StoreClient(backend.store, backend.bus) as client, open_store(backend.store) as store:
                await wait_workers(store, workers, tmp_path)
                run_id = await client.submit(
                    WORKFLOW, {"callers": [{"me": i, "ops": OPS, "seed": 2000 + i} for i in range(WORKERS)]}
                )
                for i in range(WORKERS, callers):
                    clients.append(
                        await asyncio.create_subprocess_exec(
                            sys.executable, str(app), backend.store, backend.bus or "-", str(i), str(OPS),
                            str(2000 + i), env=env, stderr=asyncio.subprocess.PIPE,
                        )
                    )  # fmt: skip
                await wait_for(
                    lambda: all((tmp_path / f"ready-{i}").exists() for i in range(callers)),
                    30.0,
                    message="every caller to be ready",
                )
                (tmp_path / "go").write_text("go")
                for proc in clients:
                    _, err = await proc.communicate()
                    assert proc.returncode == 0, err.decode()
                info = await client.wait(run_id)
        finally:
            for proc in clients:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

    assert info.status == "succeeded", info.error
    assert info.output["l"] == [OPS] * WORKERS
    records = [r for i in range(callers) for r in json.loads((tmp_path / f"lin-{i}.json").read_text())]
    assert len(records) == callers * OPS
    spans = [
        (min(r["invoke"] for r in mine), max(r["response"] for r in mine)) for mine in by_caller(records)
    ]
    assert max(first for first, _ in spans) < min(last for _, last in spans), "all four callers ran at once"
    for key in ("x", "y"):
        history = [r for r in records if r["key"] == key]
        assert any(r["op"] != "get" and r.get("ok") for r in history)
        assert {r["client"] for r in history if r["op"] != "get" and r.get("ok")} == set(range(callers)), (
            "every caller wrote"
        )
        check_key(history)
