"""What the runner's connection may take as known without reading: its own writes.

Before writing a batch, a commit checks that its epoch still holds the shards
of the batch's runs, and that each run is at the sequence number its decision
started from (invariant 3). Read every time, that is two statements on the
hand-off's path. But if no other connection has committed since this one last
looked, both answers are what this connection last read or wrote itself. So is
a third, asked before a hand-off's task is leased straight to the claim that
came with the report: whether any task is ready at all.
SQLite says exactly that: ``PRAGMA data_version`` changes when, and only
when, another connection committed to the file. While it stays the same,
the shards last read as held are still held, and a run's sequence number is
the one this connection last committed; once it moves, everything known is
forgotten and read afresh.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection

__all__ = ["OwnWrites"]

#: Runs whose committed sequence numbers are remembered; past this, the memory starts over.
MAX_RUNS = 50_000


class OwnWrites:
    """Sequence numbers this connection committed, and shards it read as held, while nobody else writes."""

    def __init__(self) -> None:
        self._version: int | None = None
        self._seqs: dict[str, int] = {}
        self._held_epoch: int | None = None
        self._held: set[int] = set()
        self.none_ready = False
        """No task is ready: this connection read none, and has made none ready since."""

    def check(self, db: sqlite3.Connection) -> None:
        """Forget everything if another connection committed since the last check (call inside the write
        transaction, after ``BEGIN IMMEDIATE``, so nobody can commit between this and the writes)."""
        (version,) = db.execute("PRAGMA data_version").fetchone()
        if version != self._version:
            self.forget()
            self._version = version

    def forget(self) -> None:
        """Know nothing: the next checks read the database."""
        self._seqs.clear()
        self._held_epoch = None
        self._held.clear()
        self.none_ready = False

    def holds(self, epoch: int, shards: Collection[int]) -> bool:
        """Whether ``epoch`` was read as holding every shard of ``shards``."""
        return epoch == self._held_epoch and self._held.issuperset(shards)

    def held(self, epoch: int, shards: Collection[int]) -> None:
        """``epoch`` was just read as holding ``shards``."""
        if epoch != self._held_epoch:
            self._held_epoch = epoch
            self._held.clear()
        self._held.update(shards)

    def seq(self, run_id: str) -> int | None:
        """The sequence number this connection last committed for ``run_id``, if it remembers one."""
        return self._seqs.get(run_id)

    def committed(self, seqs: dict[str, int]) -> None:
        """Runs' new sequence numbers, once their commit returned."""
        if len(self._seqs) + len(seqs) > MAX_RUNS:
            self._seqs.clear()
        self._seqs.update(seqs)
