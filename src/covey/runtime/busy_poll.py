"""Polling before sleeping: a process that expects a message within microseconds keeps its event loop
polling for it instead of sleeping until it comes.

Where idle processors halt (virtual machines, most laptops), waking a process
that sleeps in ``epoll`` costs more than carrying the message: on the 2-core
machine of the benchmarks, a unix-socket round trip between two uvloop
processes took 48 µs when each side slept between messages and 10 µs when the
two shared one processor. A hand-off crosses the runner's socket twice (a
worker's report, then the next task's lease), and each side sleeps while the
other works, so those wake-ups were a fifth of a hand-off (W2).

So a side that expects an answer soon polls for it: a worker after sending a
report that carries its next claim (the answer follows one commit), and the
runner after sending a lease (a quick agent reports within a few hundred µs).
The event loop keeps one callback scheduled instead of sleeping, serving
everything else as usual meanwhile, and stops at the first bytes read or at
the end of the window.

The window adapts, as Linux's halt-polling does: a message that came within
it keeps it; one that came after it, but within the longest window, widens it;
one that came later still halves it. A runner whose agents take seconds thus
soon stops polling after its leases, and starts again if they speed up.

The longest window is ``COVEY_BUSY_POLL_US`` microseconds (default 500, or
``off``). The cost is processor time: at most one window per expected message,
spent only by a process that would otherwise be idle.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from covey.environment import positive_int_or_word

__all__ = ["BUSY_POLL_VARIABLE", "DEFAULT_BUSY_POLL_US", "BusyPoll", "busy_poll_us"]

BUSY_POLL_VARIABLE = "COVEY_BUSY_POLL_US"
#: The longest window, in µs: a hand-off's commit and its two socket crossings fit within it.
DEFAULT_BUSY_POLL_US = 500
#: A window shrunk below this is closed: polling that briefly catches nothing a wake-up would miss.
MIN_WINDOW_NS = 10_000
#: A closed window reopens at this fraction of the longest one, then doubles as messages come within it.
REOPEN_FRACTION = 8


def _no_yield() -> None:
    """Where the platform has no ``sched_yield``."""


_yield_processor: Callable[[], None] = getattr(os, "sched_yield", _no_yield)
"""Gives way to any thread waiting for the processor or the interpreter (``sched_yield`` releases the GIL)."""


def busy_poll_us() -> int:
    """The longest polling window from ``COVEY_BUSY_POLL_US``, in µs; 0 for ``off``.

    Raises:
        ConfigError: naming the variable, when it holds anything but a whole number >= 1 or ``off``.
    """
    value = positive_int_or_word(BUSY_POLL_VARIABLE, DEFAULT_BUSY_POLL_US, "off")
    return 0 if value is None else value


class BusyPoll:
    """One event loop's polling for expected messages: :meth:`expect` after sending, :meth:`arrived` on reading.

    Args:
        limit_us: the longest window; None reads ``COVEY_BUSY_POLL_US``, 0 never polls.
        clock: nanoseconds (tests pass their own).
    """

    def __init__(
        self, limit_us: int | None = None, *, clock: Callable[[], int] = time.perf_counter_ns
    ) -> None:
        self.limit_ns = (busy_poll_us() if limit_us is None else limit_us) * 1000
        self.window_ns = self.limit_ns
        """How long the next expected message is polled for."""
        self.caught = 0
        """Messages that came while polled for: each saved a wake-up."""
        self.missed = 0
        """Expected messages that came after their window."""
        self._clock = clock
        self._expected_at = 0
        """When the message now expected was expected from (0: none is)."""
        self._until = 0
        self._polling = False

    def expect(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """A message is due soon: keep the running event loop polling for it, up to the window."""
        if not self.limit_ns:
            return
        now = self._clock()
        self._expected_at = now
        self._until = now + self.window_ns
        if self.window_ns and not self._polling:
            self._polling = True
            (loop or asyncio.get_running_loop()).call_soon(self._poll)

    def arrived(self) -> None:
        """Bytes were read: stop polling, and fit the window to how long the message took."""
        if not self._expected_at:
            return
        waited = self._clock() - self._expected_at
        self._expected_at = 0
        self._until = 0
        if waited <= self.window_ns:
            self.caught += 1
            return
        self.missed += 1
        if waited <= self.limit_ns:
            self.window_ns = min(self.limit_ns, max(2 * self.window_ns, self.limit_ns // REOPEN_FRACTION))
        else:
            self.window_ns //= 2
            if self.window_ns < MIN_WINDOW_NS:
                self.window_ns = 0

    @property
    def polling(self) -> bool:
        """Whether the event loop is kept polling now."""
        return self._polling

    def _poll(self) -> None:
        if self._clock() >= self._until:
            self._polling = False
            return
        # Let the process's other threads (the SQLite writer, the WAL flusher, sync agents) have the
        # interpreter: a loop that never sleeps kept them waiting for it up to the switch interval
        # (5 ms; the WAL flusher started 2 ms late at the median, 124 µs with this).
        _yield_processor()
        asyncio.get_running_loop().call_soon(self._poll)
