"""The connection keeper of a networked bus: connect, serve, and after any loss back off and connect again.

Every bus on a server (Redis, RabbitMQ, PostgreSQL) holds one long-lived
connection for what it receives, and must outlive the server's restarts and
the network's cuts without ever raising to its users. What differs between
them is how to connect and what to do on a live connection; the loop around
it (backoff with jitter, logging an outage once, never busy-looping on a
server that accepts and drops clients, and stopping for good on close, even
when a driver turns the cancellation into an error of its own) is this one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "ENTER_WAIT_S", "Keeper"]

log = logging.getLogger("covey.bus")

#: First pause before reconnecting after a failure, in seconds; it doubles up to BACKOFF_MAX_S.
BACKOFF_MIN_S = 0.05
#: Longest pause between two reconnection attempts, in seconds.
BACKOFF_MAX_S = 2.0
#: How long the first connection attempt may hold up ``start``, in seconds.
ENTER_WAIT_S = 2.0

C = TypeVar("C")


class Keeper(Generic[C]):
    """Keeps one connection of a bus alive in a background task.

    Args:
        what: the bus, as log lines name it ("redis bus redis://host:6379/0").
        name: the background task's name.
        connect: opens a connection (any exception is retried).
        serve: uses a live connection until it is lost; it calls :meth:`live`
            once the connection is ready (subscribed, declared).
        drop: closes a connection after ``serve`` ended, whatever happened.
        errors: the exceptions that mean a lost connection (logged briefly);
            any other is logged with its traceback, and the bus reconnects too.
    """

    def __init__(
        self,
        what: str,
        name: str,
        *,
        connect: Callable[[], Awaitable[C]],
        serve: Callable[[C], Awaitable[None]],
        drop: Callable[[C], Awaitable[None]],
        errors: tuple[type[BaseException], ...],
    ) -> None:
        self.what = what
        self.name = name
        self._connect = connect
        self._serve = serve
        self._drop = drop
        self._errors = errors
        self._task: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()
        self.stopping = False
        """Set by :meth:`stop`: the loop ends at its next turn."""

    def live(self) -> None:
        """The connection is ready: :meth:`start` may return."""
        self._attempted.set()

    async def start(self) -> None:
        """Start the loop and give the first connection a moment, so that what follows finds it live.

        An unreachable server does not fail this: the loop goes on trying.
        """
        self._attempted.clear()
        self.stopping = False
        self._task = asyncio.create_task(self._run(), name=self.name)
        try:
            async with asyncio.timeout(ENTER_WAIT_S):
                await self._attempted.wait()
        except TimeoutError:
            pass

    async def stop(self) -> None:
        """End the loop for good; idempotent."""
        task, self._task = self._task, None
        self.stopping = True
        # Drivers may turn a cancellation inside connect() into an error of their own, which the
        # loop would retry: cancel until it is really done (the flag ends the loop as well).
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = BACKOFF_MIN_S
        outage = False
        while not self.stopping:
            try:
                conn = await self._connect()
            except Exception as exc:  # any failure to connect is retried; the bus must keep trying
                self._attempted.set()
                if not outage:
                    log.warning("%s is unreachable (%s); retrying with backoff", self.what, exc)
                outage = True
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            if outage:
                log.info("%s: connected again", self.what)
            outage, since = False, loop.time()
            try:
                await self._serve(conn)
            except self._errors as exc:
                log.warning("%s: lost the connection (%s); reconnecting", self.what, exc)
                outage = True
            except Exception:  # a bug or a driver surprise must not end the bus: log it, reconnect
                log.exception("%s: unexpected error on the connection; reconnecting", self.what)
                outage = True
            finally:
                await self._drop(conn)
            # A connection that dies young (a server refusing clients) must not make this a busy loop.
            delay = BACKOFF_MIN_S if loop.time() - since > BACKOFF_MAX_S else min(delay * 2, BACKOFF_MAX_S)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
