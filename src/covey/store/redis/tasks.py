"""Claims, leases, the inbox, timers, epochs and the worker registry in the Redis store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from covey.errors import CoveyError
from covey.state.model import run_namespace
from covey.store.base import SHARDS, ClaimRequest, InboxRow, Lease, WorkerInfo
from covey.store.inputs import reads_state, render_input, template_of
from covey.store.redis.reads import assemble_output, from_json, text
from covey.store.redis.shared import Shared

__all__ = ["FOREVER_MS", "MAX_STATE_KEYS", "Tasks", "lease_need"]

#: A lease end that never comes: a runner's epoch holds its shards until another runner starts.
FOREVER_MS = 2**62
#: Keys of a run's namespace an input mapping can see (``${state...}``): the first ones in key order.
MAX_STATE_KEYS = 10_000


class Tasks(Shared):
    """Who runs what: claims with inputs resolved, leases, the inbox, timers, epochs, the registry."""

    async def claim(self, request: ClaimRequest) -> list[Lease]:
        """Lease up to ``request.limit`` ready tasks, inputs resolved."""
        if not request.targets or request.limit <= 0:
            return []
        rows, reads = await self.script("claim", self.claim_args(request))
        return (await self.leases([rows], reads))[0]

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
            if any("input" in expr.roots for expr in template.exprs):
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


def lease_need(template_text: bytes) -> str:
    """What a task's input mapping reads, as the claim script takes it; "" when the claim cannot read it.

    ``[1 if it reads the run's input else 0, step, ...]``. A mapping that reads
    shared state gets "": its claim reads everything afterwards, in Python,
    since a namespace can be large. A literal needs nothing.
    """
    template = template_of(template_text)
    if reads_state(template):
        return ""
    uses_input = any("input" in expr.roots for expr in template.exprs)
    return orjson.dumps([1 if uses_input else 0, *sorted(template.steps)]).decode()
