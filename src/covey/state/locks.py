"""Locks and semaphores for agents, with fencing tokens.

``async with ctx.lock("index", ttl_s=10) as held:`` takes the lock ``index``
for at most ten seconds (the store's clock). ``held.token`` is a fencing
token, higher than every earlier token of that lock; a live write made with
``lock=held`` is refused unless that token still holds the lock, so a holder
that was paused past its ttl (and lost the lock to another) cannot overwrite
what the new holder wrote. A semaphore is the same with ``limit`` permits:
at most that many holders at once, across every worker, e.g. a shared cap on
calls to one model provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

__all__ = ["Held", "LockTimeout"]

Acquire = Callable[[str, str, int, int], Awaitable[int | None]]
Release = Callable[[str, int], Awaitable[bool]]
Renew = Callable[[str, int, int], Awaitable[bool]]

#: First and longest pause between two tries to take a busy lock, in seconds.
FIRST_WAIT_S = 0.01
LONGEST_WAIT_S = 0.2


class LockTimeout(TimeoutError):
    """The lock or semaphore stayed busy for the whole timeout."""


class Held:
    """A lock or semaphore permit, used as ``async with``; ``token`` is its fencing token."""

    def __init__(
        self,
        name: str,
        *,
        holder: str,
        limit: int,
        ttl_s: float,
        timeout_s: float | None,
        acquire: Acquire,
        release: Release,
        renew: Renew,
    ) -> None:
        if limit < 1:
            raise ValueError("a semaphore needs at least one permit")
        self.name = name
        self.limit = limit
        self.token = 0
        self._holder = holder
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._timeout_s = timeout_s
        self._acquire, self._release, self._renew = acquire, release, renew

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        deadline = None if self._timeout_s is None else loop.time() + self._timeout_s
        pause = FIRST_WAIT_S
        while True:
            token = await self._acquire(self.name, self._holder, self.limit, self._ttl_ms)
            if token is not None:
                self.token = token
                return self
            if deadline is not None and loop.time() + pause > deadline:
                raise LockTimeout(f"{self.name!r} stayed busy for {self._timeout_s} s")
            await asyncio.sleep(pause)  # the lock is someone else's: back off and try again
            pause = min(pause * 2, LONGEST_WAIT_S)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._release(self.name, self.token)

    async def renew(self, ttl_s: float | None = None) -> bool:
        """Extend the permit; False if it was already lost (expired and maybe taken)."""
        ttl_ms = self._ttl_ms if ttl_s is None else max(1, int(ttl_s * 1000))
        return await self._renew(self.name, self.token, ttl_ms)
