"""Shared state, its change feed, and locks and semaphores in the PostgreSQL store.

A batch of writes runs in three statements inside the caller's transaction:

1. lock the change-feed counter row of every namespace the batch touches
   (creating it if missing). Every writer of a namespace takes that lock
   first, so writers of one namespace queue there, and each change's ``seq``
   is assigned in commit order (a database sequence's values are not);
2. read the keys the batch touches, in a new statement, so its snapshot holds
   every write committed before the lock was granted;
3. write the new rows, the changes and the counters in one statement
   (changes the batch itself pushes out of a feed are never inserted); about
   once per 1% of ``feed_keep`` changes, a range delete trims a feed to its
   last ``feed_keep``.

Between 2 and 3 the batch is worked out in Python by :class:`StatePlan`
(reducers are Python, and must behave the same on every store).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from covey.errors import CoveyError, CursorExpired, InputError, StaleLease, VersionConflict
from covey.state.model import StateChange, StateEntry, StateOp, encode_value
from covey.state.reducers import apply_reducer
from covey.store.feeds import feed_trim_every, trimmed_past
from covey.store.postgres.connection import NOW_MS, Conn

__all__ = [
    "AllHeld",
    "StatePlan",
    "apply_staged",
    "drop_namespaces",
    "lock_acquire",
    "lock_release",
    "lock_renew",
    "state_apply",
    "state_changes",
    "state_get",
    "state_list",
]

LOCK_NAMESPACES_SQL = """
INSERT INTO state_seq AS q (namespace, seq) SELECT unnest($1::text[]), 0
ON CONFLICT (namespace) DO UPDATE SET seq = q.seq
RETURNING namespace, seq
"""
READ_KEYS_SQL = """
SELECT namespace, key, value, version FROM state
WHERE (namespace, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""
WRITE_SQL = """
WITH rows AS (
    INSERT INTO state (namespace, key, value, version)
    SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bigint[])
    ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, version = excluded.version
), changes AS (
    INSERT INTO state_changes (namespace, seq, key, version, value)
    SELECT * FROM unnest($5::text[], $6::bigint[], $7::text[], $8::bigint[], $9::bytea[])
)
UPDATE state_seq SET seq = c.seq FROM unnest($10::text[], $11::bigint[]) AS c (namespace, seq)
WHERE state_seq.namespace = c.namespace
"""
HEAD_SQL = "SELECT seq FROM state_seq WHERE namespace = $1"
TRIM_SQL = "DELETE FROM state_changes WHERE namespace = $1 AND seq <= $2"
DROP_COUNTERS_SQL = "DELETE FROM state_seq WHERE namespace = ANY($1::text[])"
DROP_ROWS_SQL = """
WITH rows AS (DELETE FROM state WHERE namespace = ANY($1::text[]))
DELETE FROM state_changes WHERE namespace = ANY($1::text[])
"""
GET_SQL = "SELECT value, version FROM state WHERE namespace = $1 AND key = $2 AND value IS NOT NULL"
LIST_SQL = """
SELECT key, value, version FROM state
WHERE namespace = $1 AND key >= $2 AND key > $3 AND starts_with(key, $2) AND value IS NOT NULL
ORDER BY key LIMIT $4
"""
CHANGES_SQL = """
SELECT seq, key, version, value FROM state_changes WHERE namespace = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""
FENCE_SQL = "SELECT lease_no, status FROM tasks WHERE task_id = $1 FOR SHARE"
LOCK_HELD_SQL = f"""
SELECT 1 FROM locks WHERE name = $1 AND token = $2 AND holder IS NOT NULL AND expires_ms > {NOW_MS} FOR SHARE
"""
NEXT_TOKEN_SQL = """
INSERT INTO lock_tokens AS t (name, token) VALUES ($1, 1)
ON CONFLICT (name) DO UPDATE SET token = t.token + 1 RETURNING token
"""
TAKE_PERMIT_SQL = f"""
WITH free AS (
    SELECT s FROM generate_series(0, $2::integer - 1) AS s
    WHERE NOT EXISTS (
        SELECT 1 FROM locks WHERE name = $1 AND slot = s AND holder IS NOT NULL AND expires_ms > {NOW_MS}
    )
    ORDER BY s LIMIT 1
)
INSERT INTO locks AS l (name, slot, holder, token, expires_ms)
SELECT $1, s, $3, $4, {NOW_MS} + $5 FROM free
ON CONFLICT (name, slot) DO UPDATE SET holder = excluded.holder, token = excluded.token,
    expires_ms = excluded.expires_ms
WHERE l.holder IS NULL OR l.expires_ms <= {NOW_MS}
RETURNING token
"""
RELEASE_SQL = (
    "UPDATE locks SET holder = NULL WHERE name = $1 AND token = $2 AND holder IS NOT NULL RETURNING 1"
)
RENEW_SQL = f"""
UPDATE locks SET expires_ms = {NOW_MS} + $3
WHERE name = $1 AND token = $2 AND holder IS NOT NULL AND expires_ms > {NOW_MS} RETURNING 1
"""


class AllHeld(Exception):
    """Every permit of a lock is held: raised inside the transaction so the token it took rolls back."""


class StatePlan:
    """A batch of writes worked out on the rows read under the namespaces' locks.

    ``rows`` maps (namespace, key) to (JSON value or None when absent, last
    version): a deleted key keeps its last version, so versions only grow.
    Each write raises before it changes anything, so a refused write leaves
    the plan as it was. ``keep`` is how many of its latest changes each
    namespace's feed keeps.
    """

    def __init__(
        self, rows: dict[tuple[str, str], tuple[bytes | None, int]], seqs: dict[str, int], keep: int
    ) -> None:
        self.rows = rows
        self.seqs = seqs
        self.keep = keep
        self.first_seqs = dict(seqs)
        """Each namespace's last change number before this batch."""
        self.changes: list[tuple[str, int, str, int, bytes | None]] = []
        self.dirty: set[tuple[str, str]] = set()

    def apply(self, op: StateOp) -> StateEntry:
        """One write; its entry afterwards.

        Raises:
            VersionConflict: ``if_version`` is not the key's version (0: absent).
            InputError: an unknown operation, a reducer that does not fit, a value too big.
        """
        body, last = self.rows.get((op.namespace, op.key), (None, 0))
        exists = body is not None
        version = last if exists else 0
        if op.if_version is not None and op.if_version != version:
            raise VersionConflict(op.namespace, op.key, op.if_version, version)
        if op.op == "delete":
            if not exists:
                return StateEntry(op.namespace, op.key, None, 0)
            self._set(op.namespace, op.key, None, last + 1)
            return StateEntry(op.namespace, op.key, None, last + 1)
        if op.op == "update":
            if op.reducer is None:
                raise InputError(f"update of {op.key!r} names no reducer", field="reducer")
            current = orjson.loads(body) if body is not None else None
            value = apply_reducer(op.reducer, current, op.value, key=op.key)
        elif op.op == "put":
            value = op.value
        else:
            raise InputError(f"unknown state operation {op.op!r}", field="op")
        self._set(op.namespace, op.key, encode_value(op, value), last + 1)
        return StateEntry(op.namespace, op.key, value, last + 1)

    def _set(self, namespace: str, key: str, body: bytes | None, version: int) -> None:
        self.rows[(namespace, key)] = (body, version)
        self.dirty.add((namespace, key))
        seq = self.seqs.get(namespace, 0) + 1
        self.seqs[namespace] = seq
        self.changes.append((namespace, seq, key, version, body))

    def write_args(self) -> list[Any]:
        """The arguments of ``WRITE_SQL``: the keys' last rows, the changes kept, the counters.

        A change the batch's own later ones push out of the feed is left out
        rather than inserted and deleted. The last change of a namespace is
        always kept (``keep`` >= 1), so there is at least one.
        """
        keys = sorted(self.dirty)
        namespaces = sorted({namespace for namespace, _ in keys})
        kept = [change for change in self.changes if change[1] > self.seqs[change[0]] - self.keep]
        return [
            [namespace for namespace, _ in keys],
            [key for _, key in keys],
            [self.rows[k][0] for k in keys],
            [self.rows[k][1] for k in keys],
            *(list(column) for column in zip(*kept, strict=True)),
            namespaces,
            [self.seqs[namespace] for namespace in namespaces],
        ]

    def trims(self) -> list[tuple[str, int]]:
        """(namespace, last change to delete) for each feed this batch takes past a trimming point.

        A feed is trimmed once every :func:`~covey.store.base.feed_trim_every`
        changes, by a range delete on its primary key: most writes delete nothing.
        """
        every = feed_trim_every(self.keep)
        return [
            (namespace, seq - self.keep)
            for namespace, seq in sorted(self.seqs.items())
            if seq > self.keep and seq // every > self.first_seqs.get(namespace, 0) // every
        ]


async def _plan(conn: Conn, ops: Sequence[StateOp], keep: int) -> StatePlan:
    """Lock the namespaces of ``ops`` (in name order, so two batches never deadlock), then read their keys."""
    namespaces = sorted({op.namespace for op in ops})
    seqs = {row["namespace"]: row["seq"] for row in await conn.fetch(LOCK_NAMESPACES_SQL, namespaces)}
    keys = sorted({(op.namespace, op.key) for op in ops})
    rows = await conn.fetch(READ_KEYS_SQL, [k[0] for k in keys], [k[1] for k in keys])
    return StatePlan({(r["namespace"], r["key"]): (r["value"], r["version"]) for r in rows}, seqs, keep)


async def _write(conn: Conn, plan: StatePlan) -> None:
    if plan.changes:
        await conn.execute(WRITE_SQL, *plan.write_args())
        for namespace, last in plan.trims():
            await conn.execute(TRIM_SQL, namespace, last)


async def state_apply(
    conn: Conn, ops: Sequence[StateOp], fence: tuple[str, int] | None, lock: tuple[str, int] | None, keep: int
) -> list[StateEntry]:
    """Apply writes, all or none (the caller's transaction rolls back on an error); feeds keep ``keep``."""
    if lock is not None and await conn.fetchval(LOCK_HELD_SQL, lock[0], lock[1]) is None:
        raise StaleLease(f"token {lock[1]} of lock {lock[0]!r} is no longer current; the write was refused")
    if fence is not None:
        # FOR SHARE: the lease cannot expire or move on until this write commits.
        row = await conn.fetchrow(FENCE_SQL, fence[0])
        if row is None or row["lease_no"] != fence[1] or row["status"] != "leased":
            raise StaleLease(f"lease {fence[1]} of {fence[0]} is no longer current; the write was refused")
    if not ops:
        return []
    plan = await _plan(conn, ops, keep)
    entries = [plan.apply(op) for op in ops]
    await _write(conn, plan)
    return entries


async def apply_staged(
    conn: Conn, ops: Sequence[tuple[str, StateOp]], errors: dict[str, list[str]], keep: int
) -> None:
    """A commit's staged writes, in order: one that does not fit is skipped and reported by run, not the batch.

    Their namespaces' feeds are trimmed to their last ``keep`` changes, as by :func:`state_apply`.
    """
    if not ops:
        return
    plan = await _plan(conn, [op for _, op in ops], keep)
    for run_id, op in ops:
        try:
            plan.apply(op)
        except CoveyError as exc:
            errors.setdefault(run_id, []).append(str(exc))
    await _write(conn, plan)


async def drop_namespaces(conn: Conn, namespaces: Sequence[str]) -> None:
    """Delete namespaces whole: keys, tombstones, change feed and counter (the counter first: it is the lock)."""
    if namespaces:
        await conn.execute(DROP_COUNTERS_SQL, list(namespaces))
        await conn.execute(DROP_ROWS_SQL, list(namespaces))


async def state_get(conn: Conn, namespace: str, key: str) -> StateEntry | None:
    """A key's value and version."""
    row = await conn.fetchrow(GET_SQL, namespace, key)
    return None if row is None else StateEntry(namespace, key, orjson.loads(row["value"]), row["version"])


async def state_list(conn: Conn, namespace: str, prefix: str, after: str, limit: int) -> list[StateEntry]:
    """Keys starting with ``prefix``, after ``after``, in code point order."""
    if limit <= 0:
        return []
    rows = await conn.fetch(LIST_SQL, namespace, prefix, after, limit)
    return [StateEntry(namespace, r["key"], orjson.loads(r["value"]), r["version"]) for r in rows]


async def state_changes(conn: Conn, namespace: str, after_seq: int, limit: int) -> list[StateChange]:
    """Changes of a namespace after a cursor, in commit order; CursorExpired if some were trimmed.

    One statement, so one snapshot: a trim committing meanwhile cannot open a
    gap between rows read, and a first row past ``after_seq + 1`` is a trim.
    """
    rows = await conn.fetch(CHANGES_SQL, namespace, after_seq, max(limit, 0))
    changes = [
        StateChange(
            namespace,
            r["seq"],
            r["key"],
            r["version"],
            None if r["value"] is None else orjson.loads(r["value"]),
            r["value"] is None,
        )
        for r in rows
    ]
    if trimmed_past(after_seq, changes):
        head = await conn.fetchval(HEAD_SQL, namespace)
        raise CursorExpired(namespace, after_seq, changes[0].seq, None if head is None else int(head))
    return changes


async def lock_acquire(conn: Conn, name: str, holder: str, limit: int, ttl_ms: int) -> int:
    """Take one of ``limit`` permits; its fencing token. Raises AllHeld, to roll the token back, if none is free.

    The token row is locked first, so acquirers of one name queue, and the
    free-slot check, a new statement, sees every permit granted before.
    """
    token = int(await conn.fetchval(NEXT_TOKEN_SQL, name))
    taken = await conn.fetchval(TAKE_PERMIT_SQL, name, limit, holder, token, ttl_ms)
    if taken is None:
        raise AllHeld(name)
    return token


async def lock_release(conn: Conn, name: str, token: int) -> bool:
    """Give a permit back; False if that token no longer holds it."""
    return await conn.fetchval(RELEASE_SQL, name, token) is not None


async def lock_renew(conn: Conn, name: str, token: int, ttl_ms: int) -> bool:
    """Extend a held permit; False if it expired or was taken over."""
    return await conn.fetchval(RENEW_SQL, name, token, ttl_ms) is not None
