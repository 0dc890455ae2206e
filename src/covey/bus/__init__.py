"""Buses: the fast path that tells workers and engine loops that something is there for them.

A bus only hints (invariant 1). A hint is a topic string, published after a
commit; a lost, duplicated or reordered hint never loses or duplicates work,
because everyone who acts on one reads the store, and everyone also polls the
store when no hint comes. See :mod:`covey.bus.base` for the contract, and
:func:`covey.bus.open.open_bus` to choose a bus by URL (``memory://``,
``redis://``, ``amqp://``, ``postgresql://``).
"""

from covey.bus.base import RESYNC, Bus, Subscription, topic_finished, topic_inbox, topic_ready, topic_state
from covey.bus.memory import MemoryBus
from covey.bus.open import open_bus

__all__ = [
    "RESYNC",
    "Bus",
    "MemoryBus",
    "Subscription",
    "open_bus",
    "topic_finished",
    "topic_inbox",
    "topic_ready",
    "topic_state",
]
