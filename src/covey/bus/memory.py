"""The in-process bus, and the local fan-out every bus delivers through.

:class:`MemoryBus` is the bus of the embedded runner and of tests: hints go
from :meth:`~MemoryBus.publish` straight into the subscriptions' pending sets,
in the same event loop. It is the reference implementation of
:mod:`covey.bus.base` and passes the same conformance suite as the server
buses.

:class:`Fanout` is one process's side of a bus: the subscriptions it made and
the topics they hold. The server buses (Redis, RabbitMQ, PostgreSQL) keep
*one* server-side subscription per bus object and fan what it receives out to
their local subscriptions through a ``Fanout``; so broker load grows with
processes, not with the subscriptions inside them (DESIGN, "hierarchical
sync"). A ``Fanout`` tells its :class:`Listener` when a topic gets its first
holder or loses its last, which is when the server-side subscription changes.

Design notes:

* Pending hints are a *set*: a subscription that is not waiting coalesces
  any number of hints of one topic into one, so its memory is bounded by the
  topics it holds. The contract allows coalescing; nobody counts hints.
* Filtering happens here, against the topics held *now*, so a subscription
  never sees a topic it does not hold, even when the server still delivers
  one that was just removed.
* :data:`~covey.bus.base.RESYNC` is offered to every subscription when a
  server bus reconnects; as a set member it is reported once, however often
  the connection flapped before the consumer looked.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Collection
from types import TracebackType
from typing import Protocol

from covey.bus.base import RESYNC
from covey.errors import BackendError

__all__ = ["Fanout", "Listener", "LocalSubscription", "MemoryBus", "MemoryHub"]


class Listener(Protocol):
    """The server side of a :class:`Fanout`: starts and stops receiving topics."""

    async def listen(self, topics: Collection[str]) -> None:
        """Receive ``topics`` from the server from now on; returns once the server confirmed it."""
        ...

    async def unlisten(self, topics: Collection[str]) -> None:
        """Stop receiving ``topics`` from the server."""
        ...


class LocalSubscription:
    """A :class:`~covey.bus.base.Subscription` fed by a :class:`Fanout`."""

    def __init__(self, fanout: Fanout) -> None:
        self._fanout = fanout
        self._topics: set[str] = set()
        self._pending: set[str] = set()
        self._arrived = asyncio.Event()
        self._closed = False

    @property
    def topics(self) -> frozenset[str]:
        """The topics this subscription holds."""
        return frozenset(self._topics)

    def offer(self, topic: str) -> None:
        """Take one hint if this subscription holds ``topic`` (or it is RESYNC)."""
        if self._closed or (topic != RESYNC and topic not in self._topics):
            return
        self._pending.add(topic)
        self._arrived.set()

    async def wait(self, timeout: float) -> set[str]:  # noqa: ASYNC109 -- the contract's signature
        """The topics hinted since the last call, waiting up to ``timeout`` seconds for one.

        Returns an empty set on timeout, and at once after :meth:`close`.
        """
        if not self._pending and not self._closed:
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                pass
        taken, self._pending = self._pending, set()
        self._arrived.clear()
        return taken

    async def add(self, topics: Collection[str]) -> None:
        """Also receive hints for ``topics`` from now on."""
        if self._closed:
            raise BackendError("the subscription is closed")
        await self._fanout.hold(self, topics)

    async def remove(self, topics: Collection[str]) -> None:
        """Stop receiving hints for ``topics``; a pending hint of one is dropped too."""
        await self._fanout.release(self, topics)
        self._pending.difference_update(topics)

    async def close(self) -> None:
        """Stop receiving; idempotent."""
        if self._closed:
            return
        await self._fanout.release(self, set(self._topics))
        self._fanout.forget(self)
        self.shut()

    def shut(self) -> None:
        """Mark closed without telling the fan-out (it is closing itself)."""
        self._closed = True
        self._topics.clear()
        self._arrived.set()


class Fanout:
    """One process's subscriptions and the topics they hold.

    Args:
        listener: told when a topic gets its first holder or loses its last;
            None for a fan-out with no server behind it.
    """

    def __init__(self, listener: Listener | None = None) -> None:
        self._listener = listener
        self._holders: dict[str, set[LocalSubscription]] = {}
        self._listening: dict[str, asyncio.Future[None]] = {}
        self._subscriptions: set[LocalSubscription] = set()
        self._closed = True

    def topics(self) -> set[str]:
        """Every topic some subscription holds (what the server side must deliver)."""
        return set(self._holders)

    async def subscribe(self, topics: Collection[str]) -> LocalSubscription:
        """A new subscription holding ``topics``, receiving from the moment this returns."""
        if self._closed:
            raise BackendError("the bus is closed (or was never entered with `async with`)")
        subscription = LocalSubscription(self)
        self._subscriptions.add(subscription)
        await self.hold(subscription, topics)
        return subscription

    async def hold(self, subscription: LocalSubscription, topics: Collection[str]) -> None:
        """Make ``subscription`` hold ``topics``; the listener hears of topics new to this process."""
        new, underway = [], set()
        for topic in topics:
            holders = self._holders.setdefault(topic, set())
            if not holders:
                new.append(topic)
            elif topic in self._listening:
                underway.add(self._listening[topic])
            holders.add(subscription)
            subscription._topics.add(topic)
        if new and self._listener is not None:
            done = asyncio.get_running_loop().create_future()
            self._listening.update(dict.fromkeys(new, done))
            try:
                await self._listener.listen(new)
            finally:
                for topic in new:
                    if self._listening.get(topic) is done:
                        del self._listening[topic]
                done.set_result(None)
        for other in underway:
            # Another subscription asked the server for this topic and has no answer yet.
            await asyncio.shield(other)

    async def release(self, subscription: LocalSubscription, topics: Collection[str]) -> None:
        """Make ``subscription`` drop ``topics``; the listener hears of topics nobody holds any more."""
        gone = []
        for topic in topics:
            subscription._topics.discard(topic)
            holders = self._holders.get(topic)
            if holders is None:
                continue
            holders.discard(subscription)
            if not holders:
                del self._holders[topic]
                gone.append(topic)
        if gone and self._listener is not None:
            await self._listener.unlisten(gone)

    def forget(self, subscription: LocalSubscription) -> None:
        """Drop a closed subscription."""
        self._subscriptions.discard(subscription)

    def deliver(self, topic: str) -> None:
        """Hand one received hint to every subscription holding ``topic``."""
        for subscription in self._holders.get(topic, ()):
            subscription.offer(topic)

    def resync(self) -> None:
        """Tell every subscription that hints may have been lost (reported once as RESYNC)."""
        for subscription in self._subscriptions:
            subscription.offer(RESYNC)

    def open(self) -> None:
        """Accept subscriptions (a fan-out starts closed, until its bus is entered)."""
        self._closed = False

    def close(self) -> None:
        """Close every subscription and refuse new ones, without telling the listener; idempotent."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.shut()
        self._subscriptions.clear()
        self._holders.clear()


