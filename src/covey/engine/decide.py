"""decide(state, event) -> Decision: the pure heart of covey.

Given a run's state and one input event, say what happened (derived events)
and what must be done (commands). Pure: no IO, no clock (time arrives in
``event.at_ms``), no randomness (retry jitter comes from a hash of the task
id and try), no user code, and nothing read on the side: what a condition needs
of an output arrives as a projection inside TaskSucceeded (invariant 2).

``decide`` takes ownership of ``state`` and updates it in place, so an event
costs O(1) whatever the run's size; the engine loop throws the state away if
its commit fails and reloads it from the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from covey.engine import graph
from covey.engine.backoff import retry_delay_ms
from covey.engine.commands import Command, DropTask, KeepOutput, SetTimer
from covey.engine.events import (
    CancelRequested,
    Event,
    Rejected,
    RetryScheduled,
    RunSubmitted,
    SignalReceived,
    StateRead,
    TaskFailed,
    TaskSucceeded,
    TimerFired,
)
from covey.engine.state import RunState, StepState, TaskState, rebuild
from covey.spec.compile import compile_workflow

__all__ = ["MAX_RETRY_AFTER_MS", "Decision", "decide"]

#: Longest delay an agent may ask for with ``Retry(after_s=...)``: 30 days.
MAX_RETRY_AFTER_MS = 30 * 24 * 3600 * 1000


@dataclass(slots=True)
class Decision:
    """The outcome of one event: the new state, derived events and commands."""

    state: RunState
    events: list[Event] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)

    def emit(self, event: Event) -> None:
        """Record a derived event."""
        self.events.append(event)

    def do(self, command: Command) -> None:
        """Ask the engine loop for an effect."""
        self.commands.append(command)


def decide(state: RunState | None, event: Event) -> Decision:
    """Apply one input event to a run; ``state`` is None only for RunSubmitted.

    Raises:
        ValueError: for a derived event, or a RunSubmitted to an existing run
            (the engine loop deduplicates submits before deciding).
    """
    if isinstance(event, RunSubmitted):
        if state is not None:
            raise ValueError(f"run {event.run_id} was already submitted")
        return _submitted(event)
    if state is None:
        raise ValueError(f"{type(event).__name__} for a run that does not exist")
    out = Decision(state)
    if state.finished:
        out.emit(Rejected(_describe(event), f"run is already {state.status}", event.at_ms))
        return out
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise ValueError(f"{type(event).__name__} is not an input event")
    handler(out, event)
    return out


def _describe(event: Event) -> str:
    if isinstance(event, TaskSucceeded | TaskFailed):
        return f"report {event.task_id}#{event.lease_no}"
    if isinstance(event, TimerFired):
        return f"timer {event.timer_id}"
    return type(event).__name__


def _submitted(event: RunSubmitted) -> Decision:
    workflow = compile_workflow(event.workflow)
    state = RunState(run_id=event.run_id, workflow=workflow, input=event.input, created_ms=event.at_ms)
    state.defs = dict(workflow.steps)
    state.downstream = {name: list(children) for name, children in workflow.downstream.items()}
    state.steps = {name: StepState(name) for name in workflow.steps}
    state.open_steps = len(state.steps)
    out = Decision(state)
    if state.deadline_ms is not None:
        out.do(SetTimer(f"deadline:{state.run_id}", state.run_id, state.deadline_ms, "run_deadline"))
    graph.advance(out, [name for name, d in state.defs.items() if not d.deps], event.at_ms)
    return out


def _succeeded(out: Decision, event: TaskSucceeded) -> None:
    found = _current_task(out, event.task_id, event.lease_no, event.at_ms)
    if found is None:
        return
    step, task = found
    state = out.state
    task.status = "succeeded"
    step.partial[task.index] = rebuild(event.projection)
    out.do(DropTask(task.task_id))
    out.do(KeepOutput(task.task_id, step.name, task.index))
    if event.handoff and not graph.add_steps(out, task.task_id, step.name, event.handoff, event.at_ms):
        return
    step.done += 1
    if step.done == step.total and not state.finished:
        graph.finish_step(out, step, "succeeded", event.at_ms)


def _failed(out: Decision, event: TaskFailed) -> None:
    found = _current_task(out, event.task_id, event.lease_no, event.at_ms)
    if found is not None:
        _retry_or_fail(out, found[0], found[1], event.lease_no, event.error, event.at_ms)


def _current_task(
    out: Decision, task_id: str, lease_no: int, at_ms: int
) -> tuple[StepState, TaskState] | None:
    """The task a report or lease timer is about, if ``lease_no`` is its current lease (invariant 4)."""
    found = out.state.task(task_id)
    if found is None:
        reason = "no such task"
    elif found[1].status != "queued":
        reason = f"task is {found[1].status}"
    elif lease_no <= found[1].lease_floor:
        reason = f"lease {lease_no} was superseded (current floor {found[1].lease_floor})"
    else:
        return found
    out.emit(Rejected(f"report {task_id}#{lease_no}", reason, at_ms))
    return None


def _retry_or_fail(
    out: Decision, step: StepState, task: TaskState, lease_no: int, error: dict[str, Any], at_ms: int
) -> None:
    policy = out.state.defs[step.name].spec.retry
    task.lease_floor = max(task.lease_floor, lease_no)
    kind = str(error.get("kind", "error"))
    retryable = bool(error.get("retryable", True)) and kind not in policy.no_retry_on
    # retry_on selects agent errors; a lost lease is the worker's fault and is bounded by max_lost_leases.
    if policy.retry_on is not None and kind not in policy.retry_on and kind != "lease_lost":
        retryable = False
    out.do(DropTask(task.task_id))
    if not retryable or task.try_no >= policy.attempts:
        task.status = "failed"
        graph.finish_step(out, step, "failed", at_ms, {"step": step.name, "task": task.task_id, **error})
        return
    after = error.get("retry_after_ms")
    if isinstance(after, int | float) and not isinstance(after, bool):
        delay = min(max(0, int(after)), MAX_RETRY_AFTER_MS)
    else:
        delay = retry_delay_ms(policy, task.task_id, task.try_no)
    task.status = "retry_wait"
    task.try_no += 1
    out.emit(RetryScheduled(task.task_id, task.try_no, at_ms + delay, error, at_ms))
    timer = f"retry:{task.task_id}:{task.try_no}"
    out.do(SetTimer(timer, out.state.run_id, at_ms + delay, "retry", task.task_id, task.lease_floor))


def _timer(out: Decision, event: TimerFired) -> None:
    if event.kind == "run_deadline":
        graph.fail_run(out, {"kind": "deadline", "message": "run deadline exceeded"}, event.at_ms)
    elif event.kind == "wait_timeout":
        step = out.state.steps.get(event.task_id or "")
        if step is not None and step.status == "active":
            error = {"step": step.name, "kind": "timeout", "message": "signal did not arrive in time"}
            graph.finish_step(out, step, "failed", event.at_ms, error)
    elif event.kind == "retry":
        _retry_due(out, event)
    else:
        _lease_ended(out, event)


def _retry_due(out: Decision, event: TimerFired) -> None:
    found = out.state.task(event.task_id or "")
    if found is None or found[1].status != "retry_wait":
        out.emit(Rejected(f"timer {event.timer_id}", "task is not waiting to retry", event.at_ms))
        return
    if event.lease_no != found[1].lease_floor:
        out.emit(Rejected(f"timer {event.timer_id}", "timer was set for an earlier lease", event.at_ms))
        return
    step, task = found
    task.status = "queued"
    graph.enqueue(out, step, task, event.at_ms)


def _lease_ended(out: Decision, event: TimerFired) -> None:
    """A lease expired, hit its try timeout, or was voided by a runner restart."""
    found = _current_task(out, event.task_id or "", event.lease_no, event.at_ms)
    if found is None:
        return
    step, task = found
    if event.kind == "lease_voided":
        task.lease_floor = event.lease_no
        graph.enqueue(out, step, task, event.at_ms)
        return
    if event.kind == "try_timeout":
        error = {"kind": "timeout", "message": "try exceeded its timeout", "retryable": True}
    else:
        task.lost_leases += 1
        limit = out.state.defs[step.name].spec.max_lost_leases
        error = {"kind": "lease_lost", "message": "worker stopped heartbeating", "retryable": True}
        if task.lost_leases >= limit:
            error = {
                "kind": "poison",
                "message": f"quarantined after {limit} lost leases",
                "retryable": False,
            }
    _retry_or_fail(out, step, task, event.lease_no, error, event.at_ms)


def _signal(out: Decision, event: SignalReceived) -> None:
    state = out.state
    if event.name not in state.workflow.spec.signals:
        out.emit(Rejected(f"signal {event.name}", "the workflow declares no such signal", event.at_ms))
        return
    for step in state.steps.values():
        definition = state.defs[step.name].spec
        if step.status == "active" and definition.wait is not None and definition.wait.signal == event.name:
            graph.complete_wait(out, step, event.payload, event.at_ms)
            return
    state.signals[event.name] = event.payload


def _state_read(out: Decision, event: StateRead) -> None:
    step = out.state.steps.get(event.step)
    if step is None or step.status != "checking":
        out.emit(Rejected(f"state read for {event.step}", "the step is not waiting for state", event.at_ms))
        return
    step.state_read = {key: read.get("value") for key, read in event.values.items()}
    step.status = "waiting"
    graph.advance(out, [step.name], event.at_ms)


def _cancel(out: Decision, event: CancelRequested) -> None:
    if event.step is None:
        graph.end_run(out, "cancelled", {"kind": "cancelled", "message": event.reason}, event.at_ms)
        return
    step = out.state.steps.get(event.step)
    if step is None or step.status not in ("waiting", "active"):
        out.emit(Rejected(f"cancel {event.step}", "no such unfinished step", event.at_ms))
        return
    graph.finish_step(out, step, "cancelled", event.at_ms, {"kind": "cancelled", "message": event.reason})


_HANDLERS: dict[type[Any], Any] = {
    TaskSucceeded: _succeeded,
    TaskFailed: _failed,
    TimerFired: _timer,
    SignalReceived: _signal,
    CancelRequested: _cancel,
    StateRead: _state_read,
}
