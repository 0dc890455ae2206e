"""Helpers for testing covey and code built on it.

Tests wait on conditions, never on fixed sleeps (STYLE 4.8): a sleep long
enough for a slow CI machine wastes time everywhere else, and one short enough
to be cheap fails there. :func:`wait_for` polls a condition until it holds or
a deadline passes, and then fails with a message that says what was awaited.

The store conformance suite lives in :mod:`covey.testing.conformance`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["wait_for"]

T = TypeVar("T")

#: Default time a condition is given to hold, in seconds.
DEFAULT_TIMEOUT_S = 5.0
#: Default pause between two checks of a condition, in seconds.
DEFAULT_INTERVAL_S = 0.01


@overload
async def wait_for(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    *,
    message: str | None = ...,
) -> T: ...


@overload
async def wait_for(
    predicate: Callable[[], T],
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    *,
    message: str | None = ...,
) -> T: ...


async def wait_for(
    predicate: Callable[[], Any],
    timeout: float = DEFAULT_TIMEOUT_S,  # noqa: ASYNC109 -- a polling deadline, not a cancel scope
    interval: float = DEFAULT_INTERVAL_S,
    *,
    message: str | None = None,
) -> Any:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    ``predicate`` may be a plain function or an async one (or any callable
    returning an awaitable); it is checked at once, then every ``interval``
    seconds, and one last time at the deadline. Exceptions it raises propagate.

    Args:
        predicate: the condition; its truthy result is returned.
        timeout: seconds to wait before giving up.
        interval: seconds between two checks.
        message: what was awaited, for the failure message (defaults to the
            predicate's name).

    Raises:
        AssertionError: the condition did not hold within ``timeout`` seconds;
            the message names the condition and its last value.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        value = await result if inspect.isawaitable(result) else result
        if value:
            return value
        remaining = deadline - loop.time()
        if remaining <= 0:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last value: {value!r})")
        await asyncio.sleep(min(interval, remaining))
