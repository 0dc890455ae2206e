"""How the engine loop answers whoever waits for a commit: a future, or a callback.

An in-process caller awaits an :class:`asyncio.Future`. The runner's socket
server instead hands a :class:`Reply`: its callback runs inside the engine
loop's turn that committed, so the answer frame is queued at once and leaves
with the lease the same commit granted, on the next turn of the event loop.
A future would wake a task first, a turn later (tens of µs on the hand-off).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["Answer", "Reply"]

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Answer(Protocol[T_contra]):
    """The part of :class:`asyncio.Future` the engine loop uses to answer."""

    def done(self) -> bool:
        """Whether an answer was given already (the first one counts)."""
        ...

    def set_result(self, result: T_contra, /) -> None:
        """Answer with a result."""
        ...

    def set_exception(self, exception: BaseException, /) -> None:
        """Answer with an error."""
        ...


class Reply(Generic[T]):
    """An answer handed to ``callback(result, error)`` the moment it is given, once."""

    __slots__ = ("_callback", "_done")

    def __init__(self, callback: Callable[[T | None, BaseException | None], None]) -> None:
        self._callback = callback
        self._done = False

    def done(self) -> bool:
        """Whether the callback ran."""
        return self._done

    def set_result(self, result: T, /) -> None:
        """Call back with ``result``."""
        self._done = True
        self._callback(result, None)

    def set_exception(self, exception: BaseException, /) -> None:
        """Call back with ``exception``."""
        self._done = True
        self._callback(None, exception)
