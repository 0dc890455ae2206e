"""A stand-in for the engine loop, so the conformance tests write realistic batches.

:class:`Driver` builds :class:`~covey.store.base.RunWrite` objects the way
:mod:`covey.runtime.loop` does (a RunSubmitted event whose workflow is the
``{"$spec": hash}`` placeholder, a :class:`~covey.store.base.NewRun` with the
pinned spec, one or more events per later write) and keeps each run's
sequence number, so a test only says what changes. It decides nothing: the
tests are about the store, not the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from covey.engine.commands import EnqueueTask, SetTimer
from covey.engine.events import Event, RunSubmitted, SignalReceived, event_to_json
from covey.engine.state import task_id_of
from covey.spec.compile import compile_workflow
from covey.store.base import ClaimRequest, CommitBatch, CommitResult, InboxRow, NewRun, RunWrite, Store
from covey.testing import wait_for

__all__ = [
    "SPEC",
    "SPEC_HASH",
    "WORKFLOW",
    "Driver",
    "claim_request",
    "inbox_row",
    "task",
    "wait_past",
]

#: The workflow every conformance run pins (its shape does not matter to a store).
SPEC: dict[str, Any] = {
    "name": "conformance",
    "steps": {"a": {"skill": "echo"}, "b": {"skill": "echo", "input": {"x": "${steps.a}"}}},
}
_COMPILED = compile_workflow(SPEC)
#: The pinned spec's hash, as the engine loop computes it.
SPEC_HASH: str = _COMPILED.hash
#: The workflow's name, as ``RunInfo.workflow`` shows it.
WORKFLOW: str = _COMPILED.spec.name


def task(
    run_id: str,
    step: str,
    index: int = -1,
    *,
    target: str = "echo",
    priority: int = 0,
    labels: Mapping[str, str] | None = None,
    try_no: int = 1,
    lease_floor: int = 0,
    template: Any = None,
    item: Any = None,
    timeout_ms: int | None = None,
    input_schema: dict[str, Any] | None = None,
) -> EnqueueTask:
    """An EnqueueTask as the engine emits it; the task id follows the engine's ``run/step[/index]``."""
    return EnqueueTask(
        task_id=task_id_of(run_id, step, index),
        run_id=run_id,
        step=step,
        index=index,
        target=target,
        labels=dict(labels or {}),
        priority=priority,
        try_no=try_no,
        lease_floor=lease_floor,
        input_template=template,
        item=item,
        timeout_ms=timeout_ms,
        input_schema=input_schema,
        at_ms=0,
    )


def claim_request(
    worker_id: str = "w1",
    targets: Iterable[str] = ("echo",),
    *,
    labels: Mapping[str, str] | None = None,
    limit: int = 10,
    lease_ms: int = 60_000,
) -> ClaimRequest:
    """A worker's claim: by default for ten ``echo`` tasks, leased for a minute."""
    return ClaimRequest(worker_id, frozenset(targets), dict(labels or {}), limit, lease_ms)


def inbox_row(row_id: str, run_id: str, event: Event, output: Any = None) -> InboxRow:
    """An inbox row carrying ``event`` (and, for a success report, its output)."""
    body = None if output is None else orjson.dumps(output)
    return InboxRow(row_id, run_id, event_to_json(event), output=body)


async def wait_past(store: Store, ms: int) -> int:
    """Wait until the store's clock is past ``ms``; returns the clock then.

    Used to make two commits happen at different store times, and to let a
    short lease or timer come due, without a fixed sleep.
    """

    async def passed() -> int:
        now = await store.now_ms()
        return now if now > ms else 0

    return await wait_for(passed, 5.0, 0.002, message=f"the store clock to pass {ms}")


