"""Running covey's coroutines from synchronous entry points, on the fastest loop available.

When ``uvloop`` is installed (it is a dependency on Linux and macOS) covey's own
processes (the CLI, worker processes, ``covey.run``) use it: its event loop
costs a fraction of the default one per wake-up, and covey's hot path is a
handful of wake-ups per hand-off. Code that embeds covey in its own loop is
not affected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from covey.runtime.gc_tuning import tuned_gc

__all__ = ["loop_factory", "run_async"]

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor if uvloop is installed, else None (the default loop)."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion in a new event loop, like ``asyncio.run``, collecting garbage rarely.

    See :mod:`covey.runtime.gc_tuning`: covey's own processes spend the time
    in here, and the default thresholds cost an engine node a fifth of its CPU.
    """
    with tuned_gc(), asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:  # noqa: ASYNC109
    """Wait for ``event`` up to ``timeout`` seconds (None: forever); True if it was set.

    Not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation
    that arrives as the event is set, and a loop around it then never stops.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
