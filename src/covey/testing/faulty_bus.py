"""A deliberate fault injector for buses: drops and duplicates hints on purpose.

Invariant 1 says a lost, duplicated or reordered hint never loses or
duplicates work. :class:`FaultyBus` is how tests prove it: it wraps any bus
and, with a seeded random generator, throws hints away or sends them twice,
so a test can run the whole system on a bus that misbehaves on purpose and
check that every task still runs to one recorded outcome. The same seed and
the same sequence of calls give the same faults, so a failing seed replays.

Never use it outside tests: it exists to make things worse.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from types import TracebackType

from covey.bus.base import Bus, Subscription

__all__ = ["FaultStatistics", "FaultyBus"]


@dataclass(frozen=True, slots=True)
class FaultStatistics:
    """What a :class:`FaultyBus` did to the hints given to it."""

    published: int
    """Hints (topics) handed to ``publish``."""
    dropped: int
    """Hints thrown away on purpose."""
    duplicated: int
    """Hints sent twice on purpose."""


class FaultyBus:
    """Wraps ``inner`` and, on purpose, drops or duplicates the hints published through it.

    Each topic of each ``publish`` call is dropped with probability ``drop``;
    each one that survives is sent a second time, in a separate publish, with
    probability ``duplicate``. Subscriptions come from ``inner`` unchanged;
    entering and leaving this bus enters and leaves ``inner``.

    Args:
        inner: the bus that really carries the hints.
        drop: probability of dropping a hint, from 0 to 1.
        duplicate: probability of sending a hint twice, from 0 to 1.
        seed: seeds the random generator, so faults replay exactly.

    Raises:
        ValueError: a probability outside [0, 1].
    """

    def __init__(self, inner: Bus, *, drop: float, duplicate: float, seed: int) -> None:
        for name, value in (("drop", drop), ("duplicate", duplicate)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability from 0 to 1, got {value!r}")
        self.inner = inner
        self.drop = drop
        self.duplicate = duplicate
        self._random = random.Random(seed)
        self._published = self._dropped = self._duplicated = 0

    async def __aenter__(self) -> FaultyBus:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)

    async def publish(self, topics: Collection[str]) -> None:
        """Publish ``topics`` through ``inner``, minus the dropped ones, plus the duplicated ones."""
        kept, again = [], []
        for topic in topics:
            self._published += 1
            if self._random.random() < self.drop:
                self._dropped += 1
                continue
            kept.append(topic)
            if self._random.random() < self.duplicate:
                self._duplicated += 1
                again.append(topic)
        if kept:
            await self.inner.publish(kept)
        if again:
            await self.inner.publish(again)

    async def subscribe(self, topics: Collection[str]) -> Subscription:
        """A subscription of ``inner``."""
        return await self.inner.subscribe(topics)

    def statistics(self) -> FaultStatistics:
        """How many hints were published, dropped and duplicated so far."""
        return FaultStatistics(self._published, self._dropped, self._duplicated)
