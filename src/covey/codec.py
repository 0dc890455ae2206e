"""The one JSON codec of covey: orjson, with limits on size and depth.

Everything covey stores or sends is JSON: events, outputs, inputs and the
worker protocol. Nothing is pickled. Payloads that come from outside (a run's
input, an agent's result, a signal) pass through :func:`check_payload`, which
rejects what is not JSON, too large or too deep, naming the field.
"""

from __future__ import annotations

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
    _check_tree(value, field, 0)
    try:
        data = orjson.dumps(value)
    except TypeError as exc:
        raise InputError(f"not JSON-serializable: {exc}", field=field) from None
    if len(data) > max_bytes:
        raise InputError(f"payload is {len(data)} bytes, over the limit of {max_bytes}", field=field)
    return data


def _check_tree(value: Any, field: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InputError(f"nested deeper than {MAX_DEPTH} levels", field=field)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InputError(f"object key {key!r} is not a string", field=field)
            _check_tree(item, f"{field}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_tree(item, f"{field}[{index}]", depth + 1)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InputError(f"{value!r} is not a JSON number", field=field)
    elif value is not None and not isinstance(value, str | int | bool):
        raise InputError(f"{type(value).__name__} is not a JSON value", field=field)
