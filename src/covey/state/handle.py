"""``ctx.state``: what an agent sees of shared state.

Two kinds of writes (see docs/state.md):

* **Staged** (``put``, ``update``, ``delete``): buffered in the try and
  committed together with its result, in the same transaction, so they take
  effect exactly once even if the agent ran twice. A try whose result is
  rejected (it lost its lease) writes nothing. These are plain methods, usable
  from sync and async agents alike.
* **Live** (``ctx.state.live``): applied at once, fenced by the try's lease
  number in the same atomic step (a try that lost its lease is refused), and
  at-least-once: use them with ``if_version`` (compare-and-set) or idempotent
  values. Like reads, they are coroutines.

The default namespace is the run's own (``run:<run_id>``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from covey.codec import check_payload
from covey.state.model import StateChange, StateEntry, StateOp, check_key, check_namespace
from covey.state.reducers import check_reducer
from covey.state.resync import StateSnapshot, resyncing
from covey.state.watch import WatchHub

if TYPE_CHECKING:
    from covey.state.locks import Held

__all__ = ["LiveState", "StateHandle"]

Apply = Callable[
    [Sequence[StateOp], tuple[str, int] | None, tuple[str, int] | None], Awaitable[list[StateEntry]]
]
Get = Callable[[str, str], Awaitable[StateEntry | None]]
List = Callable[[str, str, str, int], Awaitable[list[StateEntry]]]


class StateHandle:
    """Shared state for one try of a task."""

    def __init__(
        self,
        *,
        namespace: str,
        fence: tuple[str, int],
        get: Get,
        apply: Apply,
        hub: WatchHub | None = None,
        listing: List | None = None,
    ) -> None:
        self.namespace = namespace
        self._hub = hub
        self._list = listing
        self._fence = fence
        self._get = get
        self._apply = apply
        self.staged: list[StateOp] = []
        self.live = LiveState(self)

    def _op(self, op: str, key: str, value: Any, reducer: str | None, namespace: str | None) -> StateOp:
        check_payload(value, field=f"state.{key}")
        return StateOp(op, check_namespace(namespace or self.namespace), check_key(key), value, reducer)

    async def get(self, key: str, default: Any = None, *, namespace: str | None = None) -> Any:
        """A key's current value (committed state; this try's staged writes are not visible yet)."""
        entry = await self.entry(key, namespace=namespace)
        return default if entry is None else entry.value

    async def entry(self, key: str, *, namespace: str | None = None) -> StateEntry | None:
        """A key's value and version, for a later compare-and-set."""
        return await self._get(check_namespace(namespace or self.namespace), check_key(key))

    async def list(
        self, *, prefix: str = "", after: str = "", limit: int = 100, namespace: str | None = None
    ) -> list[StateEntry]:
        """Keys starting with ``prefix``, in key order; page with ``after`` (the last key seen)."""
        if self._list is None:
            raise RuntimeError("this context cannot list state (it was not built by a worker)")
        return await self._list(check_namespace(namespace or self.namespace), prefix, after, limit)

    def watch(
        self, *, namespace: str | None = None, after: int = 0, private: bool = False
    ) -> AsyncIterator[StateChange]:
        """Every change of a namespace after cursor ``after``, as committed (``async for``).

        A feed keeps each namespace's latest changes only (10,000 by default):
        if some after ``after`` are gone, iterating raises
        :class:`~covey.errors.CursorExpired` (:meth:`watch_resyncing` resyncs
        by itself instead).

        All agents of a worker process share one subscription per namespace;
        ``private=True`` opens one for this agent alone (costlier: only for
        comparison or isolation).
        """
        if self._hub is None:
            raise RuntimeError("this context cannot watch (it was not built by a worker)")
        hub = WatchHub(self._hub.fetch) if private else self._hub
        return hub.subscribe(check_namespace(namespace or self.namespace), after)

    def watch_resyncing(
        self, *, namespace: str | None = None, after: int = 0
    ) -> AsyncIterator[StateChange | StateSnapshot]:
        """:meth:`watch` that resyncs by itself: where the feed has moved past its cursor, it yields a
        :class:`~covey.state.resync.StateSnapshot` (every key now) and goes on with the changes after it.

        A change to a key deleted while the snapshot was read may come again
        ahead of its deletion; every other change comes once, in commit order.
        """
        if self._hub is None or self._list is None:
            raise RuntimeError("this context cannot watch (it was not built by a worker)")
        hub, listing = self._hub, self._list
        name = check_namespace(namespace or self.namespace)

        def page(ns: str, after_key: str, limit: int) -> Awaitable[list[StateEntry]]:
            return listing(ns, "", after_key, limit)

        return resyncing(name, after, lambda cursor: hub.subscribe(name, cursor), page)

    def put(self, key: str, value: Any, *, namespace: str | None = None) -> None:
        """Stage: set ``key`` to ``value`` when this try's result is committed."""
        self.staged.append(self._op("put", key, value, None, namespace))

    def update(self, key: str, reducer: str, value: Any, *, namespace: str | None = None) -> None:
        """Stage: apply a reducer (append, extend, merge, add, max, min) when the result is committed."""
        self.staged.append(self._op("update", key, value, check_reducer(reducer), namespace))

    def delete(self, key: str, *, namespace: str | None = None) -> None:
        """Stage: delete ``key`` when the result is committed."""
        self.staged.append(self._op("delete", key, None, None, namespace))


class LiveState:
    """Writes applied at once, fenced by this try's lease (``ctx.state.live``)."""

    def __init__(self, handle: StateHandle) -> None:
        self._handle = handle

    async def _one(self, op: StateOp, lock: Held | None) -> StateEntry:
        token = (lock.name, lock.token) if lock is not None else None
        (entry,) = await self._handle._apply([op], self._handle._fence, token)
        return entry

    async def put(
        self,
        key: str,
        value: Any,
        *,
        if_version: int | None = None,
        namespace: str | None = None,
        lock: Held | None = None,
    ) -> StateEntry:
        """Set ``key`` now; with ``if_version``, only if its version is that one (VersionConflict otherwise).

        With ``lock``, only while that lock's token still holds it (StaleLease otherwise).
        """
        op = self._handle._op("put", key, value, None, namespace)
        return await self._one(StateOp(op.op, op.namespace, op.key, op.value, None, if_version), lock)

    async def update(
        self, key: str, reducer: str, value: Any, *, namespace: str | None = None, lock: Held | None = None
    ) -> StateEntry:
        """Apply a reducer now, atomically."""
        return await self._one(
            self._handle._op("update", key, value, check_reducer(reducer), namespace), lock
        )

    async def delete(
        self,
        key: str,
        *,
        if_version: int | None = None,
        namespace: str | None = None,
        lock: Held | None = None,
    ) -> StateEntry:
        """Delete ``key`` now."""
        op = self._handle._op("delete", key, None, None, namespace)
        return await self._one(StateOp(op.op, op.namespace, op.key, None, None, if_version), lock)
