"""One client of the linearizability test: random get/put/CAS on shared keys, every call timed.

Run as ``python lin_client.py DB_PATH CLIENT_ID OPS SEED OUT``; writes one JSON
record per call to OUT: invoke and response times (the machine's monotonic
clock, shared by all processes), the operation and what came back.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from covey import LocalClient, VersionConflict
from covey.state.model import StateOp

KEYS = ["x", "y"]
NAMESPACE = "lin"


async def one(client: LocalClient, rng: random.Random, me: int, i: int) -> dict[str, Any]:
    key = rng.choice(KEYS)
    kind = rng.choice(["get", "put", "cas"])
    record: dict[str, Any] = {"client": me, "op": kind, "key": key, "invoke": time.monotonic_ns()}
    if kind == "get":
        entry = await client.state_get(NAMESPACE, key)
        record.update(version=entry.version if entry else 0, value=entry.value if entry else None)
    else:
        value = f"{me}-{i}"
        expected = rng.randint(0, 6) if kind == "cas" else None
        record.update(value=value, expected=expected)
        try:
            (entry,) = await client.state_apply([StateOp("put", NAMESPACE, key, value, None, expected)])
            record.update(ok=True, version=entry.version)
        except VersionConflict as exc:
            record.update(ok=False, version=exc.version)
    record["response"] = time.monotonic_ns()
    return record


async def main() -> None:
    db, me, ops, seed, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    client = LocalClient(db)
    rng = random.Random(seed)
    records = [await one(client, rng, me, i) for i in range(ops)]
    await asyncio.to_thread(Path(out).write_text, json.dumps(records))


if __name__ == "__main__":
    asyncio.run(main())
