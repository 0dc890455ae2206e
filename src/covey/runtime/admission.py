"""Admission control: a submit is refused with a clear "too busy" while the backlog is full.

Every unfinished run costs memory in the engine that decides it (its state
is cached) and rows in the store, and a run submitted while engines are down
waits in the inbox. Without a bound, a client that submits faster than the
fleet finishes grows both until something runs out. covey bounds the
**backlog**, the runs not yet finished (running, or waiting in the inbox with
the other undecided inputs): a submit that would take it past the limit is
refused with :class:`~covey.errors.TooBusy`, which says how many are
unfinished, the limit, and when to try again. Nothing of a refused submit is
stored.

The count comes from the store (``Store.backlog``, an index count) at most
once a second, plus the runs this process admitted since; at the limit it is
read again, at most every tenth of a second, before a submit is refused, so
runs that finished meanwhile make room at once. Several processes submitting
to one store each read the same count, so the bound holds to within what they
admit in a second: it keeps a backlog from growing without end, it is not a
quota.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from covey.environment import positive_int_or_word
from covey.errors import ConfigError, TooBusy
from covey.runtime.submit import submitted_before
from covey.store.base import Store

__all__ = [
    "DEFAULT_MAX_BACKLOG",
    "MAX_BACKLOG_VARIABLE",
    "RETRY_AFTER_S",
    "Admission",
    "MaxBacklog",
    "configured_max_backlog",
    "max_backlog_of",
]

#: Unfinished runs accepted by default: far more than one engine decides at once, small enough that
#: their cached states fit in a few GB of memory.
DEFAULT_MAX_BACKLOG = 100_000
#: The environment variable that sets the limit: a positive integer, or ``unlimited``.
MAX_BACKLOG_VARIABLE = "COVEY_MAX_BACKLOG"
#: How long a refused client is told to wait.
RETRY_AFTER_S = 1.0
#: How often the store's count is read while the backlog is below the limit.
RECOUNT_S = 1.0
#: At the limit, the count is read again before a refusal if the last reading is older than this.
RECOUNT_AT_LIMIT_S = 0.1


#: How a caller sets the limit: a number, ``"unlimited"``, or None for the environment's (or the default).
MaxBacklog = int | Literal["unlimited"] | None


def max_backlog_of(value: MaxBacklog) -> int | None:
    """The limit ``value`` asks for (None: no limit).

    Raises:
        ConfigError: a number below 1, or anything but a number or ``"unlimited"``.
    """
    if value is None:
        return configured_max_backlog()
    if value == "unlimited":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"max_backlog={value!r}: expected a positive integer or 'unlimited'")
    return value


def configured_max_backlog() -> int | None:
    """The limit ``COVEY_MAX_BACKLOG`` sets (the default if unset); None for ``unlimited``.

    Raises:
        ConfigError: the variable holds anything else.
    """
    return positive_int_or_word(MAX_BACKLOG_VARIABLE, DEFAULT_MAX_BACKLOG, "unlimited")


class Admission:
    """Admits new runs against a store's backlog; see the module docstring.

    One per process and store: it remembers the last count and what it admitted since.

    Args:
        limit: the most unfinished runs accepted (at least 1); None admits everything.
        clock: seconds, monotonic (a test passes its own).
    """

    def __init__(self, limit: int | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._counted = 0
        """The store's backlog when last read."""
        self._counted_at: float | None = None
        self._admitted = 0
        """Runs this process admitted since the last reading (not all of them counted by it)."""

    async def admit(self, store: Store, runs: int = 1) -> None:
        """Count ``runs`` new runs in, or refuse them all; ``store`` is where they would go.

        Raises:
            TooBusy: the backlog has no room for ``runs`` more.
        """
        if self.limit is None:
            return
        now = self._clock()
        if self._stale(now, RECOUNT_AT_LIMIT_S if self._full(runs) else RECOUNT_S):
            await self._recount(store, now)
        if self._full(runs):
            raise TooBusy(self._counted + self._admitted, self.limit, RETRY_AFTER_S)
        self._admitted += runs

    async def admit_submit(self, store: Store, run_id: str | None) -> bool:
        """Admit one submit; False if it repeats a run id submitted before, to be answered as it stands.

        A repeated submit is a no-op that returns the first answer, full
        backlog or not: only a run that would be new is refused.

        Raises:
            TooBusy: the backlog is full and ``run_id`` (if the caller chose one) names no run.
        """
        try:
            await self.admit(store)
        except TooBusy:
            if run_id is not None and await submitted_before(store, run_id):
                return False
            raise
        return True

    def _stale(self, now: float, after_s: float) -> bool:
        """Whether the count was never read, or read ``after_s`` or longer ago."""
        return self._counted_at is None or now - self._counted_at >= after_s

    def _full(self, runs: int) -> bool:
        assert self.limit is not None
        return self._counted + self._admitted + runs > self.limit

    async def _recount(self, store: Store, now: float) -> None:
        self._counted = await store.backlog()
        self._counted_at = now
        self._admitted = 0
