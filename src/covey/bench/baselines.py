"""The physical bound of this machine: one durable SQLite commit.

Same file system as the workloads and the same pragmas as covey's store
(``journal_mode=WAL``, ``synchronous=FULL``, ``busy_timeout=5000``, autocommit
connection with ``BEGIN IMMEDIATE`` ... ``COMMIT``); each commit inserts one
small row, one commit after another. Its p50 is the floor of a hand-off
(W2) when every step is committed before the next one starts.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

from covey.bench.config import Env
from covey.bench.figures import Figure, percentile

__all__ = ["SQLITE_PERSISTS", "sqlite_commit"]

SYSTEM = "sqlite"
SQLITE_PERSISTS = "sqlite: one small INSERT per transaction, WAL, synchronous=FULL (fsync per commit)"


def sqlite_commit(env: Env) -> list[Figure]:
    """Durable commits one after another: commits/s and the p50 latency of one commit."""
    n = env.sizes.commits
    env.say(f"sqlite: {n} durable commits")
    path = env.db("sqlite-commit")
    durations: list[float] = []
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, body BLOB NOT NULL)")
        body = b'{"type":"task_succeeded","task_id":"a:0","lease_no":1,"at_ms":0}'
        for i in range(n + 20):
            started = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO events (run_id, body) VALUES (?, ?)", (f"run-{i}", body))
            db.execute("COMMIT")
            if i >= 20:  # the first commits create the WAL
                durations.append(time.perf_counter() - started)
    total = sum(durations)
    return [
        Figure("commit", SYSTEM, env.store, "commits/s", n / total, n),
        Figure("commit", SYSTEM, env.store, "p50 µs", percentile(durations, 50) * 1e6, n),
        Figure("commit", SYSTEM, env.store, "p99 µs", percentile(durations, 99) * 1e6, n),
    ]