class MemoryHub:
    """What in-process buses share, the way processes share a server and a prefix.

    Buses made on one hub see each other's hints; buses on different hubs
    never do.
    """

    def __init__(self) -> None:
        self._fanouts: set[Fanout] = set()

    @classmethod
    def named(cls, name: str) -> MemoryHub:
        """This process's hub called ``name``: buses opened on one name share hints, like one prefix on a server.

        A named hub lives as long as a bus uses it.
        """
        hub = _NAMED_HUBS.get(name)
        if hub is None:
            hub = _NAMED_HUBS[name] = cls()
        return hub

    def join(self, fanout: Fanout) -> None:
        """Deliver this hub's hints to ``fanout``."""
        self._fanouts.add(fanout)

    def leave(self, fanout: Fanout) -> None:
        """Stop delivering to ``fanout``."""
        self._fanouts.discard(fanout)

    def deliver(self, topics: Collection[str]) -> None:
        """Hand ``topics`` to every joined fan-out."""
        for fanout in list(self._fanouts):
            for topic in topics:
                fanout.deliver(topic)


_NAMED_HUBS: weakref.WeakValueDictionary[str, MemoryHub] = weakref.WeakValueDictionary()


class MemoryBus:
    """An in-process bus (asyncio, one event loop): the embedded runner's and the tests' bus.

    Args:
        hub: the medium shared with other in-process buses; each bus gets a
            private one by default.
    """

    def __init__(self, *, hub: MemoryHub | None = None) -> None:
        self._hub = hub if hub is not None else MemoryHub()
        self._fanout = Fanout()

    async def __aenter__(self) -> MemoryBus:
        self._fanout.open()
        self._hub.join(self._fanout)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every subscription of this bus; idempotent."""
        self._hub.leave(self._fanout)
        self._fanout.close()

    async def publish(self, topics: Collection[str]) -> None:
        """Hand ``topics`` to every subscription on the hub that holds them (never raises)."""
        self._hub.deliver(topics)

    async def subscribe(self, topics: Collection[str]) -> LocalSubscription:
        """A subscription to ``topics``, receiving hints published from now on."""
        return await self._fanout.subscribe(topics)