class Driver:
    """Builds and commits RunWrites like the engine loop, tracking each run's sequence number.

    ``seqs`` holds the last committed sequence number of each run; a write
    from :meth:`submit` or :meth:`write` expects it, and :meth:`commit`
    advances it for every run that was not reported as a conflict.
    """

    def __init__(self, store: Store, epoch: int) -> None:
        self.store = store
        self.epoch = epoch
        self.seqs: dict[str, int] = {}
        self._fillers = 0

    @classmethod
    async def start(cls, store: Store) -> Driver:
        """Take ownership of the store (``begin_epoch``) and return a driver for that epoch."""
        return cls(store, await store.begin_epoch())

    def submit(self, run_id: str, run_input: Any = None, *, at_ms: int = 0) -> RunWrite:
        """A run's first write: RunSubmitted with the spec placeholder, and the NewRun row."""
        event = RunSubmitted(run_id, dict(SPEC), run_input, at_ms)
        body = event_to_json(event)
        body["workflow"] = {"$spec": SPEC_HASH}
        write = RunWrite(run_id, expected_seq=0, new_seq=1)
        write.events.append((1, "RunSubmitted", at_ms, orjson.dumps(body)))
        write.new = NewRun(WORKFLOW, SPEC_HASH, orjson.dumps(SPEC), orjson.dumps(run_input))
        return write

    def write(self, run_id: str, *events: Event) -> RunWrite:
        """A later write of a known run, appending ``events`` (a filler signal if none are given)."""
        if not events:
            self._fillers += 1
            events = (SignalReceived(f"filler-{self._fillers}", "tick", None, 0),)
        seq = self.seqs[run_id]
        write = RunWrite(run_id, expected_seq=seq, new_seq=seq)
        for event in events:
            write.new_seq += 1
            body = event_to_json(event)
            write.events.append((write.new_seq, body["type"], event.at_ms, orjson.dumps(body)))
        return write

    async def commit(
        self,
        *writes: RunWrite,
        claims: Sequence[ClaimRequest] = (),
        consumed: Sequence[int] = (),
        epoch: int | None = None,
    ) -> CommitResult:
        """Commit ``writes`` (and claims, and consumed rows of unknown runs) in one batch."""
        batch = CommitBatch(
            self.epoch if epoch is None else epoch, list(writes), list(claims), list(consumed)
        )
        result = await self.store.commit(batch)
        for write in writes:
            if write.run_id not in result.conflicts:
                self.seqs[write.run_id] = write.new_seq
        return result

    async def start_run(
        self,
        run_id: str,
        run_input: Any = None,
        *,
        enqueue: Iterable[EnqueueTask] = (),
        timers: Iterable[SetTimer] = (),
        outputs: Iterable[tuple[str, int, Any]] = (),
    ) -> RunWrite:
        """Submit and commit a run with some tasks, timers and (JSON-encoded here) outputs."""
        write = self.submit(run_id, run_input)
        write.enqueue.extend(enqueue)
        write.set_timers.extend(timers)
        write.outputs.extend((step, index, orjson.dumps(value)) for step, index, value in outputs)
        result = await self.commit(write)
        assert not result.conflicts, f"a new run {run_id!r} conflicted: {result.conflicts}"
        return write

    async def update(
        self,
        run_id: str,
        *,
        enqueue: Iterable[EnqueueTask] = (),
        drop: Iterable[str] = (),
        timers: Iterable[SetTimer] = (),
        cancel_timers: Iterable[str] = (),
        outputs: Iterable[tuple[str, int, Any]] = (),
        claims: Sequence[ClaimRequest] = (),
    ) -> CommitResult:
        """Commit one more write of a known run with these changes."""
        write = self.write(run_id)
        write.enqueue.extend(enqueue)
        write.drop.extend(drop)
        write.set_timers.extend(timers)
        write.cancel_timers.extend(cancel_timers)
        write.outputs.extend((step, index, orjson.dumps(value)) for step, index, value in outputs)
        result = await self.commit(write, claims=claims)
        assert not result.conflicts, f"run {run_id!r} conflicted: {result.conflicts}"
        return result
