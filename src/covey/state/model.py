"""Shared state as data: entries, the writes agents and clients make, and namespace names.

Namespaces hold keys with JSON values and a version per key (1 for a new key,
+1 on every write). A run has its own namespace, ``run:<run_id>``; any other
name (``docs``, ``team-a.cache``) is a global namespace. Writes are data too,
so every store can apply them atomically, reducers included (see
:mod:`covey.state.reducers`): no user code runs inside a store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from covey.codec import MAX_PAYLOAD_BYTES
from covey.errors import InputError

__all__ = [
    "NAMESPACE",
    "StateChange",
    "StateEntry",
    "StateOp",
    "check_key",
    "check_namespace",
    "encode_value",
    "run_namespace",
]

#: What a namespace name may look like.
NAMESPACE = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
_MAX_KEY = 512


@dataclass(frozen=True, slots=True)
class StateEntry:
    """One key's current value and version."""

    namespace: str
    key: str
    value: Any
    version: int


@dataclass(frozen=True, slots=True)
class StateChange:
    """One committed write, as a namespace's change feed records it.

    ``seq`` numbers a namespace's changes in commit order (1, 2, 3...); a
    watcher's cursor is the last ``seq`` it has seen. ``deleted`` marks a
    deletion (``value`` is then None).
    """

    namespace: str
    seq: int
    key: str
    version: int
    value: Any
    deleted: bool


@dataclass(frozen=True, slots=True)
class StateOp:
    """One write: ``put`` a value, ``delete`` a key, or ``update`` it with a named reducer.

    ``if_version`` makes the write conditional (compare-and-set): the key's
    current version must equal it, 0 meaning "the key must not exist".
    """

    op: str
    namespace: str
    key: str
    value: Any = None
    reducer: str | None = None
    if_version: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The write as a JSON object (the worker protocol's form)."""
        return {
            "op": self.op,
            "namespace": self.namespace,
            "key": self.key,
            "value": self.value,
            "reducer": self.reducer,
            "if_version": self.if_version,
        }

    @classmethod
    def from_json(cls, data: Any) -> StateOp:
        """A write from its JSON form, checked; InputError names what is wrong."""
        if not isinstance(data, dict):
            raise InputError("a state write must be an object", field="state")
        op = data.get("op")
        if op not in ("put", "delete", "update"):
            raise InputError(f"unknown state operation {op!r}; use put, delete or update", field="state.op")
        if_version = data.get("if_version")
        if if_version is not None and (
            isinstance(if_version, bool) or not isinstance(if_version, int) or if_version < 0
        ):
            raise InputError("if_version must be a whole number >= 0", field="state.if_version")
        reducer = data.get("reducer")
        if op == "update":
            from covey.state.reducers import check_reducer

            check_reducer(reducer)
        return cls(
            op,
            check_namespace(data.get("namespace")),
            check_key(data.get("key")),
            data.get("value"),
            reducer,
            if_version,
        )


def run_namespace(run_id: str) -> str:
    """The namespace of one run."""
    return f"run:{run_id}"


def check_namespace(name: Any) -> str:
    """Return ``name`` if it is a valid namespace; InputError otherwise."""
    if not isinstance(name, str) or not NAMESPACE.fullmatch(name):
        raise InputError(
            f"{name!r} is not a valid namespace: use 1-200 of A-Z a-z 0-9 _ . : -", field="namespace"
        )
    return name


def check_key(key: Any) -> str:
    """Return ``key`` if it is a valid key (non-empty text of at most 512 characters)."""
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY:
        raise InputError(f"{key!r} is not a valid key: use 1-{_MAX_KEY} characters of text", field="key")
    return key


def encode_value(op: StateOp, value: Any) -> bytes:
    """A key's new value as JSON, as every store stores it.

    Raises:
        InputError: naming the key, when the value cannot be stored: an
            ``add`` past 64 bits, a value JSON cannot hold, or one over the
            payload limit. The write is refused, never half-applied.
    """
    try:
        body = orjson.dumps(value)
    except TypeError as exc:
        raise InputError(
            f"{op.op} on {op.key!r}: the new value cannot be stored: {exc}", field=op.key
        ) from None
    if len(body) > MAX_PAYLOAD_BYTES:
        raise InputError(
            f"{op.op} on {op.key!r}: the new value is {len(body)} bytes, over the limit of {MAX_PAYLOAD_BYTES}",
            field=op.key,
        )
    return body
