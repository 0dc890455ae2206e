"""Reducers: named, pure updates a store applies atomically to one key.

A reducer is data (its name and an argument), never user code, so every store
can run it inside its own atomic step (a transaction, a Lua script) and
concurrent updates never lose one another. Each takes the current value (None
when the key does not exist) and the argument, and returns the new value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from covey.errors import InputError

__all__ = ["REDUCERS", "apply_reducer", "check_reducer"]


def _append(current: Any, arg: Any) -> Any:
    if current is None:
        return [arg]
    if not isinstance(current, list):
        raise TypeError("append needs a list")
    return [*current, arg]


def _extend(current: Any, arg: Any) -> Any:
    if not isinstance(arg, list):
        raise TypeError("extend takes a list")
    if current is None:
        return list(arg)
    if not isinstance(current, list):
        raise TypeError("extend needs a list")
    return [*current, *arg]


def _merge(current: Any, arg: Any) -> Any:
    if not isinstance(arg, dict):
        raise TypeError("merge takes an object")
    if current is None:
        return dict(arg)
    if not isinstance(current, dict):
        raise TypeError("merge needs an object")
    return {**current, **arg}


def _number(value: Any, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} needs numbers")
    return value


def _add(current: Any, arg: Any) -> Any:
    total = (0 if current is None else _number(current, "add")) + _number(arg, "add")
    if isinstance(total, float) and not math.isfinite(total):
        raise TypeError("add overflowed: the sum is not a finite number")
    return total


def _max(current: Any, arg: Any) -> Any:
    return _number(arg, "max") if current is None else max(_number(current, "max"), _number(arg, "max"))


def _min(current: Any, arg: Any) -> Any:
    return _number(arg, "min") if current is None else min(_number(current, "min"), _number(arg, "min"))


#: The reducers by name.
REDUCERS: dict[str, Callable[[Any, Any], Any]] = {
    "append": _append,
    "extend": _extend,
    "merge": _merge,
    "add": _add,
    "max": _max,
    "min": _min,
}


def check_reducer(name: Any) -> str:
    """Return ``name`` if it is a known reducer; InputError listing them otherwise."""
    if not isinstance(name, str) or name not in REDUCERS:  # a list or object from JSON is no name either
        raise InputError(f"unknown reducer {name!r}; use one of {sorted(REDUCERS)}", field="reducer")
    return str(name)


def apply_reducer(name: str, current: Any, arg: Any, *, key: str) -> Any:
    """The new value of ``key``; InputError naming the key when the types do not fit."""
    try:
        return REDUCERS[check_reducer(name)](current, arg)
    except TypeError as exc:
        raise InputError(
            f"{name} on {key!r}: {exc} (current value: {type(current).__name__})", field=key
        ) from None
