"""The linearizability test's timed get / put / compare-and-set calls, from agents and from store clients.

The calls are those of ``tests/e2e/apps/lin_client.py`` (its ``one``, reused
as is), made two ways:

* by the agent ``lin`` (skill ``lin``) in a worker process, through
  ``ctx.state`` (reads, and live writes fenced by the try's lease), with input
  ``{"me": N, "ops": OPS, "seed": S}``;
* by a client process, through :class:`covey.client.StoreClient`:
  ``python lin_ops.py STORE_URL BUS_URL|- N OPS SEED``.

Each caller first writes ``ready-N`` in ``COVEY_TEST_TRACE`` (the trace
folder) and waits there for a ``go`` file, so that every caller's calls
overlap; then it writes its records to ``lin-N.json``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from covey import Context, Registry, agent
from covey.state.model import StateEntry, StateOp

registry = Registry()


def _lin_client() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "e2e" / "apps" / "lin_client.py"
    spec = importlib.util.spec_from_file_location("covey_test_lin_client", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lin_client = _lin_client()


class ContextCalls:
    """The two client calls ``lin_client.one`` makes, served by an agent's context."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def state_get(self, namespace: str, key: str) -> StateEntry | None:
        return await self.ctx.state.entry(key, namespace=namespace)

    async def state_apply(self, ops: list[StateOp]) -> list[StateEntry]:
        (op,) = ops
        assert op.op == "put", op
        live = self.ctx.state.live
        return [await live.put(op.key, op.value, if_version=op.if_version, namespace=op.namespace)]


async def calls(client: Any, trace: Path, me: int, ops: int, seed: int) -> int:
    """Announce readiness, wait for ``go``, make ``ops`` calls and write their records; returns how many."""
    await asyncio.to_thread((trace / f"ready-{me}").write_text, str(os.getpid()))
    while not (trace / "go").exists():  # noqa: ASYNC110 -- another process creates the file
        await asyncio.sleep(0.005)
    rng = random.Random(seed)
    records = [await lin_client.one(client, rng, me, i) for i in range(ops)]
    await asyncio.to_thread((trace / f"lin-{me}.json").write_text, json.dumps(records))
    return len(records)


@agent(skills=["lin"], registry=registry)
async def lin(value: Any, ctx: Context) -> int:
    """The calls, through the agent's context."""
    trace = Path(os.environ.get("COVEY_TEST_TRACE", "."))
    return await calls(ContextCalls(ctx), trace, int(value["me"]), int(value["ops"]), int(value["seed"]))


agents = list(registry)


async def main() -> None:
    """The calls, through a client of the store."""
    from covey.client import StoreClient

    store, bus, me, ops, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    async with StoreClient(store, None if bus == "-" else bus) as client:
        await calls(client, Path(os.environ["COVEY_TEST_TRACE"]), me, ops, seed)


if __name__ == "__main__":
    asyncio.run(main())
