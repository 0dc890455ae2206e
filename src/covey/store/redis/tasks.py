"""Claims, leases, the inbox, timers, epochs and the worker registry in the Redis store."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from covey.errors import CoveyError
from covey.state.model import run_namespace
from covey.store.base import SHARDS, ClaimRequest, InboxRow, Lease, WorkerInfo
from covey.store.inputs import reads_input, reads_state, render_input, template_of
from covey.store.redis.reads import assemble_output, from_json, text
from covey.store.redis.shared import Shared

__all__ = ["FOREVER_MS", "MAX_STATE_KEYS", "Tasks", "lease_need"]

log = logging.getLogger("covey.store.redis")

#: A lease end that never comes: a runner's epoch holds its shards until another runner starts.
FOREVER_MS = 2**62
#: Pushed inbox rows a node takes in one pop.
INBOX_PUSH_BATCH = 256
#: A node counts as waiting for pushed rows this long past its wait, in seconds (then rows are hinted).
INWAIT_GRACE_S = 2.0
#: How long a standing claim stands (it is withdrawn as soon as its worker stops waiting), in seconds.
STANDING_S = 1.0
#: A grant's follow-up (confirming its lease, dropping a used-up claim's entries) runs this long after it,
#: off the hand-off, in seconds. A granted lease lasts 3 s until confirmed (GRANT_LEASE_MS in common.lua),
#: so this is soon enough, and late enough that a short task has reported by then and needs no confirming.
FOLLOW_UP_AFTER_S = 0.1
#: What :meth:`Tasks.wake_waiting` pushes on a grant list to end a wait.
STOP_MARK = b"stop"
#: How long a stop mark no wait took stays, in ms.
STOP_MARK_TTL_MS = 60_000
#: Keys of a run's namespace an input mapping can see (``${state...}``): the first ones in key order.
MAX_STATE_KEYS = 10_000


#: The inbox events that report a try (a granted lease reported on needs no confirming).
_REPORTS = frozenset({"TaskSucceeded", "TaskFailed"})


class Tasks(Shared):
    """Who runs what: claims with inputs resolved, leases, the inbox, timers, epochs, the registry."""

    def __init__(self, url: str, *, prefix: str = "covey", check_eviction: bool = True) -> None:
        super().__init__(url, prefix=prefix, check_eviction=check_eviction)
        self._background: set[asyncio.Future[Any]] = set()
        self._standing: dict[str, _Standing] = {}
        """Worker id -> its standing claim, if it has one."""
        self._unconfirmed: set[tuple[str, int]] = set()
        """Granted leases whose follow-up has not run and whose report this store has not appended."""
        self._follow_ups: dict[int, asyncio.TimerHandle] = {}
        """Grant follow-ups not yet due, by number: a store that closes cancels them."""
        self._follow_up_numbers = itertools.count()

    async def close(self) -> None:
        """Let background withdrawals finish (briefly), then close every connection.

        Follow-ups not yet due are dropped: the worker is stopping, and a lease they would
        have confirmed is released by it or ends with its grant (a follow-up that came due
        after the close ran on a closed store, and its task was left pending).
        """
        for handle in self._follow_ups.values():
            handle.cancel()
        self._follow_ups.clear()
        if self._background:
            await asyncio.wait(set(self._background), timeout=1.0)
        await super().close()

    async def claim(self, request: ClaimRequest) -> list[Lease]:
        """Lease up to ``request.limit`` ready tasks, inputs resolved."""
        if not request.targets or request.limit <= 0:
            return []
        rows, reads = await self.script("claim", self.claim_args(request))
        return (await self.leases([rows], reads))[0]

    async def claim_or_wait(self, request: ClaimRequest, wait_s: float) -> list[Lease]:
        """Lease what is ready; if nothing is, wait up to ``wait_s`` for the store to grant tasks.

        A claim that leases fewer tasks than it asked for also leaves a
        standing claim for the rest (see ``common.lua``), good for
        :data:`STANDING_S`, and the worker's next calls, once it has started
        those tasks, go straight to blocking on its grant list: the commit or
        release that makes a task ready leases it to the first standing claim
        that fits and pushes the lease there, so one worker wakes, its task in
        hand. A wait that ends with nothing withdraws the claim, taking the
        grants that came meanwhile.
        """
        if not request.targets or request.limit <= 0:
            return []
        worker, targets = request.worker_id, sorted(request.targets)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_s)
        while True:
            standing = self._standing.get(worker)
            if standing is None:
                args = [*self.claim_args(request), str(int(STANDING_S * 1000))]
                rows, reads, token = await self.script("claim_or_wait", args)
                if token:
                    left = request.limit - len(rows)
                    self._standing[worker] = _Standing(int(token), loop.time() + STANDING_S, targets, left)
                if rows:
                    return (await self.leases([rows], reads))[0]
                continue
            left_s = min(deadline, standing.until) - loop.time()
            if left_s <= 0:
                granted = await self._withdraw(worker, standing)
                if granted or loop.time() >= deadline:
                    return granted
                continue
            key = self.keys.grant(worker)
            popped = await self.run(
                functools.partial(_pop_grants, key, left_s, standing.left), idempotent=False
            )
            if popped is None:
                continue  # the wait is over: withdrawn on the next turn
            grants = [body for body in popped[1] if body != STOP_MARK]
            if len(grants) < len(popped[1]):
                return await self._granted(grants) + await self._withdraw(worker, standing)
            used_up = False
            if self._standing.get(worker) is standing:
                if standing.left > len(grants):  # it stands on for the worker's other free slots
                    self._standing[worker] = replace(standing, left=standing.left - len(grants))
                else:
                    del self._standing[worker]
                    used_up = True
            leases = await self._granted(grants)
            self._unconfirmed.update((lease.task_id, lease.lease_no) for lease in leases)
            number = next(self._follow_up_numbers)
            self._follow_ups[number] = loop.call_later(
                FOLLOW_UP_AFTER_S, self._follow_up, number, request, standing, leases, used_up
            )
            return leases

    def _follow_up(
        self, number: int, request: ClaimRequest, standing: _Standing, leases: list[Lease], used_up: bool
    ) -> None:
        del self._follow_ups[number]
        self._spawn(self._after_grant(request, standing, leases, withdraw=used_up))

    async def _after_grant(
        self, request: ClaimRequest, standing: _Standing, leases: list[Lease], *, withdraw: bool
    ) -> None:
        """Off the hand-off: confirm granted leases (to full length), and drop a used-up claim's entries.

        A lease whose report was appended meanwhile needs no confirming: the report is in the inbox,
        and is decided before any expiry of the lease appended after it.
        """
        granted = [(lease.task_id, lease.lease_no) for lease in leases]
        held = [pair for pair in granted if pair in self._unconfirmed]
        self._unconfirmed.difference_update(granted)
        if held:
            await self.heartbeat(request.worker_id, held, request.lease_ms)
        if withdraw:
            args = [request.worker_id, str(standing.token), "0", *standing.targets]
            await self.script("unwait", args, idempotent=True)

    async def _withdraw(self, worker: str, standing: _Standing) -> list[Lease]:
        """Withdraw a standing claim; the leases granted to it meanwhile, if any."""
        if self._standing.get(worker) is standing:
            del self._standing[worker]
        args = [worker, str(standing.token), "1", *standing.targets]
        return await self._granted(await self.script("unwait", args, idempotent=True))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run store work in the background, keeping a reference until it ends; a failure is only logged."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(_settled(self._background))

    async def wake_waiting(self, worker_id: str) -> None:
        """End the worker's wait now, empty, and withdraw its standing claim (it is stopping).

        A task granted to the claim before it was withdrawn is given back at once.
        """
        standing = self._standing.get(worker_id)
        if standing is not None:
            granted = await self._withdraw(worker_id, standing)
            if granted:
                await self.release(worker_id, [(lease.task_id, lease.lease_no) for lease in granted])
        key = self.keys.grant(worker_id)

        async def wake(r: Any) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.rpush(key, STOP_MARK)
                pipe.pexpire(key, STOP_MARK_TTL_MS)  # a mark no wait takes goes away by itself
                await pipe.execute()

        await self.run(wake, idempotent=True)

    async def _granted(self, grants: Sequence[bytes]) -> list[Lease]:
        rows, reads = [], []
        for body in grants:
            if body == STOP_MARK:
                continue
            row, row_reads = orjson.loads(body)
            rows.append(_as_reply(row))
            reads.extend(_as_reply(row_reads))
        return (await self.leases([rows], reads))[0] if rows else []

    @staticmethod
    def claim_args(request: ClaimRequest) -> list[Any]:
        """A claim as the script takes it: worker, targets, labels, limit, lease length."""
        return [
            request.worker_id,
            orjson.dumps(sorted(request.targets)),
            orjson.dumps(dict(request.labels)),
            str(request.limit),
            str(request.lease_ms),
        ]

    async def leases(self, claims: Sequence[Sequence[Any]], reads: Sequence[Any]) -> list[list[Lease]]:
        """Leases from the script's rows, one list per claim, their inputs rendered.

        The script returns, beside the rows, what the tasks' input mappings
        read (``reads``). A task enqueued with no such note (one that reads
        shared state) has its inputs read right after, in one read for all:
        that is safe because what they name (a run's input, upstream outputs)
        never changes once written.
        """
        resolver = _InputResolver(self)
        resolver.take(reads)
        await resolver.load([row for rows in claims for row in rows])
        return [[resolver.lease(row) for row in rows] for rows in claims]

    async def heartbeat(self, worker_id: str, leases: Sequence[tuple[str, int]], lease_ms: int) -> list[str]:
        """Extend the worker's leases; return the task ids it no longer holds."""
        args: list[Any] = [worker_id, str(lease_ms)]
        for task_id, lease_no in leases:
            args += [self.keys.task(task_id), task_id, str(lease_no)]
        return [text(task_id) for task_id in await self.script("heartbeat", args, idempotent=True)]

    async def release(self, worker_id: str, leases: Sequence[tuple[str, int]]) -> None:
        """Give leases back: the tasks become ready again with their lease numbers kept."""
        args: list[Any] = [worker_id]
        for task_id, lease_no in leases:
            args += [self.keys.task(task_id), str(lease_no)]
        await self.script("release", args, idempotent=True)

    # -- inbox and timers --------------------------------------------------------------

    async def append_inbox(self, rows: Sequence[InboxRow]) -> None:
        """Append rows; ids already in the inbox or already committed are ignored (so a retry is safe).

        With :meth:`carry_hints` on, the same script publishes the ``inbox`` hint.
        """
        if not rows:
            return
        args: list[Any] = [self.hint_channel("inbox")]
        for row in rows:
            ops = orjson.dumps(row.state_ops) if row.state_ops else b""
            args += [
                row.id,
                row.run_id,
                self.keys.run_tag(row.run_id),
                orjson.dumps(row.event),
                row.output or b"",
                ops,
            ]
        await self.script("append_inbox", args, idempotent=True)
        if self._unconfirmed:
            for row in rows:
                if row.event.get("type") in _REPORTS:
                    self._unconfirmed.discard((row.event.get("task_id"), row.event.get("lease_no")))

    async def wait_inbox(self, epoch: int, wait_s: float) -> list[InboxRow]:
        """Rows of ``epoch``'s shards appended from now on, handed over as they come, up to ``wait_s``.

        While a node waits here, the inbox script pushes a copy of each new row
        of a shard it holds onto a list of its own (``inbox_push`` in
        ``common.lua``), which this call pops: the row comes with the wake-up,
        without a read of the inbox. The rows stay in the inbox until a commit
        consumes them, so a copy that is lost (a node that stops) only waits
        for the next read of the inbox.
        """
        arm, queue = self.keys.global_key(f"inwait:{epoch}"), self.keys.global_key(f"inq:{epoch}")
        seconds = max(wait_s, 0.001)

        async def wait(r: Any) -> Any:
            async with r.pipeline(transaction=False) as pipe:
                pipe.set(arm, b"1", px=int((seconds + INWAIT_GRACE_S) * 1000))
                pipe.blmpop(seconds, 1, queue, direction="LEFT", count=INBOX_PUSH_BATCH)
                return (await pipe.execute())[1]

        popped = await self.run(wait, idempotent=False)
        if not popped:
            return []
        return self.inbox_rows(popped[1])

    async def stop_waiting_inbox(self, epoch: int) -> None:
        """Stop the pushes to ``epoch`` (its node stops): new rows are hinted and read again."""
        await self.run(lambda r: r.delete(self.keys.global_key(f"inwait:{epoch}")), idempotent=True)

    async def fire_due(self, limit: int) -> int:
        """Move due timers and ended leases into the inbox."""
        return int(await self.script("fire_due", [str(limit)], idempotent=True))

    # -- epochs and shards -------------------------------------------------------------

    async def begin_epoch(self) -> int:
        """Bump the epoch, take every shard, and void every lease granted under an earlier epoch."""
        return int(await self.script("begin_epoch", [str(SHARDS), str(FOREVER_MS)]))

    async def join_epoch(self) -> int:
        """A new epoch holding no shard."""
        return int(
            await self.run(lambda r: r.hincrby(self.keys.global_key("meta"), "epoch", 1), idempotent=False)
        )

    async def take_shards(self, epoch: int, shards: Sequence[int], ttl_ms: int) -> set[int]:
        """Lease free, ended or own shards to ``epoch``; returns those it holds."""
        args = ["take", str(epoch), str(ttl_ms), *(str(s) for s in shards)]
        return {int(s) for s in await self.script("shards", args, idempotent=True)}

    async def release_shards(self, epoch: int, shards: Sequence[int]) -> None:
        """End ``epoch``'s leases of ``shards`` now."""
        await self.script("shards", ["release", str(epoch), "0", *(str(s) for s in shards)], idempotent=True)

    # -- registry ----------------------------------------------------------------------

    async def register_worker(self, info: WorkerInfo) -> None:
        """Add or refresh a worker."""
        body = orjson.dumps(
            {
                "targets": sorted(info.targets),
                "labels": dict(info.labels),
                "slots": info.slots,
                "started_ms": info.started_ms,
            }
        )

        async def write(r: Any) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.global_key("workers"), info.worker_id, body)
                pipe.hset(self.keys.global_key("workers:hb"), info.worker_id, info.heartbeat_ms)
                await pipe.execute()

        await self.run(write, idempotent=True)

    async def unregister_worker(self, worker_id: str) -> None:
        """Remove a worker."""

        async def write(r: Any) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.global_key("workers"), worker_id)
                pipe.hdel(self.keys.global_key("workers:hb"), worker_id)
                await pipe.execute()

        await self.run(write, idempotent=True)


