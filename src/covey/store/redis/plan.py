"""Shared-state writes: decided in Python, checked and applied by a script.

Design notes. Reducers (append, merge, add...) must behave the same on every
store, and the SQLite store runs :mod:`covey.state.reducers` itself. Porting
them to Lua was rejected: cjson reads 5.0 and 5 as the same number and writes
it back as ``5``, turns ``[]`` into ``{}``, rounds integers past 2**53 and
forgets the order of an object's keys, so a Lua ``add`` or ``merge`` would
store values Python never produced. Instead a write is decided here, by the
same code, from a consistent snapshot of the keys it touches (one script
reads them), and the write script checks that each key is still at the
version the decision read; if one moved, it writes nothing and answers
``retry``, and the caller reads again (optimistic concurrency: every retry
means another writer succeeded). Plain puts and deletes need no read: the
script evaluates them, ``if_version`` included, in the same single call.

A write goes to the script as ``[kind, tag, namespace, key, value, number]``
(see ``common.lua``): ``put``/``del`` with ``if_version`` (-1: none) are
evaluated there; ``set``/``unset``/``skip`` were decided here from version
``number``; ``ask`` could not be decided (its run was expected to conflict).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from covey.errors import CoveyError, InputError, VersionConflict
from covey.state.model import StateOp, encode_value
from covey.state.reducers import apply_reducer
from covey.store.redis.keys import Keys

__all__ = ["Blobs", "KeyState", "Planner"]


class Blobs:
    """Bodies passed as ARGV entries of their own, after the key prefix and the JSON payload."""

    FIRST = 3
    """ARGV index of the first blob (Lua counts from 1: ARGV[1] is the prefix, ARGV[2] the payload)."""

    SHARED = 64
    """Bodies up to this many bytes (``null``, ``{}``, a short output) are passed once however often they recur."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self._small: dict[bytes, int] = {}
        self._named: dict[str, int] = {}

    def add(self, body: bytes) -> int:
        """Pass ``body``; returns its ARGV index."""
        if len(body) <= self.SHARED:
            index = self._small.get(body)
            if index is not None:
                return index
            self._small[body] = index = len(self.items) + self.FIRST
        else:
            index = len(self.items) + self.FIRST
        self.items.append(body)
        return index

    def add_named(self, name: str, body: bytes) -> int:
        """Pass ``body`` once per ``name`` (a spec by its hash): later calls return the first index."""
        index = self._named.get(name)
        if index is None:
            self._named[name] = index = self.add(body)
        return index


@dataclass(slots=True)
class KeyState:
    """What a decision knows of one key: whether it exists, its last version, its value."""

    exists: bool
    last: int
    body: bytes | None = None
    decoded: list[Any] = field(default_factory=list)

    def value(self) -> Any:
        """The current value (None for a missing key), decoded once."""
        if not self.exists:
            return None
        if not self.decoded:
            self.decoded.append(orjson.loads(self.body) if self.body is not None else None)
        return self.decoded[0]


class Planner:
    """Turns StateOps into script writes, deciding each in order from a snapshot plus the writes before it."""

    def __init__(
        self, keys: Keys, blobs: Blobs, states: dict[tuple[str, str], KeyState] | None = None
    ) -> None:
        self.keys = keys
        self.blobs = blobs
        self.states = states if states is not None else {}

    def undecided(self, ops: Sequence[StateOp]) -> list[list[Any]] | None:
        """The writes for the script to evaluate itself, or None if some need a snapshot.

        That is possible when every write is a put or delete whose value encodes.
        """
        writes = []
        for op in ops:
            if op.op not in ("put", "delete"):
                return None
            index = 0
            if op.op == "put":
                try:
                    index = self.blobs.add(encode_value(op, op.value))
                except InputError:
                    return None
            kind = "put" if op.op == "put" else "del"
            iv = -1 if op.if_version is None else op.if_version
            writes.append([kind, self.keys.ns_tag(op.namespace), op.namespace, op.key, index, iv])
        return writes

    def decide(self, op: StateOp) -> tuple[list[Any], Any, int]:
        """One write decided: the script's write, the key's new value and version.

        Raises:
            VersionConflict, InputError: exactly as the SQLite store does for this write.
        """
        state = self.states[(op.namespace, op.key)]
        version = state.last if state.exists else 0
        if op.if_version is not None and op.if_version != version:
            raise VersionConflict(op.namespace, op.key, op.if_version, version)
        where = [self.keys.ns_tag(op.namespace), op.namespace, op.key]
        if op.op == "delete":
            if not state.exists:
                return ["skip", *where, 0, state.last], None, 0
            write = ["unset", *where, 0, state.last]
            self._moved(state, False, None, None)
            return write, None, state.last
        if op.op == "update":
            if op.reducer is None:
                raise InputError(f"update of {op.key!r} names no reducer", field="reducer")
            value = apply_reducer(op.reducer, state.value(), op.value, key=op.key)
        elif op.op == "put":
            value = op.value
        else:
            raise InputError(f"unknown state operation {op.op!r}", field="op")
        body = encode_value(op, value)
        write = ["set", *where, self.blobs.add(body), state.last]
        self._moved(state, True, body, value)
        return write, value, state.last

    def decide_staged(self, op: StateOp) -> tuple[list[Any], str | None]:
        """A staged write decided: one that does not fit becomes a ``skip`` and its error is returned."""
        state = self.states[(op.namespace, op.key)]
        try:
            write, _, _ = self.decide(op)
        except CoveyError as exc:
            where = [self.keys.ns_tag(op.namespace), op.namespace, op.key]
            return ["skip", *where, 0, state.last], str(exc)
        return write, None

    def ask(self, op: StateOp) -> list[Any]:
        """A write this decision could not make: the script retries if it has to apply it."""
        return ["ask", self.keys.ns_tag(op.namespace), op.namespace, op.key, 0, -1]

    @staticmethod
    def _moved(state: KeyState, exists: bool, body: bytes | None, value: Any) -> None:
        state.exists, state.last, state.body = exists, state.last + 1, body
        state.decoded[:] = [value] if exists else []
