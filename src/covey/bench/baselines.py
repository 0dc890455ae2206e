"""The physical bounds of this machine: one durable SQLite commit, one Redis round trip, one PostgreSQL commit.

Same file system as the workloads and the same pragmas as covey's store
(``journal_mode=WAL``, ``synchronous=FULL``, ``busy_timeout=5000``, autocommit
connection with ``BEGIN IMMEDIATE`` ... ``COMMIT``); each commit inserts one
small row, one commit after another. Its p50 is the floor of a hand-off
(W2) when every step is committed before the next one starts.

The commits are timed once the WAL is in the state a store that has been
running for a while is in: full size, checkpointed, and rewritten from its
start. Until SQLite's first automatic checkpoint (1,000 pages, about 1,000 of
these commits) every commit makes the WAL file longer, and an fsync that must
also record a new file size takes about half as long again (220 µs against
145 on the machine the targets were set on). Timing from the first commits,
the p50 fell on either side of that step from one run to the next.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from covey.bench.config import Env
from covey.bench.figures import Figure, percentile

__all__ = [
    "POSTGRES_PERSISTS",
    "REDIS_PERSISTS",
    "SQLITE_PERSISTS",
    "postgres_commit",
    "redis_ping",
    "sqlite_commit",
    "steady_commits",
]

SYSTEM = "sqlite"
SQLITE_PERSISTS = "sqlite: one small INSERT per transaction, WAL, synchronous=FULL (fsync per commit)"


def sqlite_commit(env: Env) -> list[Figure]:
    """Durable commits one after another: commits/s and the p50 latency of one commit."""
    n = env.sizes.commits
    env.say(f"sqlite: {n} durable commits")
    with steady_commits(env.db("sqlite-commit")) as commit:
        durations = [commit(f"run-{i}") for i in range(n)]
    total = sum(durations)
    return [
        Figure("commit", SYSTEM, "sqlite", "commits/s", n / total, n),
        Figure("commit", SYSTEM, "sqlite", "p50 µs", percentile(durations, 50) * 1e6, n),
        Figure("commit", SYSTEM, "sqlite", "p99 µs", percentile(durations, 99) * 1e6, n),
    ]


@contextmanager
def steady_commits(path: Path) -> Iterator[Callable[[str], float]]:
    """A fresh database with covey's pragmas, its WAL warmed up (see the module's docstring).

    Yields ``commit(run_id)``: one small row inserted in its own durable
    transaction, returning the seconds it took. The warm-up's rows are
    ``warm-up`` ones.
    """
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, body BLOB NOT NULL)")
        body = b'{"type":"task_succeeded","task_id":"a:0","lease_no":1,"at_ms":0}'

        def commit(run_id: str) -> float:
            started = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO events (run_id, body) VALUES (?, ?)", (run_id, body))
            db.execute("COMMIT")
            return time.perf_counter() - started

        _warm_up_wal(db, path, lambda _: commit("warm-up"))
        yield commit


#: Commits in a row that leave the WAL's size unchanged before the timed ones start.
WAL_STEADY_COMMITS = 100


def _warm_up_wal(db: sqlite3.Connection, path: Path, commit: Callable[[int], float]) -> int:
    """Commit until the WAL is rewritten in place (see the module's docstring); the number of commits made.

    That is once its size has stayed the same for :data:`WAL_STEADY_COMMITS`
    commits in a row, after SQLite's first automatic checkpoint. It gives up
    after twice the checkpoint's interval: the timed commits then include
    some that grow the file, as before.
    """
    (pages,) = db.execute("PRAGMA wal_autocheckpoint").fetchone()
    wal = Path(f"{path}-wal")
    limit = 2 * max(int(pages), 1) + WAL_STEADY_COMMITS
    size, steady, made = -1, 0, 0
    while steady < WAL_STEADY_COMMITS and made < limit:
        commit(made)
        made += 1
        now = wal.stat().st_size
        steady = steady + 1 if now == size else 0
        size = now
    return made


REDIS_PERSISTS = "redis: one PING round trip (redis-py, one connection), the floor of any Redis call"
POSTGRES_PERSISTS = "postgres: one single-row INSERT in its own transaction (asyncpg, synchronous_commit as the server has it)"


async def redis_ping(env: Env) -> list[Figure]:
    """One Redis round trip: PING one after another on one connection; p50."""
    import redis.asyncio as redis

    n = env.sizes.commits
    env.say(f"redis: {n} PINGs")
    client = redis.from_url(env.servers.redis)
    durations: list[float] = []
    try:
        for i in range(n + 20):
            started = time.perf_counter()
            await client.ping()
            if i >= 20:
                durations.append(time.perf_counter() - started)
    finally:
        await client.aclose()
    return [
        Figure("round trip", "redis", "redis", "p50 µs", percentile(durations, 50) * 1e6, n, "PING"),
        Figure("round trip", "redis", "redis", "p99 µs", percentile(durations, 99) * 1e6, n, "PING"),
    ]


async def postgres_commit(env: Env) -> list[Figure]:
    """One PostgreSQL commit: a single-row INSERT in its own transaction, one after another; p50."""
    import asyncpg  # type: ignore[import-untyped]

    n = env.sizes.commits
    env.say(f"postgres: {n} commits")
    table = f"covey_bench_commit_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(env.servers.postgres)
    durations: list[float] = []
    try:
        await conn.execute(
            f"CREATE TABLE {table} (id bigserial PRIMARY KEY, run_id text NOT NULL, body bytea NOT NULL)"
        )
        body = b'{"type":"task_succeeded","task_id":"a:0","lease_no":1,"at_ms":0}'
        insert = f"INSERT INTO {table} (run_id, body) VALUES ($1, $2)"
        for i in range(n + 20):
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute(insert, f"run-{i}", body)
            if i >= 20:
                durations.append(time.perf_counter() - started)
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
    return [
        Figure("commit", "postgres", "postgres", "commits/s", n / sum(durations), n),
        Figure("commit", "postgres", "postgres", "p50 µs", percentile(durations, 50) * 1e6, n),
        Figure("commit", "postgres", "postgres", "p99 µs", percentile(durations, 99) * 1e6, n),
    ]