class _InputResolver:
    """Resolves the inputs of one batch of leases, reading each run input and output once."""

    def __init__(self, store: Tasks) -> None:
        self.store = store
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[tuple[str, str], Any] = {}
        self.states: dict[str, dict[str, Any]] = {}

    def take(self, reads: Sequence[Any]) -> None:
        """What the claim script read for the leases (``lease_reads`` in ``common.lua``)."""
        for read in reads:
            if read[0] == b"i":
                self.inputs[text(read[1])] = from_json(read[2] or None)
            else:
                flat = read[3]
                rows = dict(zip(flat[::2], flat[1::2], strict=True))
                self.outputs[(text(read[1]), text(read[2]))] = assemble_output(rows)

    async def load(self, rows: Sequence[Sequence[Any]]) -> None:
        """Read what the script did not: one pipeline, plus a read per run namespace."""
        inputs: set[str] = set()
        outputs: set[tuple[str, str]] = set()
        states: set[str] = set()
        for row in rows:
            template = template_of(row[7])
            if template.is_literal or row[12]:
                continue
            run_id = text(row[1])
            if reads_input(template):
                inputs.add(run_id)
            outputs.update((run_id, step) for step in template.steps)
            if reads_state(template):
                states.add(run_id)
        await self._read(sorted(inputs), sorted(outputs))
        for run_id in sorted(states):
            entries = await self.store.state_list(run_namespace(run_id), limit=MAX_STATE_KEYS)
            self.states[run_id] = {entry.key: entry.value for entry in entries}

    async def _read(self, inputs: list[str], outputs: list[tuple[str, str]]) -> None:
        if not inputs and not outputs:
            return
        keys = self.store.keys

        async def read(r: Any) -> list[Any]:
            async with r.pipeline(transaction=False) as pipe:
                for run_id in inputs:
                    pipe.hget(keys.run(run_id), "in")
                for run_id, step in outputs:
                    pipe.hgetall(keys.output(run_id, step))
                return list(await pipe.execute())

        found = await self.store.run(read, idempotent=True)
        for run_id, body in zip(inputs, found, strict=False):
            self.inputs[run_id] = from_json(body)
        for key, rows in zip(outputs, found[len(inputs) :], strict=True):
            self.outputs[key] = assemble_output(rows)

    def lease(self, row: Sequence[Any]) -> Lease:
        """One lease, its input rendered (or the reason it could not be)."""
        task_id, run, step, index, target, lease_no, try_no, tpl, item, schema, timeout, until = row[:12]
        run_id = text(run)
        value, error = self._render(run_id, tpl, item, int(index))
        return Lease(
            text(task_id),
            run_id,
            text(step),
            int(index),
            text(target),
            int(lease_no),
            int(try_no),
            value,
            from_json(schema),
            None if timeout is None else int(timeout),
            int(until),
            error,
        )

    def _render(
        self, run_id: str, template_text: bytes, item_text: bytes, index: int
    ) -> tuple[Any, str | None]:
        template = template_of(template_text)
        item = orjson.loads(item_text)
        if template.is_literal:
            return (template.source if template.source is not None else (item if index >= 0 else {})), None
        outputs = {step: self.outputs.get((run_id, step)) for step in template.steps}
        try:
            value = render_input(
                template,
                run_input=self.inputs.get(run_id),
                outputs=outputs,
                item=item,
                index=index,
                state=self.states.get(run_id),
            )
        except CoveyError as exc:
            return None, str(exc)
        return value, None


