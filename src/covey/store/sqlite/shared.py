"""Shared state, its change feed, and locks and semaphores in the SQLite store."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from covey.errors import CoveyError, CursorExpired, InputError, StaleLease, VersionConflict
from covey.state.model import StateChange, StateEntry, StateOp, encode_value
from covey.state.reducers import apply_reducer
from covey.store.base import CommitResult, RunWrite
from covey.store.feeds import DEFAULT_FEED_KEEP, feed_trim_every, trimmed_past
from covey.store.sqlite.connection import chunks, qmarks
from covey.store.sqlite.reads import Reads

__all__ = ["Shared"]


class Shared(Reads):
    """Versioned keys, reducers, compare-and-set, change feeds, locks."""

    feed_keep = DEFAULT_FEED_KEEP
    """How many of its latest changes a namespace's feed keeps (the store sets it)."""

    def state_get(self, namespace: str, key: str) -> StateEntry | None:
        """A key's value and version."""
        row = self.db.execute(
            "SELECT value, version FROM state WHERE namespace = ? AND key = ? AND value IS NOT NULL",
            (namespace, key),
        ).fetchone()
        return None if row is None else StateEntry(namespace, key, orjson.loads(row[0]), row[1])

    def state_list(self, namespace: str, prefix: str, after: str, limit: int) -> list[StateEntry]:
        """Keys starting with ``prefix``, after ``after``, in key order."""
        rows = self.db.execute(
            "SELECT key, value, version FROM state WHERE namespace = ? AND key >= ? AND key > ?"
            " AND substr(key, 1, ?) = ? AND value IS NOT NULL ORDER BY key LIMIT ?",
            (namespace, prefix, after, len(prefix), prefix, max(limit, 0)),  # SQLite reads -1 as "no limit"
        )
        return [StateEntry(namespace, key, orjson.loads(value), version) for key, value, version in rows]

    def state_apply(
        self, ops: Sequence[StateOp], fence: tuple[str, int] | None, lock: tuple[str, int] | None = None
    ) -> list[StateEntry]:
        """Apply writes atomically (see the Store protocol)."""
        return self._write(self._state_apply, ops, fence, lock)  # type: ignore[no-any-return]

    def _state_apply(
        self, ops: Sequence[StateOp], fence: tuple[str, int] | None, lock: tuple[str, int] | None = None
    ) -> list[StateEntry]:
        if lock is not None:
            self._check_lock(lock)
        if fence is not None:
            row = self.db.execute(
                "SELECT lease_no, status FROM tasks WHERE task_id = ?", (fence[0],)
            ).fetchone()
            if row is None or row[0] != fence[1] or row[1] != "leased":
                raise StaleLease(
                    f"lease {fence[1]} of {fence[0]} is no longer current; the write was refused"
                )
        return [self._state_write(op) for op in ops]

    def _state_write(self, op: StateOp) -> StateEntry:
        """One write. A deleted key keeps a tombstone row, so its next version continues the count:
        versions of a key only ever grow, and a compare-and-set cannot mistake a new value for
        one it read before the delete."""
        row = self.db.execute(
            "SELECT value, version FROM state WHERE namespace = ? AND key = ?", (op.namespace, op.key)
        ).fetchone()
        exists = row is not None and row[0] is not None
        last = row[1] if row is not None else 0
        version = last if exists else 0
        if op.if_version is not None and op.if_version != version:
            raise VersionConflict(op.namespace, op.key, op.if_version, version)
        if op.op == "delete":
            if exists:
                self.db.execute(
                    "UPDATE state SET value = NULL, version = ? WHERE namespace = ? AND key = ?",
                    (last + 1, op.namespace, op.key),
                )
                self._state_changed(op.namespace, op.key, last + 1, None)
            return StateEntry(op.namespace, op.key, None, last + 1 if exists else 0)
        if op.op == "update":
            if op.reducer is None:
                raise InputError(f"update of {op.key!r} names no reducer", field="reducer")
            value = apply_reducer(op.reducer, orjson.loads(row[0]) if exists else None, op.value, key=op.key)
        elif op.op == "put":
            value = op.value
        else:
            raise InputError(f"unknown state operation {op.op!r}", field="op")
        body = encode_value(op, value)
        self.db.execute(
            "INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)", (op.namespace, op.key, body, last + 1)
        )
        self._state_changed(op.namespace, op.key, last + 1, body)
        return StateEntry(op.namespace, op.key, value, last + 1)

    def _state_changed(self, namespace: str, key: str, version: int, body: bytes | None) -> None:
        """Append to the namespace's change feed, numbered in commit order (the single writer's order).

        The feed keeps its last :attr:`feed_keep` changes: every
        :func:`~covey.store.base.feed_trim_every` appends, one range delete at
        the feed's old end takes those that fell out.
        """
        (seq,) = self.db.execute(
            "INSERT INTO state_seq VALUES (?, 1) ON CONFLICT (namespace) DO UPDATE SET seq = seq + 1 RETURNING seq",
            (namespace,),
        ).fetchone()
        self.db.execute(
            "INSERT INTO state_changes VALUES (?, ?, ?, ?, ?)", (namespace, seq, key, version, body)
        )
        keep = self.feed_keep
        if seq > keep and seq % feed_trim_every(keep) == 0:
            self.db.execute(
                "DELETE FROM state_changes WHERE namespace = ? AND seq <= ?", (namespace, seq - keep)
            )

    def state_changes(self, namespace: str, after_seq: int, limit: int) -> list[StateChange]:
        """Changes of a namespace after a cursor, in commit order; CursorExpired if some were trimmed."""
        rows = self.db.execute(
            "SELECT seq, key, version, value FROM state_changes WHERE namespace = ? AND seq > ? ORDER BY seq LIMIT ?",
            (namespace, after_seq, limit),
        )
        changes = [
            StateChange(
                namespace, seq, key, version, None if body is None else orjson.loads(body), body is None
            )
            for seq, key, version, body in rows
        ]
        if trimmed_past(after_seq, changes):
            head = self.db.execute("SELECT seq FROM state_seq WHERE namespace = ?", (namespace,)).fetchone()
            raise CursorExpired(namespace, after_seq, changes[0].seq, head[0] if head else None)
        return changes

    def _drop_namespaces(self, namespaces: Sequence[str]) -> None:
        """Delete namespaces whole: keys (tombstones too), change feed and counter (inside a write)."""
        for part in chunks(list(namespaces)):
            for table in ("state", "state_changes", "state_seq"):
                self.db.execute(f"DELETE FROM {table} WHERE namespace IN ({qmarks(len(part))})", part)

    def _apply_staged(self, write: RunWrite, result: CommitResult) -> None:
        """A commit's staged writes, each in a savepoint: one that does not fit is skipped, not the batch."""
        for op in write.state_ops:
            self.db.execute("SAVEPOINT staged")
            try:
                self._state_write(op)
            except CoveyError as exc:
                self.db.execute("ROLLBACK TO staged")
                result.state_errors.setdefault(write.run_id, []).append(str(exc))
            self.db.execute("RELEASE staged")

    # -- locks and semaphores ------------------------------------------------------------

    def lock_acquire(self, name: str, holder: str, limit: int, ttl_ms: int) -> int | None:
        """Take one of ``limit`` permits of ``name`` (1: a lock); its fencing token, or None if all are held."""
        return self._write(self._lock_acquire, name, holder, limit, ttl_ms)  # type: ignore[no-any-return]

    def _lock_acquire(self, name: str, holder: str, limit: int, ttl_ms: int) -> int | None:
        now = self.now_ms()
        held = {
            slot
            for (slot,) in self.db.execute(
                "SELECT slot FROM locks WHERE name = ? AND holder IS NOT NULL AND expires_ms > ? AND slot < ?",
                (name, now, limit),
            )
        }
        free = next((slot for slot in range(limit) if slot not in held), None)
        if free is None:
            return None
        token = self.db.execute(
            "INSERT INTO lock_tokens VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET token = token + 1 RETURNING token",
            (name,),
        ).fetchone()[0]
        self.db.execute(
            "INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?, ?)", (name, free, holder, token, now + ttl_ms)
        )
        return int(token)

    def lock_release(self, name: str, token: int) -> bool:
        """Give a permit back; False if that token no longer holds it."""
        return bool(
            self._write(
                lambda: (
                    self.db.execute(
                        "UPDATE locks SET holder = NULL WHERE name = ? AND token = ? AND holder IS NOT NULL",
                        (name, token),
                    ).rowcount
                )
            )
        )

    def lock_renew(self, name: str, token: int, ttl_ms: int) -> bool:
        """Extend a held permit; False if it expired or was taken over."""
        now = self.now_ms()
        return bool(
            self._write(
                lambda: (
                    self.db.execute(
                        "UPDATE locks SET expires_ms = ? WHERE name = ? AND token = ? AND holder IS NOT NULL"
                        " AND expires_ms > ?",
                        (now + ttl_ms, name, token, now),
                    ).rowcount
                )
            )
        )

    def _check_lock(self, lock: tuple[str, int]) -> None:
        row = self.db.execute(
            "SELECT 1 FROM locks WHERE name = ? AND token = ? AND holder IS NOT NULL AND expires_ms > ?",
            (lock[0], lock[1], self.now_ms()),
        ).fetchone()
        if row is None:
            raise StaleLease(
                f"token {lock[1]} of lock {lock[0]!r} is no longer current; the write was refused"
            )
