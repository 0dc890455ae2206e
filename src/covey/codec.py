"""The one JSON codec of covey: orjson, with limits on size and depth.

Everything covey stores or sends is JSON: events, outputs, inputs and the
worker protocol. Nothing is pickled. Payloads that come from outside (a run's
input, an agent's result, a signal) pass through :func:`check_payload`, which
rejects what is not JSON, too large or too deep, naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from covey.errors import InputError

__all__ = ["MAX_DEPTH", "MAX_PAYLOAD_BYTES", "check_payload", "dumps", "loads"]

#: Largest payload (a run input, an agent result, a signal body) in bytes of JSON.
MAX_PAYLOAD_BYTES = 1_048_576
#: Deepest nesting of arrays and objects accepted in a payload.
MAX_DEPTH = 64

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    """Encode a JSON value; raises InputError if the value is not JSON."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError as exc:
        raise InputError(f"not JSON-serializable: {exc}") from None


def loads(data: bytes | str) -> Any:
    """Decode JSON text; raises InputError if it is malformed."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc}") from None


def check_payload(value: Any, *, field: str, max_bytes: int = MAX_PAYLOAD_BYTES) -> bytes:
    """Validate an outside payload and return its encoding.

    Raises:
        InputError: naming ``field`` when the value is not plain JSON (only dict
            with str keys, list, str, int, float, bool, None), is deeper than
            MAX_DEPTH, or encodes to more than ``max_bytes``.
    """
    problem = _tree_problem(value, 0)
    if problem is not None:
        reason, path = problem
        raise InputError(reason, field=field + "".join(reversed(path)))
    try:
        data = orjson.dumps(value)
    except TypeError as exc:
        raise InputError(f"not JSON-serializable: {exc}", field=field) from None
    if len(data) > max_bytes:
        raise InputError(f"payload is {len(data)} bytes, over the limit of {max_bytes}", field=field)
    return data


#: Values that are JSON as they are, skipped without a call (subclasses get the full check).
_LEAVES = frozenset({str, int, bool, type(None)})


def _tree_problem(value: Any, depth: int) -> tuple[str, list[str]] | None:
    """What makes ``value`` not plain JSON, and where (path parts, innermost first), or None.

    The path is built only on the way out of a problem: checking a good
    payload (every result an agent returns) formats no names.
    """
    if depth > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels", []
    if isinstance(value, dict):
        return _children_problem(value.items(), depth, ".{}", string_keys=True)
    if isinstance(value, list):
        return _children_problem(enumerate(value), depth, "[{}]", string_keys=False)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return f"{value!r} is not a JSON number", []
    elif value is not None and not isinstance(value, str | int | bool):
        return f"{type(value).__name__} is not a JSON value", []
    return None


def _children_problem(
    children: Iterable[tuple[Any, Any]], depth: int, name: str, *, string_keys: bool
) -> tuple[str, list[str]] | None:
    """The first problem among an object's or array's children (``name`` formats a child's label)."""
    for label, item in children:
        if string_keys and not isinstance(label, str):
            return f"object key {label!r} is not a string", []
        if type(item) not in _LEAVES:
            problem = _tree_problem(item, depth + 1)
            if problem is not None:
                problem[1].append(name.format(label))
                return problem
    return None
