"""The SQLite store's connection: one connection, used from one thread, and its schema.

SQLite serializes writers, so covey gives each database file exactly one
writing process (the runner, which holds a lock file) and in it one writing
thread. Every write is ``BEGIN IMMEDIATE`` ... ``COMMIT``; durability is WAL
with ``synchronous=FULL`` (an fsync per commit), which group commit amortizes
over every run in the batch.

The store's SQL is layered over this class, each layer using only those
below it: :mod:`.reads`, :mod:`.shared` (shared state, locks), :mod:`.tasks`
(claims, leases, inbox, timers, registry), :mod:`.commit`; ``SQLiteCore`` in
:mod:`.core` is the top.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from covey.errors import BackendError, CoveyError
from covey.store.sqlite.journal import Writes, decode_writes
from covey.store.sqlite.schema import MIGRATIONS

__all__ = ["Connection", "chunks", "from_json", "qmarks"]

_CHUNK = 400


def chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    """``items`` in slices short enough for SQLite's parameter limit."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def qmarks(count: int) -> str:
    """``?,?,?`` for an ``IN (...)`` of ``count`` values."""
    return ",".join("?" * count)


def from_json(body: bytes | None) -> Any:
    """A stored JSON column's value (NULL stays None)."""
    return None if body is None else orjson.loads(body)


class Connection:
    """One SQLite connection, its schema and its transactions; not thread-safe, callers keep it on one thread."""

    def __init__(self, path: str | Path, *, durable: bool = True, readonly: bool = False) -> None:
        self.path = str(path)
        self.readonly = readonly
        self.durable = durable
        self._recording: Writes | None = None
        """Writes held for a journal row instead of executed (see :mod:`.journal`), while a commit records."""
        self.unapplied: list[tuple[int, Writes]] = []
        """Journal rows this connection committed whose writes the tables do not have yet."""
        self._ahead = False
        """A write transaction is open, begun ahead of the write that will use it (:meth:`begin_ahead`)."""
        self.began_ahead = False
        """The write transaction now running was begun ahead: what :meth:`_on_begin` checked still holds."""
        self.writes = 0
        """Write transactions so far: tells whether one begun ahead has been used since."""
        try:
            if readonly:
                uri = f"file:{Path(self.path).resolve()}?mode=ro"
                self.db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open SQLite database {self.path}: {exc}") from None
        try:
            self.db.execute("PRAGMA busy_timeout = 5000")
            if not readonly:
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                self._migrate()
                self.replay_journal()
            else:
                self._check_version()
        except BaseException:
            self.db.close()  # a refused or unreadable file leaves no connection behind
            raise

    def close(self) -> None:
        """Apply journaled writes (readers then find them in the tables), and close the connection."""
        try:
            self.end_ahead()
            self.settle()
        except sqlite3.Error:
            pass  # the rows stay in the journal: the next writer to open the file replays them
        self.db.close()

    @staticmethod
    def now_ms() -> int:
        """The store's clock: this machine's wall clock (one machine in embedded mode)."""
        return time.time_ns() // 1_000_000

    # -- schema ------------------------------------------------------------------------

    def _version(self) -> int:
        exists = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
        if not exists:
            return 0
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _check_version(self) -> int:
        version = self._version()
        if version > len(MIGRATIONS):
            raise CoveyError(
                f"{self.path} has schema version {version}, newer than this covey knows "
                f"({len(MIGRATIONS)}); upgrade covey to open it"
            )
        return version

    def _migrate(self) -> None:
        version = self._check_version()
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in script.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(number),))
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', '0')")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    # -- transactions ------------------------------------------------------------------

    def begin_ahead(self) -> bool:
        """Begin the next write transaction now, while nothing waits for it; whether it did.

        For the sole writer of a file (the runner, which holds its lock): the
        next write then skips ``BEGIN IMMEDIATE``'s locking and the checks of
        :meth:`_on_begin`, about 9 µs of a hand-off's path, because no other
        connection can commit while this one holds the write lock. Never with
        journaled writes unapplied (they get a transaction of their own, made
        durable without an fsync), so a write begun ahead always has the
        synchronous setting of a durable commit.
        """
        if self._ahead or self.readonly or self.unapplied:
            return False
        self.db.execute("BEGIN IMMEDIATE")
        self._ahead = True
        self._on_begin()
        return True

    def end_ahead(self) -> None:
        """Roll back a transaction begun ahead that nothing used (it wrote nothing)."""
        if self._ahead:
            self._ahead = False
            self.db.execute("ROLLBACK")

    def _on_begin(self) -> None:
        """Checks a write makes once its transaction has begun (see ``Commit``): here, none."""

    def _write(self, fn: Any, *args: Any) -> Any:
        self.writes += 1
        self.began_ahead, self._ahead = self._ahead, False
        if not self.began_ahead:
            self.db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(*args)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return result

    def _many(self, sql: str, rows: list[Any]) -> None:
        """executemany, skipped when there is nothing to write (most batches touch few tables).

        While a commit records (:mod:`.journal`), the write is held in order instead.
        """
        if not rows:
            return
        if self._recording is not None:
            self._recording.append((sql, rows))
        else:
            self.db.executemany(sql, rows)

    # -- the journal (see :mod:`covey.store.sqlite.journal`) ----------------------------

    def settle(self) -> None:
        """Apply the journal rows this connection committed and has not applied, in one transaction.

        Its commit does not wait for an fsync: the rows it applies are durable
        already, and a crash before the next fsync'd commit loses only work
        that :meth:`replay_journal` redoes.
        """
        if not self.unapplied:
            return
        pending = self.unapplied
        if self.durable:
            self.db.execute("PRAGMA synchronous = NORMAL")
        try:
            self._write(self._apply, pending)
        finally:
            if self.durable:
                self.db.execute("PRAGMA synchronous = FULL")
        self.unapplied = []

    def replay_journal(self) -> None:
        """Apply the journal rows a stopped writer left (before anything reads the tables)."""
        if self.journal_left():
            self._write(self._replay)

    def _replay(self) -> None:
        # Read inside the write transaction: two processes opening the file at once apply a row once.
        rows = self.db.execute("SELECT seq, body FROM journal ORDER BY seq").fetchall()
        self._apply([(seq, decode_writes(body)) for seq, body in rows])

    def _apply(self, pending: list[tuple[int, Writes]]) -> None:
        """Apply journal rows still in the journal, and delete them (inside a write transaction).

        A row gone from the journal was applied already, by a process that
        opened the file for writing meanwhile (``LocalClient`` does, with no
        runner up): applying it twice would write its rows twice.
        """
        seqs = [seq for seq, _ in pending]
        present = {
            seq
            for part in chunks(seqs)
            for (seq,) in self.db.execute(f"SELECT seq FROM journal WHERE seq IN ({qmarks(len(part))})", part)
        }
        for seq, writes in pending:
            if seq in present:
                for sql, rows in writes:
                    self.db.executemany(sql, rows)
        self.db.executemany("DELETE FROM journal WHERE seq = ?", [(seq,) for seq in present])

    def journal_left(self) -> bool:
        """Whether the journal holds rows not applied to the tables (left by a writer that stopped).

        False on a file of a schema from before the journal.
        """
        exists = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'journal'").fetchone()
        return bool(exists and self.db.execute("SELECT 1 FROM journal LIMIT 1").fetchone())
