"""Hints on a bus, from the side of those who send them and those who wait for them.

:class:`HintPublisher` queues topics after a commit and publishes them in the
background, coalesced, so a commit never waits on the bus and a bus failure
never fails a commit. :class:`HintRouter` holds one subscription for a whole
process and wakes whoever waits on a topic; waiting is always bounded and
followed by a look at the store, so a lost hint costs time, never work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection

from covey.bus.base import RESYNC, Bus, Subscription

__all__ = ["HintPublisher", "HintRouter", "wait_for_hints"]

log = logging.getLogger("covey.hints")

#: Pause after a subscription answered with nothing, so a closed one cannot keep the event loop busy.
IDLE_PAUSE_S = 0.05


async def wait_for_hints(subscription: Subscription, seconds: float) -> set[str]:
    """The topics ``subscription`` got, waiting up to ``seconds`` for one; empty after ``seconds``.

    A closed subscription answers at once, empty: then the rest of ``seconds``
    is slept, so a caller that polls around this never spins.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    topics = await subscription.wait(seconds)
    left = seconds - (loop.time() - started)
    if not topics and left > seconds / 2:
        await asyncio.sleep(left)
    return topics


class HintPublisher:
    """Publishes hints in the background, coalesced: callers add topics and never wait or fail."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._topics: set[str] = set()
        self._wake = asyncio.Event()
        self.stopped = False

    def stop(self) -> None:
        """End :meth:`run` at its next turn."""
        self.stopped = True
        self._wake.set()

    def add(self, topics: Collection[str]) -> None:
        """Queue topics for the next publish."""
        self._topics.update(topics)
        self._wake.set()

    async def run(self) -> None:
        """Publish whatever is queued, until stopped or cancelled."""
        while not self.stopped:
            await self._wake.wait()
            self._wake.clear()
            topics, self._topics = self._topics, set()
            if topics:
                try:
                    await self.bus.publish(topics)
                except Exception:  # a hint is only a hint: the store's polling covers it
                    log.exception("publishing hints failed")


class HintRouter:
    """One subscription, many waiters: ``arm`` before looking at the store, ``wait`` after finding nothing."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._subscription: Subscription | None = None
        self._topics: set[str] = set()
        self._flags: dict[str, asyncio.Event] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def arm(self, topics: Collection[str]) -> None:
        """Subscribe to ``topics`` if needed and forget their earlier hints (call before reading the store)."""
        missing = set(topics) - self._topics
        if missing:
            async with self._lock:
                missing = set(topics) - self._topics
                if self._subscription is None:
                    self._subscription = await self.bus.subscribe(missing)
                    self._reader = asyncio.create_task(self._read(self._subscription))
                elif missing:
                    await self._subscription.add(missing)
                self._topics |= missing
        for topic in topics:
            self._flag(topic).clear()

    async def wait(self, topics: Collection[str], timeout: float, stop: asyncio.Event | None = None) -> bool:  # noqa: ASYNC109
        """Wait up to ``timeout`` for a hint on any of ``topics`` since ``arm`` (or for ``stop``); True if hinted."""
        waits = [asyncio.ensure_future(self._flag(topic).wait()) for topic in topics]
        if stop is not None:
            waits.append(asyncio.ensure_future(stop.wait()))
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return bool(done)

    async def close(self) -> None:
        """Stop the subscription."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.close()

    def _flag(self, topic: str) -> asyncio.Event:
        flag = self._flags.get(topic)
        if flag is None:
            flag = self._flags[topic] = asyncio.Event()
        return flag

    async def _read(self, subscription: Subscription) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                topics = await subscription.wait(1.0)
            except Exception:
                log.exception("reading hints failed; waiters fall back to polling")
                await asyncio.sleep(1.0)
                continue
            if not topics:
                if loop.time() - started < 0.5:
                    await asyncio.sleep(IDLE_PAUSE_S)  # a closed subscription answers at once: never spin
                continue
            if RESYNC in topics:
                topics = set(self._topics)
            for topic in topics:
                self._flag(topic).set()
            await asyncio.sleep(0)
