"""How a worker talks to covey: the worker protocol, as an interface.

A :class:`WorkerLink` is either in-process (:class:`LocalLink`, calling the
embedded runner's engine loop directly) or remote (:class:`~covey.worker.
socket_link.SocketLink`, the same calls over the runner's unix socket). The
worker code is the same for both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from covey.engine.events import Event, TaskFailed, TaskSucceeded
from covey.errors import InputError
from covey.runtime.answer import Answer
from covey.runtime.feed import StateFeed
from covey.runtime.loop import EngineLoop
from covey.state.model import StateChange, StateEntry, StateOp
from covey.store.base import ClaimRequest, Lease, Store, WorkerInfo

__all__ = [
    "PROTOCOL_VERSION",
    "LocalLink",
    "NextClaim",
    "Take",
    "WorkerLink",
    "deliver_results",
    "queue_results",
    "result_event",
    "stamped",
]

Take = Callable[[list[Lease]], None]
"""Where a claim hands its leases as soon as they arrive (see :meth:`WorkerLink.claim`)."""

#: Version of the worker protocol; a runner refuses workers speaking another one.
PROTOCOL_VERSION = 1


@dataclass(frozen=True, slots=True)
class NextClaim:
    """A claim that travels with a report: up to ``limit`` of the tasks the report's commit makes ready.

    It never waits: the answer to the report carries whatever it leased
    (often the very task the report's result made ready), handed to
    ``take`` as soon as the link reads it. The hand-off then costs one
    message each way, and no claim has to be built after the report.
    """

    worker_id: str
    targets: frozenset[str]
    labels: Mapping[str, str]
    limit: int
    take: Take

    def request(self, lease_ms: int) -> ClaimRequest:
        """The claim as the engine loop takes it, for leases of ``lease_ms`` (the link's lease length)."""
        return ClaimRequest(self.worker_id, self.targets, dict(self.labels), self.limit, lease_ms)


class WorkerLink(Protocol):
    """The calls a worker makes; each is acknowledged only after it is committed."""

    recovers_from_outages: bool
    """Whether a call that raised BackendUnavailable may be made again later (a shared store's
    server comes back), or the link is gone for good (the embedded runner this worker served
    stopped, and its successor voids this worker's leases)."""

    claims_with_reports: bool
    """Whether :meth:`report` takes a :class:`NextClaim` (a link to an engine loop does; one that
    appends reports to a shared store's inbox does not)."""

    async def claim(
        self,
        worker_id: str,
        targets: frozenset[str],
        labels: Mapping[str, str],
        limit: int,
        wait_s: float,
        *,
        take: Take | None = None,
    ) -> list[Lease]:
        """Lease up to ``limit`` tasks, waiting up to ``wait_s`` for some to be ready.

        ``take``, if given, is handed the leases before this returns, as soon as
        the link has them: a link that reads answers in a callback calls it from
        there, so the tries start without waiting for the claiming task to resume.
        """
        ...

    async def report(self, results: Sequence[dict[str, Any]], *, claim: NextClaim | None = None) -> None:
        """Report finished tries (see :func:`covey.worker.execute.execute` for their shape), sent at once.

        ``claim`` (only where :attr:`claims_with_reports`): lease what the report's commit makes
        ready; its ``take`` is handed the leases, an empty list if there were none.
        """
        ...

    async def heartbeat(self, worker_id: str, leases: Sequence[tuple[str, int]]) -> list[str]:
        """Extend this worker's leases; returns the task ids it no longer holds."""
        ...

    async def release(self, worker_id: str, leases: Sequence[tuple[str, int]]) -> None:
        """Give leases back (graceful stop)."""
        ...

    async def unpark(self, worker_id: str) -> None:
        """Answer this worker's waiting claim now, empty (it is stopping)."""
        ...

    async def state_get(self, namespace: str, key: str) -> StateEntry | None:
        """Read one key of shared state."""
        ...

    async def state_apply(
        self, ops: Sequence[StateOp], fence: tuple[str, int] | None, lock: tuple[str, int] | None = None
    ) -> list[StateEntry]:
        """Apply live writes at once, fenced by a lease and maybe a lock token (see ``Store.state_apply``)."""
        ...

    async def lock_acquire(self, name: str, holder: str, limit: int, ttl_ms: int) -> int | None:
        """Take a lock or semaphore permit; its fencing token, or None if all are held."""
        ...

    async def state_watch(self, namespace: str, after: int, wait_s: float) -> list[StateChange]:
        """A namespace's changes after a cursor, waiting up to ``wait_s`` for some."""
        ...

    async def state_list(self, namespace: str, prefix: str, after: str, limit: int) -> list[StateEntry]:
        """Keys of a namespace in key order, from ``after``."""
        ...

    async def lock_release(self, name: str, token: int) -> bool:
        """Give a permit back."""
        ...

    async def lock_renew(self, name: str, token: int, ttl_ms: int) -> bool:
        """Extend a permit."""
        ...

    async def register(self, info: WorkerInfo) -> None:
        """Add this worker to the registry (its agents, labels and slots)."""
        ...

    async def unregister(self, worker_id: str) -> None:
        """Remove this worker from the registry (a clean stop)."""
        ...


def stamped(info: WorkerInfo, now_ms: int) -> WorkerInfo:
    """A worker's registry entry timed by the store's clock."""
    return WorkerInfo(info.worker_id, info.targets, info.labels, info.slots, now_ms, now_ms)


def result_event(result: Mapping[str, Any], at_ms: int) -> tuple[Event, list[StateOp]]:
    """The input event for a reported result, timed by the store's clock, and its staged state writes."""
    task_id, lease_no = result["task_id"], int(result["lease_no"])
    if not result.get("ok"):
        return TaskFailed(task_id, lease_no, at_ms, dict(result["error"])), []
    handoff = result.get("handoff")
    try:
        if handoff is not None and not isinstance(handoff, dict):
            raise InputError("a hand-off's steps must be an object", field="handoff")
        ops = [StateOp.from_json(op) for op in result.get("state") or []]
    except InputError as exc:
        error = {"kind": "bad_output", "message": str(exc), "retryable": False}
        return TaskFailed(task_id, lease_no, at_ms, error), []
    return TaskSucceeded(task_id, lease_no, at_ms, handoff=handoff), ops


class StoreCalls:
    """The link calls that are the store's own, the same whichever way a worker reaches covey."""

    store: Store

    async def state_get(self, namespace: str, key: str) -> StateEntry | None:
        """Read from the store."""
        return await self.store.state_get(namespace, key)

    async def state_list(self, namespace: str, prefix: str, after: str, limit: int) -> list[StateEntry]:
        """List keys in the store."""
        return await self.store.state_list(namespace, prefix=prefix, after=after, limit=limit)

    async def lock_acquire(self, name: str, holder: str, limit: int, ttl_ms: int) -> int | None:
        """Take a permit in the store."""
        return await self.store.lock_acquire(name, holder, limit=limit, ttl_ms=ttl_ms)

    async def lock_release(self, name: str, token: int) -> bool:
        """Give a permit back in the store."""
        return await self.store.lock_release(name, token)

    async def lock_renew(self, name: str, token: int, ttl_ms: int) -> bool:
        """Extend a permit in the store."""
        return await self.store.lock_renew(name, token, ttl_ms)

    async def register(self, info: WorkerInfo) -> None:
        """Register in the store."""
        await self.store.register_worker(stamped(info, await self.store.now_ms()))

    async def unregister(self, worker_id: str) -> None:
        """Unregister from the store."""
        await self.store.unregister_worker(worker_id)


class LocalLink(StoreCalls):
    """A worker in the runner's own process: calls go straight to the engine loop."""

    recovers_from_outages = False
    claims_with_reports = True

    def __init__(
        self, loop: EngineLoop, store: Store, *, lease_ms: int, feed: StateFeed | None = None
    ) -> None:
        self.loop = loop
        self.store = store
        self.lease_ms = lease_ms
        self.feed = feed

    async def claim(
        self,
        worker_id: str,
        targets: frozenset[str],
        labels: Mapping[str, str],
        limit: int,
        wait_s: float,
        *,
        take: Take | None = None,
    ) -> list[Lease]:
        """Lease tasks through the engine loop's next batch."""
        request = ClaimRequest(worker_id, targets, dict(labels), limit, self.lease_ms)
        leases = await self.loop.claim(request, wait_s=wait_s)
        if take is not None:
            take(leases)
        return leases

    async def report(self, results: Sequence[dict[str, Any]], *, claim: NextClaim | None = None) -> None:
        """Hand results (and the claim that goes with them) to the engine loop's next batch; wait for its commit."""
        await deliver_results(self.loop, self.store, results, claim, self.lease_ms)

    async def heartbeat(self, worker_id: str, leases: Sequence[tuple[str, int]]) -> list[str]:
        """Extend leases in the store."""
        return await self.store.heartbeat(worker_id, leases, self.lease_ms)

    async def release(self, worker_id: str, leases: Sequence[tuple[str, int]]) -> None:
        """Give leases back and let parked claims see the tasks again."""
        await self.store.release(worker_id, leases)
        self.loop.poke_claims()

    async def unpark(self, worker_id: str) -> None:
        """Answer the worker's parked claim at once."""
        self.loop.unpark(worker_id)

    async def state_apply(
        self, ops: Sequence[StateOp], fence: tuple[str, int] | None, lock: tuple[str, int] | None = None
    ) -> list[StateEntry]:
        """Write to the store now."""
        entries = await self.store.state_apply(ops, fence=fence, lock=lock)
        if self.feed is not None:
            self.feed.changed({op.namespace for op in ops})
        return entries

    async def state_watch(self, namespace: str, after: int, wait_s: float) -> list[StateChange]:
        """Changes through the runner's feed (woken on commit), or the store read again after ``wait_s``."""
        if self.feed is not None:
            return await self.feed.wait(namespace, after, wait_s)
        changes = await self.store.state_changes(namespace, after)
        if not changes:
            await asyncio.sleep(wait_s)
        return changes


async def deliver_results(
    loop: EngineLoop,
    store: Store,
    results: Sequence[Mapping[str, Any]],
    claim: NextClaim | None = None,
    lease_ms: int = 0,
) -> None:
    """Queue every result, and the claim that goes with them, for one batch; wait until all are committed.

    The claim's ``take`` is handed its leases even if the batch failed (then none).
    """
    at_ms = await store.now_ms()
    running = asyncio.get_running_loop()
    futures: list[asyncio.Future[bool]] = [running.create_future() for _ in results]
    queue_results(loop, results, at_ms, futures)
    if claim is None:
        await asyncio.gather(*futures)
        return
    leased = loop.claim_nowait(claim.request(lease_ms))
    try:
        await asyncio.gather(*futures)
    finally:
        claim.take(await _granted(leased))


async def _granted(leased: asyncio.Future[list[Lease]]) -> list[Lease]:
    """A claim's leases; none if its batch failed (the report that carried it raises that error)."""
    try:
        return await leased
    except Exception:
        return []


def queue_results(
    loop: EngineLoop, results: Sequence[Mapping[str, Any]], at_ms: int, answers: Sequence[Answer[bool]]
) -> None:
    """Queue results for the engine loop's next batch now, each answered after its commit.

    Every result is read before any is queued: a malformed one (a KeyError,
    TypeError or ValueError) queues none of them.
    """
    parsed = [(str(result["run_id"]), result, *result_event(result, at_ms)) for result in results]
    for answer, (run_id, result, event, ops) in zip(answers, parsed, strict=True):
        loop.deliver_to(
            answer,
            event,
            run_id,
            output=result.get("output"),
            worker_id=result.get("worker_id"),
            state_ops=ops,
        )
