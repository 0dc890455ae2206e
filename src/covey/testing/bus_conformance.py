"""The bus conformance suite: what every :class:`~covey.bus.base.Bus` must do.

DESIGN.md, invariant 8: one suite, parametrized over every bus, defines the
semantics; a bus is done when it passes against the real server. A bus only
hints (invariant 1), so the suite asks for little, and asks for it strictly:

* a hint reaches every subscription holding its topic, and never one that
  does not (``add`` and ``remove`` change that at once);
* every topic published after subscribing shows up within a deadline,
  possibly coalesced or duplicated (hints published *before* subscribing may
  or may not show up);
* ``publish`` never raises, even with the server unreachable: it logs, and
  never logs the password of the URL;
* after its connections are cut a subscription reports
  :data:`~covey.bus.base.RESYNC` and then receives hints again;
* closing is idempotent;
* buses on one prefix (two processes) see each other's hints; buses on two
  prefixes never do.

Running it against a bus
------------------------
The tests are ``async`` (pytest-asyncio). A backend's ``conftest.py``
provides three fixtures:

* ``bus_factory``: ``bus_factory(space="main")`` returns a *new, not yet
  entered* bus. Buses made with the same ``space`` share a prefix (they are
  two processes of one installation); different spaces, and other tests, are
  isolated from each other.
* ``kill_connections``: an async callable that cuts, server-side, the
  connections of every bus this test's factory made; or None for a bus that
  has no connections (the in-process one), which skips those tests.
* ``unreachable_bus_factory``: a callable returning a bus whose server cannot
  be reached, with the password ``secret-password`` in its URL; or None.

Then a test module imports the class so that pytest collects it there::

    from covey.testing.bus_conformance import TestBus

    __all__ = ["TestBus"]

``tests/bus/conftest.py`` in covey's repository does this for the memory,
Redis, RabbitMQ and PostgreSQL buses. No test sleeps to wait for something:
they wait on conditions with deadlines (:func:`covey.testing.wait_for`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Protocol

import pytest

from covey.bus.base import RESYNC, Bus, Subscription
from covey.testing import wait_for

__all__ = [
    "DEADLINE_S",
    "PASSWORD",
    "BusFactory",
    "KillConnections",
    "TestBus",
    "UnreachableBusFactory",
    "collect",
    "hinted",
]

#: How long a hint may take to show up, in seconds (generous: a slow CI machine, a reconnect).
DEADLINE_S = 10.0
#: The password in the unreachable bus's URL, which must never reach a log.
PASSWORD = "secret-password"
#: A short wait, for hints that must *not* show up, in seconds.
_SETTLE_S = 0.1


class BusFactory(Protocol):
    """Makes a new, not yet entered bus; one ``space`` is one prefix shared by its buses."""

    def __call__(self, space: str = "main") -> Bus: ...


KillConnections = Callable[[], Awaitable[None]]
UnreachableBusFactory = Callable[[], Bus]


class Seen:
    """Everything one subscription reported, gathered across calls to ``wait``."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.topics: set[str] = set()

    async def poll(self, timeout: float = 0.02) -> set[str]:  # noqa: ASYNC109
        """Wait once and remember what came; returns all seen so far."""
        self.topics |= await self.subscription.wait(timeout)
        return self.topics

    def hints(self) -> set[str]:
        """The topics seen, RESYNC aside (a bus may reconnect at any time)."""
        return self.topics - {RESYNC}


async def collect(seen: Seen, wanted: Collection[str], *, timeout: float = DEADLINE_S) -> set[str]:  # noqa: ASYNC109
    """Wait until ``seen`` has every topic in ``wanted``; returns everything it saw."""
    wanted = set(wanted)

    async def arrived() -> bool:
        return wanted <= await seen.poll()

    await wait_for(arrived, timeout=timeout, message=f"hints {sorted(wanted)}")
    return seen.topics


async def hinted(bus: Bus, seen: Seen, topic: str, *, timeout: float = DEADLINE_S) -> None:  # noqa: ASYNC109
    """Publish ``topic`` until ``seen`` has it: for moments when one hint may legitimately be lost."""

    async def arrived() -> bool:
        await bus.publish([topic])
        return topic in await seen.poll(0.1)

    await wait_for(arrived, timeout=timeout, message=f"hint {topic!r} after publishing it again and again")


