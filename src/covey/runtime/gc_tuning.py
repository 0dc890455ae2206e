"""Garbage collection tuned for the time covey's event loop runs.

CPython looks for reference cycles after every 700 new container objects,
and every collection of the oldest generation walks all live objects. An
engine loop keeps thousands of runs' states in memory and allocates a few
hundred objects per decision, so with the defaults an engine node spent about
a fifth of its CPU in the collector during the W1 benchmark (0.54 s for 5,000
runs). Almost nothing covey allocates is cyclic garbage (reference counting
frees it at once), so collections can be much rarer: with these thresholds
the same node spent 0.08 s. Cycles are still collected, a few hundred
thousand allocations later.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["THRESHOLDS", "tuned_gc"]

#: New container objects before a young collection, then young collections per older one.
THRESHOLDS = (50_000, 20, 20)


@contextmanager
def tuned_gc() -> Iterator[None]:
    """Collect rarely while inside; the objects alive on entry (modules, config) are never walked again.

    The previous thresholds come back on exit, so a program that calls
    ``covey.run`` keeps its own settings afterwards.
    """
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
