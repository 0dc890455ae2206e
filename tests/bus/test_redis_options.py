"""The Redis bus works whatever client options its URL carries (it listens in RESP2, on bytes)."""

from __future__ import annotations

import uuid

import pytest

from covey.bus.redis import RedisBus
from covey.testing.bus_conformance import Seen, collect
from covey.testing.servers import redis_url


@pytest.mark.parametrize("query", ["decode_responses=True", "protocol=3", "protocol=3&decode_responses=True"])
async def test_url_options_do_not_change_what_the_listener_reads(query: str) -> None:
    url = redis_url()
    async with RedisBus(
        f"{url}{'&' if '?' in url else '?'}{query}", prefix=f"covey_test_{uuid.uuid4().hex[:12]}"
    ) as bus:
        seen = Seen(await bus.subscribe({"ready:x", "state:ns"}))
        await bus.publish(["ready:x"])
        await bus.publish(["ready:x", "state:ns"])
        await collect(seen, {"ready:x", "state:ns"})
