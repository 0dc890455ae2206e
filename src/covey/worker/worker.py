"""The worker: pulls tasks it can run, runs them, reports, stops gracefully.

Pull, not push: a worker with free slots claims ready tasks for its skills and
labels (one round trip for up to all its free slots), so a free worker is an
available one and load balances itself over replicas. Claiming and reporting
run side by side: a report never waits behind a long-poll claim, and the
commit that accepts a report leases the next ready task to the claim already
parked at the runner, so a hand-off costs one commit.

On stop (SIGTERM), a worker claims nothing more, waits for running tries up
to a grace period, reports them, and releases whatever is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from covey.agents.context import Context
from covey.agents.registry import AgentDef, Registry
from covey.errors import BackendUnavailable, ConfigError
from covey.runtime.eventloop import wait_event
from covey.state.handle import StateHandle
from covey.state.model import run_namespace
from covey.state.watch import WatchHub
from covey.store.base import Lease, WorkerInfo
from covey.worker.execute import execute
from covey.worker.link import NextClaim, WorkerLink

__all__ = ["Worker"]

log = logging.getLogger("covey.worker")

#: Longest a claim waits at the runner when nothing is ready (the store is polled this often when idle).
CLAIM_WAIT_S = 1.0
#: First pause after a shared store could not be reached; it doubles up to OUTAGE_MAX_PAUSE_S.
OUTAGE_PAUSE_S = 0.2
OUTAGE_MAX_PAUSE_S = 5.0


class Worker:
    """Serves the agents of a registry through a link.

    Args:
        registry: the agents this worker hosts.
        link: how it reaches covey (in-process or over a socket).
        concurrency: task slots in all (default: the sum of the agents' concurrency).
        labels: labels this worker offers, added to each agent's own.
        heartbeat_s: how often leases are extended.
        grace_s: how long a stop waits for running tries before releasing them.
    """

    def __init__(
        self,
        registry: Registry,
        link: WorkerLink,
        *,
        concurrency: int | None = None,
        labels: dict[str, str] | None = None,
        heartbeat_s: float = 5.0,
        grace_s: float = 10.0,
        worker_id: str | None = None,
    ) -> None:
        if len(registry) == 0:
            raise ConfigError("a worker needs at least one agent")
        self.registry = registry
        self.link = link
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.slots = concurrency or sum(a.concurrency for a in registry)
        self.labels = {key: value for item in registry for key, value in item.labels.items()}
        self.labels.update(labels or {})
        self.heartbeat_s = heartbeat_s
        self.grace_s = grace_s
        self.targets = frozenset(registry.skills | {f"agent:{a.name}" for a in registry})
        self.running: dict[str, tuple[Lease, Context, asyncio.Task[None]]] = {}
        self.completed = 0
        self.link_lost = False
        self.hub = WatchHub(link.state_watch)
        """The worker's one subscription per watched namespace, shared by all its agents."""
        self._unparking: asyncio.Task[None] | None = None
        self._results: list[dict[str, Any]] = []
        self._reporting = False
        self._claim_waiting = False
        """A claim of this worker is out, waiting at covey for tasks."""
        self._claimed = 0
        """Slots asked for by claims sent and not yet answered (the claimer's, and those reports carry):
        running tries plus these never pass :attr:`slots`."""
        self._taken_in_claimer = False
        """The last leases were taken inside the claiming task, not in the link's read callback."""
        self._unwanted: list[tuple[str, int]] = []
        """Leases a claim brought once the worker was stopping: released, not run."""
        self._locks = (link.lock_acquire, link.lock_release, link.lock_renew)
        self._flushed = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._threads = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="covey-agent")

    def stop(self) -> None:
        """Ask the worker to stop: no new claims; running tries finish within the grace period."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._slot_freed.set()
        if not self.link_lost:
            self._unparking = asyncio.get_running_loop().create_task(self._unpark())

    async def _unpark(self) -> None:
        with contextlib.suppress(Exception):
            await self.link.unpark(self.id)

    def _lose_link(self) -> None:
        """The runner is gone: stop at once; its successor voids our leases and re-runs the tasks."""
        if not self.link_lost:
            log.warning("worker %s lost its link to covey; stopping", self.id)
        self.link_lost = True
        for _, ctx, task in self.running.values():
            ctx._cancel()
            task.cancel()
        self.grace_s = 0
        self.stop()

    async def run(self) -> None:
        """Register, serve until :meth:`stop`, then drain, report, release and unregister."""
        await self.link.register(self.info())
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._claimer())
                group.create_task(self._heartbeats())
        finally:
            await self.hub.close()
            self._threads.shutdown(wait=False, cancel_futures=True)
            if not self.link_lost:
                with contextlib.suppress(Exception):
                    await self.link.unregister(self.id)

    def info(self) -> WorkerInfo:
        """This worker as the registry lists it (times are filled in by the store)."""
        return WorkerInfo(self.id, self.targets, dict(self.labels), self.slots, 0, 0)

    async def _claimer(self) -> None:
        outage = OUTAGE_PAUSE_S
        while not self._stopping.is_set() and not _cancel_requested():
            free = self._free()
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            take = self._taker(free)
            try:
                self._claim_waiting = True
                try:
                    leases = await self.link.claim(
                        self.id, self.targets, self.labels, free, CLAIM_WAIT_S, take=take
                    )
                finally:
                    self._claim_waiting = False
                    take.settle()
                outage = OUTAGE_PAUSE_S
            except BackendUnavailable as exc:
                if not self.link.recovers_from_outages:
                    self._lose_link()
                    return
                log.warning("claim failed, the store is unreachable (%s); retrying in %.1fs", exc, outage)
                await _pause(self._stopping, outage)
                outage = min(OUTAGE_MAX_PAUSE_S, outage * 2)
                continue
            except Exception:
                log.exception("claim failed; retrying")
                await _pause(self._stopping, 0.5)
                continue
            if self._unwanted:
                await self._release_unwanted()
                return
            if leases and self._taken_in_claimer:
                # Let the tries begin before the next claim is built and sent: a try that ends at
                # once then finds no claim of this worker waiting, and its report carries the next one.
                # Leases taken in the link's read callback need no pause: their tries were
                # scheduled before this task resumed, and have begun already.
                await asyncio.sleep(0)

    def _free(self) -> int:
        """Slots neither running a try nor asked for by a claim in flight."""
        return self.slots - len(self.running) - self._claimed

    def _taker(self, limit: int) -> _Taker:
        """Count ``limit`` slots as claimed until the claim's leases are taken (or it failed)."""
        self._claimed += limit
        return _Taker(self, limit)

    def _unclaim(self, limit: int) -> None:
        self._claimed -= limit
        self._slot_freed.set()

    def _take(self, leases: list[Lease]) -> None:
        """A claim's leases, as soon as the link has them: start their tries (or, stopping, give them back).

        The link may call this from the callback that read the answer, so the
        tries start without a turn of the event loop for the claimer to resume.
        """
        self._claim_waiting = False  # answered: until the claimer claims again, a report carries a claim
        self._taken_in_claimer = asyncio.current_task() is not None
        if self._stopping.is_set():
            self._unwanted += [(lease.task_id, lease.lease_no) for lease in leases]
            return
        for lease in leases:
            self._start(lease)

    def _start(self, lease: Lease) -> None:
        agent = self._agent_for(lease.target)
        ctx = Context(
            run_id=lease.run_id,
            task_id=lease.task_id,
            step=lease.step,
            index=lease.index if lease.index >= 0 else None,
            try_no=lease.try_no,
            lease_no=lease.lease_no,
            heartbeat=self._beat,
            make_state=self._state_for,
            locks=self._locks,
        )
        task = asyncio.create_task(self._try(agent, lease, ctx))
        self.running[lease.task_id] = (lease, ctx, task)

    def _state_for(self, ctx: Context) -> StateHandle:
        """A try's shared state, built the first time its agent asks for it (most never do)."""
        return StateHandle(
            namespace=run_namespace(ctx.run_id),
            fence=(ctx.task_id, ctx.lease_no),
            get=self.link.state_get,
            apply=self.link.state_apply,
            hub=self.hub,
            listing=self.link.state_list,
        )

    def _agent_for(self, target: str) -> AgentDef:
        found = (
            self.registry.get(target[6:]) if target.startswith("agent:") else self.registry.for_skill(target)
        )
        if found is None:  # the claim only asks for targets we serve
            raise ConfigError(f"worker {self.id} has no agent for {target!r}")
        return found

    async def _try(self, agent: AgentDef, lease: Lease, ctx: Context) -> None:
        try:
            result = await execute(agent, lease, ctx, self._threads)
            result["worker_id"] = self.id
        finally:
            self.running.pop(lease.task_id, None)
            self._slot_freed.set()
        self._results.append(result)
        await self._flush()

    async def _flush(self) -> None:
        """Report every pending result; one flush at a time, and it picks up results that arrive meanwhile.

        The try that finishes first reports at once from its own task (no hop to
        a reporter task); results finishing while that report is in flight go
        together in the next one.
        """
        if self._reporting:
            return
        self._reporting = True
        try:
            while self._results and not self.link_lost:
                results, self._results = self._results, []
                taker = self._report_taker()
                claim = (
                    None
                    if taker is None
                    else NextClaim(self.id, self.targets, self.labels, taker.limit, taker)
                )
                try:
                    try:
                        await self.link.report(results, claim=claim)
                    finally:
                        if taker is not None:
                            taker.settle()
                    self.completed += len(results)
                except BackendUnavailable as exc:
                    if not self.link.recovers_from_outages:
                        self._lose_link()
                        continue
                    # Reports are idempotent (by task and lease): sending one again is safe.
                    log.warning("report failed, the store is unreachable (%s); retrying", exc)
                    self._results = results + self._results
                    await asyncio.sleep(OUTAGE_PAUSE_S)
                except Exception:
                    log.exception("report failed; retrying")
                    self._results = results + self._results
                    await asyncio.sleep(0.2)
        finally:
            self._reporting = False
            self._flushed.set()

    def _report_taker(self) -> _Taker | None:
        """The slots a report's claim asks for: every free one, for the tasks its commit makes ready.

        Only from a worker that this report leaves idle (no try running) and
        with no claim waiting at covey: the next task of the run then comes
        back in the report's answer. That is a step that started and ended
        before the worker's claimer was back. A busy worker keeps claiming
        beside its reports instead: a claim in every report would hold its
        claims behind its reports, one round trip at a time, and cost each
        commit a claim query. None too if the link cannot carry a claim,
        nothing is free, or the worker is stopping.
        """
        free = self._free()
        idle = not self.running and not self._claim_waiting
        if not (self.link.claims_with_reports and idle and free > 0) or self._stopping.is_set():
            return None
        return self._taker(free)

    async def _heartbeats(self) -> None:
        while not (self._stopping.is_set() and not self.running) and not _cancel_requested():
            await wait_event(self._stopping, self.heartbeat_s)
            if self._stopping.is_set():
                if not self.link_lost:
                    await self._drain()
                return
            await self._beat()

    async def _beat(self) -> None:
        held = [(lease.task_id, lease.lease_no) for lease, _, _ in self.running.values()]
        try:  # even with nothing held: the heartbeat also tells the registry this worker is alive
            lost = await self.link.heartbeat(self.id, held)
        except Exception:
            log.exception("heartbeat failed")
            return
        for task_id in lost:
            entry = self.running.get(task_id)
            if entry is not None:
                lease, ctx, task = entry
                ctx._cancel()
                if self._agent_for(lease.target).is_async:
                    task.cancel()  # nobody waits for this try's result any more

    async def _drain(self) -> None:
        """Graceful stop: let running tries finish within the grace period, release the rest, finish reporting."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_s
        while self.running and loop.time() < deadline:
            self._slot_freed.clear()
            await _pause(self._slot_freed, deadline - loop.time())
        leftover = [(lease.task_id, lease.lease_no) for lease, _, _ in self.running.values()]
        for _, _, task in list(self.running.values()):
            task.cancel()
        if leftover:
            with contextlib.suppress(Exception):
                await self.link.release(self.id, leftover)
        while self._reporting or (self._results and not self.link_lost):
            self._flushed.clear()
            if not self._reporting:
                await self._flush()
            else:
                await self._flushed.wait()
        if self._unwanted and not self.link_lost:  # leases a report's claim brought once stopping
            await self._release_unwanted()

    async def _release_unwanted(self) -> None:
        """Give back the leases claims brought once the worker was stopping."""
        unwanted, self._unwanted = self._unwanted, []
        with contextlib.suppress(Exception):
            await self.link.release(self.id, unwanted)


class _Taker:
    """A claim's ``take``: starts the tries, and gives back the slots the claim held, exactly once.

    The slots are given back when the leases arrive (in the link's read
    callback, once their tries are started: the next claim, which the freed
    slots wake, must not run ahead of them), or by :meth:`settle` once the
    call returned or failed without leases.
    """

    def __init__(self, worker: Worker, limit: int) -> None:
        self.worker = worker
        self.limit = limit
        self.done = False

    def __call__(self, leases: list[Lease]) -> None:
        self.worker._take(leases)  # first: the tries' first steps are scheduled before the claimer wakes
        self.settle()

    def settle(self) -> None:
        if not self.done:
            self.done = True
            self.worker._unclaim(self.limit)


def _cancel_requested() -> bool:
    """Whether this task was asked to stop: a driver may have swallowed the CancelledError (redis-py can)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _pause(event: asyncio.Event | None, seconds: float) -> None:
    if event is None:
        await asyncio.sleep(seconds)
        return
    await wait_event(event, seconds)
