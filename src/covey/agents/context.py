"""What an agent sees of its task: ids, attempt, logger, heartbeat, cancellation.

A :class:`Context` is built by the worker for each try. The
``idempotency_key`` is the same for every try of a task, so an agent can make
its side effects idempotent (covey runs a task at least once and records
exactly one outcome).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from covey.state.handle import StateHandle
    from covey.state.locks import Acquire, Held, Release, Renew
    from covey.state.model import StateOp

__all__ = ["Context", "Handoff", "TaskCancelled"]


class TaskCancelled(Exception):
    """Raised by :meth:`Context.check_cancelled` once the task's lease is gone."""


@dataclass(frozen=True, slots=True)
class Handoff:
    """An agent's result that also adds steps to its run.

    ``steps`` uses the spec's own shape (``{"name": {"skill": ..., "input": ...}}``)
    and may refer to this step's output as ``${steps.<this step>}``. The run's
    ``max_steps`` bounds how far hand-offs may loop.
    """

    output: Any = None
    steps: Mapping[str, Any] = field(default_factory=dict)


class Context:
    """The running task, as its agent sees it."""

    def __init__(
        self,
        *,
        run_id: str,
        task_id: str,
        step: str,
        index: int | None,
        try_no: int,
        lease_no: int,
        heartbeat: Callable[[], Awaitable[None]],
        logger: logging.Logger | None = None,
        state: StateHandle | None = None,
        make_state: Callable[[Context], StateHandle] | None = None,
        locks: tuple[Acquire, Release, Renew] | None = None,
    ) -> None:
        """``state``, or ``make_state`` to build it on first use (a worker builds none for most tries)."""
        self.run_id = run_id
        self.task_id = task_id
        self.step = step
        self.index = index
        self.try_no = try_no
        """1 for the first try, 2 for the first retry..."""
        self.lease_no = lease_no
        """The fencing token of this try; higher than every earlier lease of the task."""
        self._heartbeat = heartbeat
        self._state = state
        self._make_state = make_state
        self._locks = locks
        self._cancelled = False  # set from the worker's event loop; a bool read is atomic
        self._logger = logger

    @functools.cached_property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry ``run_id``, ``task_id`` and ``try_no``."""
        base = self._logger or logging.getLogger("covey.agent")
        return logging.LoggerAdapter(
            base, {"run_id": self.run_id, "task_id": self.task_id, "try_no": self.try_no}
        )

    @property
    def idempotency_key(self) -> str:
        """Stable across every try of this task: use it to make side effects idempotent."""
        return self.task_id

    @property
    def state(self) -> StateHandle:
        """Shared state: reads, staged writes (committed with the result) and ``live`` writes."""
        if self._state is None:
            if self._make_state is None:
                raise RuntimeError("this context has no shared state (it was not built by a worker)")
            self._state = self._make_state(self)
        return self._state

    @property
    def staged(self) -> list[StateOp]:
        """The staged state writes of this try so far (none if its agent never touched :attr:`state`)."""
        return self._state.staged if self._state is not None else []

    def lock(self, name: str, *, ttl_s: float = 30.0, timeout_s: float | None = None) -> Held:
        """A lock shared by every worker: ``async with ctx.lock("name") as held:``; see :mod:`covey.state.locks`."""
        return self.semaphore(name, limit=1, ttl_s=ttl_s, timeout_s=timeout_s)

    def semaphore(
        self, name: str, *, limit: int, ttl_s: float = 30.0, timeout_s: float | None = None
    ) -> Held:
        """At most ``limit`` holders of ``name`` at once, across every worker."""
        if self._locks is None:
            raise RuntimeError("this context has no locks (it was not built by a worker)")
        from covey.state.locks import Held

        acquire, release, renew = self._locks
        holder = f"{self.task_id}#{self.lease_no}"
        return Held(
            name, holder=holder, limit=limit, ttl_s=ttl_s, timeout_s=timeout_s,
            acquire=acquire, release=release, renew=renew,
        )  # fmt: skip

    @property
    def cancelled(self) -> bool:
        """True once the run or task was cancelled, or this try's lease was lost."""
        return self._cancelled

    def check_cancelled(self) -> None:
        """Raise :class:`TaskCancelled` if the task should stop; call it between long steps."""
        if self._cancelled:
            raise TaskCancelled(f"task {self.task_id} was cancelled or its lease was lost")

    async def heartbeat(self) -> None:
        """Tell covey this try is alive (the worker's own heartbeat does this too)."""
        await self._heartbeat()

    def _cancel(self) -> None:
        self._cancelled = True
