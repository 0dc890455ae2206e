"""The hand-off's commit on SQLite: one journal row made durable, its table writes applied just after.

A hand-off commit touches five or six b-trees (the run, its events, the
finished task and the next one, their indexes, the output): about nine WAL
pages to write and fsync, and as many statements, on the path from one
step's return to the next one's start. Where a batch needs nothing from the
tables that it writes itself, the commit instead records those writes, in
order, as one row of ``journal``: one statement, one or two pages. That row
is fsync'd before any answer or lease leaves (the batch is as durable as
before); the same writes are then applied to the tables in a transaction of
their own, which also deletes the row, once the answers are sent.

Nothing reads a table with a row still unapplied: every call on the
connection applies the pending rows first (:meth:`JournalMixin.settle`), and
a process that opens the file for writing replays the rows a crash left
(:meth:`JournalMixin.replay_journal`). Applying repeats writes recorded
inside one transaction, in their order, into the state they were recorded
against, so it yields exactly the tables the batch would have written.

Which batches qualify, and why, is in ``Commit._journal_eligible``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["Writes", "decode_writes", "encode_writes"]

#: Writes recorded in one transaction: each statement and its parameter rows, in order.
Writes = list[tuple[str, Sequence[Sequence[Any]]]]

_HEX = "$x"
_BASE64 = "$b"
"""How journal rows written before hex held their blobs; still read, never written."""


def _blob(value: Any) -> Any:
    if isinstance(value, bytes):
        return {_HEX: value.hex()}
    raise TypeError(f"cannot journal a {type(value).__name__}")


def encode_writes(writes: Writes) -> bytes:
    """A journal row's body: the statements and rows as JSON, blobs in hex.

    Hex, not base64, and rows as they are (orjson writes tuples as arrays):
    encoding a hand-off's writes went from 6.2 to 2.2 µs, most of it the
    callback each blob costs.
    """
    return orjson.dumps([[sql, rows] for sql, rows in writes], default=_blob)


def decode_writes(body: bytes) -> Writes:
    """The writes of :func:`encode_writes`'s ``body``, blobs as bytes again."""
    return [
        (str(sql), [[_unblob(value) for value in row] for row in rows]) for sql, rows in orjson.loads(body)
    ]


def _unblob(value: Any) -> Any:
    # A parameter is a scalar; the only object in a journal row is an encoded blob.
    if not isinstance(value, dict):
        return value
    if _HEX in value:
        return bytes.fromhex(value[_HEX])
    return base64.b64decode(value[_BASE64])
