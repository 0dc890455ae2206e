"""The Redis store in the store tests: a key prefix of its own per test, deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis

from covey.store.redis import RedisStore
from covey.testing.conformance import StoreFactory
from covey.testing.servers import redis_url


async def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (``{prefix}:...`` and ``{prefix:<shard>}:...``), never others."""
    client = aioredis.Redis.from_url(url)
    try:
        batch = []
        async for key in client.scan_iter(match=f"{{{prefix}[}}:]*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


@asynccontextmanager
async def redis_factory(tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """A fresh key prefix per test on the test Redis server."""
    url = redis_url()
    prefix = f"covey-test-{uuid.uuid4().hex[:16]}"
    try:
        yield lambda: RedisStore(url, prefix=prefix)
    finally:
        await delete_prefix(url, prefix)
