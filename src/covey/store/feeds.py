"""How much of each namespace's change feed a store keeps, and telling a cursor that fell behind.

A feed keeps its latest ``feed_keep`` changes (``COVEY_FEED_KEEP``, else
10,000): the writes that add changes trim the oldest, a batch at a time
(:func:`feed_trim_every`), in the same transaction or script. Changes are
numbered without gaps, so a read whose first change is not the one right
after its cursor has found the feed trimmed (:func:`trimmed_past`), and says
so with :class:`~covey.errors.CursorExpired` rather than skipping the gap.
"""

from __future__ import annotations

from collections.abc import Sequence

from covey.environment import positive_int
from covey.errors import ConfigError
from covey.state.model import StateChange

__all__ = [
    "DEFAULT_FEED_KEEP",
    "FEED_KEEP_VARIABLE",
    "BoundedFeeds",
    "configured_feed_keep",
    "feed_trim_every",
    "trimmed_past",
]

#: How many of its latest changes each namespace's change feed keeps, by default (``Store.feed_keep``).
DEFAULT_FEED_KEEP = 10_000
#: The environment variable that sets it for every store a process opens (runner, nodes, workers, clients).
FEED_KEEP_VARIABLE = "COVEY_FEED_KEEP"


def feed_trim_every(keep: int) -> int:
    """Every how many changes a store may trim a feed that keeps ``keep``: 1% of it, so at most 1% more is held.

    Trimming deletes at the feed's old end while writes append at its new
    end: two places in the index per write. Trimming a batch at a time keeps
    the cost of a bounded feed near that of an unbounded one.
    """
    return max(1, keep // 100)


def configured_feed_keep() -> int:
    """``COVEY_FEED_KEEP`` if set (a whole number >= 1), else :data:`DEFAULT_FEED_KEEP`.

    One variable rather than an option per command: every process that writes
    shared state trims feeds, so they should all agree, and worker processes
    inherit it.

    Raises:
        ConfigError: the variable is not a whole number of at least 1.
    """
    return positive_int(FEED_KEEP_VARIABLE, DEFAULT_FEED_KEEP)


class BoundedFeeds:
    """A store's ``feed_keep``: from :func:`configured_feed_keep` when the store is made, settable, at least 1.

    Each store's writes trim the feeds they add to, with the value of the
    moment, so a new value holds from the next write on. A bad
    ``COVEY_FEED_KEEP`` is refused when the store object is made, before
    anything is opened.
    """

    _feed_keep: int

    def _read_feed_keep(self) -> None:
        """Take the configured value (stores call it in ``__init__``)."""
        self._feed_keep = configured_feed_keep()

    @property
    def feed_keep(self) -> int:
        """How many of its latest changes each namespace's change feed keeps (see ``Store.feed_keep``)."""
        return self._feed_keep

    @feed_keep.setter
    def feed_keep(self, keep: int) -> None:
        # At least 1: an emptied feed would leave no first change for trimmed_past to see a gap by.
        if keep < 1:
            raise ConfigError(f"a change feed must keep at least 1 change, not {keep}")
        self._feed_keep = keep
        self._feed_keep_changed(keep)

    def _feed_keep_changed(self, keep: int) -> None:
        """Hook for a store whose writer holds its own copy of the value."""


def trimmed_past(after_seq: int, changes: Sequence[StateChange]) -> bool:
    """Whether ``changes``, read after ``after_seq``, do not start right after it: the feed was trimmed past it.

    A namespace's changes are numbered 1, 2, 3... with no gaps, and trimming
    takes the oldest: a first change past ``after_seq + 1`` means the ones in
    between are gone. Every store's ``state_changes`` ends with this check;
    when it holds, the store reads the namespace's head (its last change) and
    raises :class:`~covey.errors.CursorExpired` with it, so a resync can
    start right there.
    """
    return bool(changes) and changes[0].seq > after_seq + 1