@functools.lru_cache(maxsize=1024)
def lease_need(template_text: bytes) -> str:
    """What a task's input mapping reads, as the claim script takes it; "" when the claim cannot read it.

    Cached: the tasks of one workflow's steps share a handful of mappings.

    ``[1 if it reads the run's input else 0, step, ...]``. A mapping that reads
    shared state gets "": its claim reads everything afterwards, in Python,
    since a namespace can be large. A literal needs nothing.
    """
    template = template_of(template_text)
    if reads_state(template):
        return ""
    return orjson.dumps([1 if reads_input(template) else 0, *sorted(template.steps)]).decode()


def _as_reply(value: Any) -> Any:
    """A pushed grant's JSON as the scripts' replies come (text as bytes, false as None).

    Then one decoder serves what is pushed and what is returned.
    """
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return [_as_reply(item) for item in value]
    return None if value is False else value


def _settled(background: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("following up a grant failed (its claim expires by itself): %s", task.exception())

    return done


@dataclass(frozen=True, slots=True)
class _Standing:
    """A worker's standing claim, as this process knows it."""

    token: int
    until: float
    """When it stops standing, on the event loop's clock."""
    targets: list[str]
    left: int
    """Tasks it may still be granted (the worker's free slots when it was left)."""


async def _pop_grants(key: str, seconds: float, most: int, r: Any) -> Any:
    """Up to ``most`` grants from ``key``, waiting up to ``seconds`` for the first (0 would mean forever)."""
    return await r.blmpop(max(seconds, 0.001), 1, key, direction="LEFT", count=max(most, 1))