@asynccontextmanager
async def entered(*buses: Bus) -> AsyncIterator[None]:
    """Enter every bus, and leave them all at the end."""
    async with AsyncExitStack() as stack:
        for bus in buses:
            await stack.enter_async_context(bus)
        yield


class TestBus:
    """The semantics every bus keeps."""

    async def test_hint_reaches_every_subscription_holding_its_topic_and_no_other(
        self, bus_factory: BusFactory
    ) -> None:
        bus = bus_factory()
        async with bus:
            # Given three subscriptions holding different topics
            only_a = Seen(await bus.subscribe({"ready:a"}))
            a_and_b = Seen(await bus.subscribe({"ready:a", "ready:b"}))
            only_c = Seen(await bus.subscribe({"ready:c"}))
            # When a and b are published, then c
            await bus.publish(["ready:a", "ready:b"])
            await bus.publish(["ready:c"])
            # Then each gets exactly what it holds
            await collect(only_a, {"ready:a"})
            await collect(a_and_b, {"ready:a", "ready:b"})
            await collect(only_c, {"ready:c"})
            for seen in (only_a, a_and_b, only_c):
                await seen.poll(_SETTLE_S)
            assert only_a.hints() == {"ready:a"}
            assert a_and_b.hints() == {"ready:a", "ready:b"}
            assert only_c.hints() == {"ready:c"}

    async def test_add_and_remove_change_what_a_subscription_receives(self, bus_factory: BusFactory) -> None:
        bus = bus_factory()
        async with bus:
            seen = Seen(await bus.subscribe({"inbox"}))
            await seen.subscription.add({"state:ns"})
            await bus.publish(["state:ns"])
            await collect(seen, {"state:ns"})

            await seen.subscription.remove({"inbox"})
            seen.topics.clear()
            await bus.publish(["inbox"])
            await bus.publish(["state:ns"])
            await collect(seen, {"state:ns"})
            await seen.poll(_SETTLE_S)
            assert seen.hints() == {"state:ns"}

    async def test_a_subscription_may_start_with_no_topic(self, bus_factory: BusFactory) -> None:
        bus = bus_factory()
        async with bus:
            seen = Seen(await bus.subscribe(()))
            assert await seen.subscription.wait(0.01) <= {RESYNC}
            await seen.subscription.add({"ready:late"})
            await bus.publish(["ready:late"])
            await collect(seen, {"ready:late"})

    async def test_removing_one_holder_keeps_the_topic_for_the_others(self, bus_factory: BusFactory) -> None:
        bus = bus_factory()
        async with bus:
            first = Seen(await bus.subscribe({"ready:shared"}))
            second = Seen(await bus.subscribe({"ready:shared"}))
            await first.subscription.remove({"ready:shared"})
            await first.subscription.close()
            await bus.publish(["ready:shared"])
            await collect(second, {"ready:shared"})

    async def test_hints_published_before_subscribing_are_not_required(self, bus_factory: BusFactory) -> None:
        bus = bus_factory()
        async with bus:
            await bus.publish(["ready:early"])
            seen = Seen(await bus.subscribe({"ready:early"}))
            await seen.poll(_SETTLE_S)  # may or may not hold the early hint: both are right
            await bus.publish(["ready:early"])
            await collect(seen, {"ready:early"})

    async def test_every_topic_published_after_subscribing_shows_up(self, bus_factory: BusFactory) -> None:
        topics = {f"ready:skill-{i}" for i in range(40)} | {"inbox"} | {f"state:ns-{i}" for i in range(10)}
        bus = bus_factory()
        async with bus:
            seen = Seen(await bus.subscribe(topics))
            # One call per topic, then all of them in one call, twice: coalescing is allowed, loss is not.
            for topic in sorted(topics):
                await bus.publish([topic])
            await bus.publish(sorted(topics))
            await bus.publish(sorted(topics))
            assert await collect(seen, topics) - {RESYNC} == topics

    async def test_topics_are_delivered_exactly_as_published(self, bus_factory: BusFactory) -> None:
        odd = {
            "ready:agent:summarize",
            "state:run/42.x",
            "ready:#",
            "ready:*.*",
            "state:naïve ünïcode ✓",
            "ready:" + "long-" * 80,  # longer than an AMQP routing key
        }
        bus = bus_factory()
        async with bus:
            seen = Seen(await bus.subscribe(odd))
            bystander = Seen(await bus.subscribe({"ready:a.b", "ready:"}))
            await bus.publish(sorted(odd))
            await collect(seen, odd)
            await bystander.poll(_SETTLE_S)
            assert seen.hints() == odd
            assert bystander.hints() == set()

    async def test_wait_returns_empty_after_its_timeout(self, bus_factory: BusFactory) -> None:
        bus = bus_factory()
        async with bus:
            subscription = await bus.subscribe({"ready:quiet"})
            assert await subscription.wait(0.05) <= {RESYNC}

    async def test_publishing_nothing_or_duplicates_is_fine(self, bus_factory: BusFactory) -> None:
        bus = bus_factory()
        async with bus:
            seen = Seen(await bus.subscribe({"inbox"}))
            await bus.publish([])
            await bus.publish(["inbox", "inbox", "inbox"])
            await collect(seen, {"inbox"})

    async def test_buses_on_one_prefix_see_each_others_hints(self, bus_factory: BusFactory) -> None:
        one, two = bus_factory(), bus_factory()
        async with entered(one, two):
            on_one = Seen(await one.subscribe({"inbox", "ready:x"}))
            on_two = Seen(await two.subscribe({"inbox", "ready:x"}))
            await one.publish(["inbox"])
            await two.publish(["ready:x"])
            await collect(on_one, {"inbox", "ready:x"})
            await collect(on_two, {"inbox", "ready:x"})

    async def test_buses_on_different_prefixes_never_see_each_others_hints(
        self, bus_factory: BusFactory
    ) -> None:
        mine, theirs = bus_factory("main"), bus_factory("other")
        async with entered(mine, theirs):
            on_mine = Seen(await mine.subscribe({"inbox", "ready:barrier"}))
            on_theirs = Seen(await theirs.subscribe({"inbox"}))
            await theirs.publish(["inbox"])
            await collect(on_theirs, {"inbox"})
            await mine.publish(["ready:barrier"])
            await collect(on_mine, {"ready:barrier"})
            await on_mine.poll(_SETTLE_S)
            assert on_mine.hints() == {"ready:barrier"}

    async def test_close_is_idempotent(self, bus_factory: BusFactory) -> None:
        bus = bus_factory()
        async with bus:
            subscription = await bus.subscribe({"inbox"})
            await subscription.close()
            await subscription.close()
            async with asyncio.timeout(1.0):  # at once: a closed subscription never waits
                assert await subscription.wait(5.0) == set()
            other = await bus.subscribe({"inbox"})
        await other.close()
        await bus.__aexit__(None, None, None)
        await bus.publish(["inbox"])  # a closed bus drops hints, it does not raise

    async def test_after_its_connections_are_cut_a_subscription_reports_resync_then_receives_again(
        self, bus_factory: BusFactory, kill_connections: KillConnections | None
    ) -> None:
        if kill_connections is None:
            pytest.skip("this bus has no connections to cut")
        bus = bus_factory()
        async with bus:
            seen = Seen(await bus.subscribe({"ready:after"}))
            await bus.publish(["ready:after"])
            await collect(seen, {"ready:after"})
            seen.topics.clear()
            # When the server drops the bus's connections
            await kill_connections()
            # Then the subscription says hints may have been lost, once, ...
            await collect(seen, {RESYNC})
            # ... and hints flow again (one published while reconnecting may be lost: publish until one lands)
            seen.topics.clear()
            await hinted(bus, seen, "ready:after")
            await seen.subscription.add({"ready:added-after"})
            await hinted(bus, seen, "ready:added-after")
            assert RESYNC not in seen.topics

    async def test_publish_never_raises_when_the_server_is_unreachable(
        self, unreachable_bus_factory: UnreachableBusFactory | None, caplog: pytest.LogCaptureFixture
    ) -> None:
        if unreachable_bus_factory is None:
            pytest.skip("this bus has no server")
        caplog.set_level(logging.DEBUG, logger="covey")
        bus = unreachable_bus_factory()
        async with bus:  # entering does not fail either: the bus keeps trying, the store is polled meanwhile
            subscription = await bus.subscribe({"inbox"})
            await bus.publish(["inbox", "ready:x"])
            await subscription.add({"ready:x"})
            assert await subscription.wait(0.05) <= {RESYNC}
            await subscription.remove({"inbox"})
            await subscription.close()
        assert any(record.levelno >= logging.WARNING for record in caplog.records), "the outage is logged"
        assert PASSWORD not in caplog.text
