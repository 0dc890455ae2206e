"""An engine node on a store that hands it new inbox rows (Redis): it skips the polls that would only
read rows already on their way, and a row that came with neither a push nor a hint is still decided.

The node gets no hints at all here (an in-process bus nobody publishes on), so
what it decides came by push or by a poll of the inbox.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Collection

import orjson
import pytest
import redis.asyncio as aioredis

from covey.bus.memory import MemoryBus
from covey.engine.events import RunSubmitted, SignalReceived, event_to_json
from covey.runtime import node as node_module
from covey.runtime.node import POLLS_SKIPPED_MAX, EngineNode
from covey.store.base import InboxRow, shard_of
from covey.store.redis import RedisStore
from covey.testing import wait_for
from covey.testing.servers import redis_url
from tests.store.backend_redis import delete_prefix

pytestmark = pytest.mark.asyncio

WORKFLOW = {"name": "gated", "signals": ["go", "tick"], "steps": {"gate": {"wait": {"signal": "go"}}}}
POLL_S = 0.05


class ReadCountingRedisStore(RedisStore):
    """A RedisStore that counts its reads of the inbox."""

    reads = 0

    async def read_inbox(
        self, after_seq: int, limit: int, shards: Collection[int] | None = None
    ) -> list[InboxRow]:
        self.reads += 1
        return await super().read_inbox(after_seq, limit, shards)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"covey-test-{uuid.uuid4().hex[:16]}"
    yield name
    await delete_prefix(redis_url(), name)


def _row(row_id: str, run_id: str, event: RunSubmitted | SignalReceived) -> InboxRow:
    return InboxRow(row_id, run_id, event_to_json(event))


async def _append_unannounced(prefix: str, row: InboxRow) -> None:
    """Append ``row`` the way the inbox script does, but with no push and no hint: as if both were lost."""
    tag = f"{{{prefix}:{shard_of(row.run_id)}}}:"
    script = """
    local seq = redis.call('INCR', KEYS[1] .. 'inbox:seq')
    redis.call('HSETNX', KEYS[1] .. 'seen', ARGV[1], '')
    redis.call('ZADD', KEYS[1] .. 'inbox', seq, ARGV[2] .. '[' .. seq .. ',' .. ARGV[3])
    redis.call('ZADD', ARGV[2] .. 'inbox', seq, ARGV[1])
    """
    rest = orjson.dumps([row.id, row.run_id, row.event, False, False])[1:]
    raw = aioredis.Redis.from_url(redis_url())
    try:
        await raw.eval(script, 1, f"{{{prefix}}}:", row.id, tag, rest)  # type: ignore[misc]
    finally:
        await raw.aclose()


async def test_polls_are_skipped_while_rows_are_pushed_and_an_unannounced_row_is_still_decided(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "POLL_MAX_S", POLL_S)
    async with ReadCountingRedisStore(redis_url(), prefix=prefix) as store, MemoryBus() as bus:
        node = EngineNode(store, bus)
        running = asyncio.create_task(node.run())
        ticking: asyncio.Task[None] | None = None
        stop_ticking = asyncio.Event()
        try:
            await asyncio.wait_for(node.ready.wait(), 10)
            await store.append_inbox([_row("submit:r1", "r1", RunSubmitted("r1", WORKFLOW, None, 0))])

            async def started() -> bool:
                return await store.get_run("r1") is not None

            await wait_for(started, 10.0, 0.01, message="the run to start")

            async def tick() -> None:
                # Stops on the flag too: redis-py may swallow a cancellation that lands inside a call.
                n = 0
                while not stop_ticking.is_set():
                    await store.append_inbox(
                        [_row(f"tick-{n}", "r1", SignalReceived(f"tick-{n}", "tick", n, 0))]
                    )
                    n += 1
                    await asyncio.sleep(0.005)

            ticking = asyncio.create_task(tick())
            await wait_for(lambda: node.pushes >= 5, 10.0, 0.01, message="rows to be pushed")

            # While rows keep coming by push, most polls read nothing.
            reads, since, pushes = store.reads, time.monotonic(), node.pushes
            await wait_for(lambda: node.pushes >= pushes + 400, 30.0, 0.01, message="400 more pushes")
            polls = (time.monotonic() - since) / POLL_S
            assert polls >= 2 * (POLLS_SKIPPED_MAX + 1)
            assert store.reads - reads <= polls / 3

            # A row that was neither pushed nor hinted is read by a poll all the same.
            await _append_unannounced(prefix, _row("go-1", "r1", SignalReceived("go-1", "go", None, 0)))

            async def finished() -> bool:
                info = await store.get_run("r1")
                return info is not None and info.status == "succeeded"

            await wait_for(finished, 10.0, 0.01, message="the unannounced signal to be decided")
        finally:
            stop_ticking.set()
            for task in (ticking, running):
                if task is not None:
                    task.cancel()
                    try:
                        await asyncio.wait_for(task, 10)
                    except asyncio.CancelledError:
                        pass
