"""Building one group commit: the inputs of a batch, and each run's delta from its decisions.

The engine loop (:mod:`covey.runtime.loop`) decides; this module turns each
decision's events and commands into the run's share of the commit (a
:class:`~covey.store.base.RunWrite`): events numbered and encoded, task and
timer commands normalized so the last one for a task or timer wins, outputs,
staged state writes, the run's end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from covey.engine.commands import (
    CancelTimer,
    DropTask,
    EnqueueTask,
    FinishRun,
    KeepOutput,
    ReadState,
    SetTimer,
)
from covey.engine.decide import Decision
from covey.engine.events import Event, RunSubmitted, encode_event, event_to_json
from covey.engine.state import RunState
from covey.errors import CoveyError
from covey.runtime.answer import Answer
from covey.spec.compile import CompiledWorkflow, compile_workflow
from covey.state.model import StateOp, run_namespace
from covey.store.base import ClaimRequest, CommitBatch, Lease, NewRun, RunWrite

__all__ = [
    "Input",
    "PendingClaim",
    "PreparedBatch",
    "RunDelta",
    "Submission",
    "finish_write",
    "offline_submission",
    "record_decision",
]

log = logging.getLogger("covey.engine")


@dataclass(slots=True)
class Submission:
    """A run to start: a compiled workflow, its validated input and the run id."""

    run_id: str
    workflow: CompiledWorkflow
    input: Any
    input_bytes: bytes


@dataclass(slots=True)
class Input:
    """One input waiting for the next batch, with whoever waits for its commit."""

    run_id: str
    event: Event | None
    submission: Submission | None = None
    output: bytes | None = None
    output_value: Any = None
    seq: int = 0
    seen_id: str | None = None
    worker_id: str | None = None
    """For a report: the worker that sent it (its parked claim is woken first)."""
    state_ops: list[StateOp] = field(default_factory=list)
    """For a success report: the try's staged state writes, committed only if the report is accepted."""
    future: Answer[bool] | None = None
    dropped_submit: bool = False
    """A submit from the inbox whose workflow no longer compiles: consumed, no run is made."""


@dataclass(slots=True)
class PendingClaim:
    request: ClaimRequest
    future: Answer[list[Lease]]
    park_until: float = 0.0


@dataclass(slots=True)
class RunDelta:
    """A run's share of the batch being built, with its commands normalized."""

    write: RunWrite
    tasks: dict[str, EnqueueTask | None] = field(default_factory=dict)
    timers: dict[str, SetTimer | None] = field(default_factory=dict)
    items: list[Input] = field(default_factory=list)
    reads: list[ReadState] = field(default_factory=list)
    finished: bool = False


@dataclass(slots=True)
class PreparedBatch:
    """A decided batch waiting for (or in) its commit."""

    items: list[Input]
    claims: list[PendingClaim]
    batch: CommitBatch
    writes: dict[str, RunDelta] = field(default_factory=dict)
    answers: list[tuple[Input, bool]] = field(default_factory=list)
    woken_for: int = 0
    """Task slots of the parked claims this batch woke."""


def offline_submission(event: RunSubmitted, row_id: str) -> Submission | None:
    """A submit appended to the store while no runner ran (it was validated by the command)."""
    try:
        compiled = compile_workflow(event.workflow)
    except CoveyError as exc:
        log.error("dropping submit %s: %s", row_id, exc)
        return None
    return Submission(event.run_id, compiled, event.input, orjson.dumps(event.input))


_SPEC_TEXT: dict[str, bytes] = {}


def spec_text(workflow: CompiledWorkflow) -> bytes:
    """A pinned spec's JSON, encoded once per workflow rather than once per run."""
    text = _SPEC_TEXT.get(workflow.hash)
    if text is None:
        if len(_SPEC_TEXT) > 1024:
            _SPEC_TEXT.clear()
        text = _SPEC_TEXT[workflow.hash] = orjson.dumps(workflow.source)
    return text


def record_decision(entry: RunDelta, item: Input, decision: Decision) -> None:
    """Fold one decision into its run's write: events appended, commands normalized."""
    write, state = entry.write, decision.state
    assert item.event is not None
    entry.items.append(item)
    for event in (item.event, *decision.events):
        write.new_seq += 1
        if isinstance(event, RunSubmitted) and item.submission is not None:
            body = event_to_json(event)
            body["workflow"] = {"$spec": item.submission.workflow.hash}
            text = orjson.dumps(body)
        else:
            text = encode_event(event)
        write.events.append((write.new_seq, type(event).__name__, event.at_ms, text))
    state.seq = write.new_seq
    if item.submission is not None:
        wf = item.submission.workflow
        write.new = NewRun(wf.spec.name, wf.hash, spec_text(wf), item.submission.input_bytes)
    if item.seq:
        write.consumed.append(item.seq)
    if item.seen_id:
        write.seen.append(item.seen_id)
    for command in decision.commands:
        apply_command(entry, item, command, state)


def apply_command(entry: RunDelta, item: Input, command: Any, state: RunState) -> None:
    write = entry.write
    if isinstance(command, EnqueueTask):
        entry.tasks[command.task_id] = command
    elif isinstance(command, DropTask):
        entry.tasks[command.task_id] = None
    elif isinstance(command, SetTimer):
        entry.timers[command.timer_id] = command
    elif isinstance(command, CancelTimer):
        entry.timers[command.timer_id] = None
    elif isinstance(command, KeepOutput):
        body = orjson.dumps(command.value) if command.literal else (item.output or b"null")
        write.outputs.append((command.step, command.index, body))
        if not command.literal:
            write.state_ops.extend(item.state_ops)
    elif isinstance(command, ReadState):
        entry.reads.append(command)
    elif isinstance(command, FinishRun):
        write.status = command.status
        write.error = orjson.dumps(command.error) if command.error is not None else None
        write.finished_ms = command.at_ms
        write.output_template = orjson.dumps(output_template(state))
        if state.workflow.spec.run_state == "delete":
            write.drop_namespace = run_namespace(state.run_id)
        entry.finished = True


def output_template(state: RunState) -> Any:
    if state.workflow.spec.output is not None:
        return state.workflow.spec.output
    sinks = [name for name in state.defs if not state.downstream.get(name)]
    return {name: f"${{steps.{name}}}" for name in sinks}


def finish_write(entry: RunDelta) -> RunWrite:
    write = entry.write
    for task_id, task in entry.tasks.items():
        if task is None:
            write.drop.append(task_id)
        else:
            write.enqueue.append(task)
    for timer_id, timer in entry.timers.items():
        if timer is None:
            write.cancel_timers.append(timer_id)
        else:
            write.set_timers.append(timer)
    return write
