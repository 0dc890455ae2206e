"""Shared state is linearizable per key: concurrent get/put/CAS histories from several processes check out.

Four client processes call the runner at once with random reads, writes and
compare-and-sets on two keys, recording when each call started and returned.
Every write gets the key's next version, so a valid linearization is "by
version, each write before the reads of its version"; the checker verifies
that this order exists and respects real time:

* the writes of a key have versions 1, 2, 3... with no gap or repeat;
* a read returns exactly the value written with the version it reports;
* a failed CAS saw a version other than the one it expected;
* if call A returned before call B started, A's version <= B's, and < when B
  is a successful write (B must come after A in any linearization).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from covey import Runner
from tests.linearizability import check_key

CLIENT = Path(__file__).parent / "apps" / "lin_client.py"
CLIENTS = 4
OPS = 60


def test_checker_rejects_a_stale_read() -> None:
    history = [
        {"op": "put", "ok": True, "version": 1, "value": "a", "invoke": 0, "response": 10},
        {"op": "get", "version": 0, "value": None, "invoke": 20, "response": 30},
    ]
    with pytest.raises(AssertionError, match="real time violated"):
        check_key(history)


async def test_concurrent_histories_are_linearizable(tmp_path: Path) -> None:
    db = tmp_path / "covey.db"
    async with Runner(db):
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, str(CLIENT), str(db), str(i), str(OPS), str(1000 + i), str(tmp_path / f"h{i}.json"),
                stderr=subprocess.PIPE,
            )
            for i in range(CLIENTS)
        ]  # fmt: skip
        for proc in procs:
            _, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
    records = [r for i in range(CLIENTS) for r in json.loads((tmp_path / f"h{i}.json").read_text())]
    assert len(records) == CLIENTS * OPS
    for key in ("x", "y"):
        history = [r for r in records if r["key"] == key]
        assert any(r["op"] != "get" and r.get("ok") for r in history)
        check_key(history)
