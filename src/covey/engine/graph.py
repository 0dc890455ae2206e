"""Readiness: joins, skip propagation, map fan-out, hand-offs and the run's end.

Helpers of :mod:`covey.engine.decide`, pure like it. A step waits until its
upstream steps are final; with ``join: all`` it runs when all succeeded and is
skipped when any was skipped or cancelled; with ``join: any`` it runs once all are final
and at least one succeeded, and is skipped when none did. A failed step fails the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from covey.engine.commands import (
    CancelTimer,
    DropTask,
    EnqueueTask,
    FinishRun,
    KeepOutput,
    ReadState,
    SetTimer,
)
from covey.engine.events import Rejected, RunFinished, StepFinished, StepsAdded, TaskReady
from covey.engine.state import FINAL_STEP, StepState, TaskState, task_id_of
from covey.errors import SpecError
from covey.spec.compile import compile_steps
from covey.spec.expr import truthy
from covey.spec.model import StepSpec

if TYPE_CHECKING:
    from covey.engine.decide import Decision

__all__ = ["add_steps", "advance", "complete_wait", "end_run", "enqueue", "fail_run", "finish_step"]


def advance(out: Decision, names: list[str], at_ms: int) -> None:
    """Start or skip each waiting step in ``names`` whose upstream steps allow it."""
    state = out.state
    pending = list(names)
    while pending and not state.finished:
        step = state.steps[pending.pop(0)]
        if step.status != "waiting":
            continue
        verdict = _join_verdict(out, step.name)
        if verdict == "run":
            _activate(out, step, at_ms)
        elif verdict == "skip":
            _finish(out, step, "skipped", at_ms, None)
            pending.extend(state.downstream.get(step.name, ()))
        if step.status in FINAL_STEP:
            _maybe_end(out, at_ms)


def _join_verdict(out: Decision, name: str) -> str:
    state = out.state
    definition = state.defs[name]
    statuses = [state.steps[dep].status for dep in definition.deps]
    if definition.spec.join == "any" and definition.deps:
        if not all(s in FINAL_STEP for s in statuses):
            return "wait"
        return "run" if "succeeded" in statuses else "skip"
    if any(s in ("skipped", "cancelled", "failed") for s in statuses):
        return "skip"
    return "run" if all(s == "succeeded" for s in statuses) else "wait"


def _scope(out: Decision, names: frozenset[str], reader: StepState | None = None) -> dict[str, Any]:
    state = out.state
    steps: dict[str, Any] = {}
    for name in names:
        step = state.steps[name]
        if step.is_map:
            steps[name] = [step.partial.get(i) for i in range(step.total)]
        else:
            steps[name] = step.partial.get(-1)
    scope: dict[str, Any] = {"input": state.input, "steps": steps}
    if reader is not None and reader.state_read is not None:
        scope["state"] = reader.state_read
    return scope


def _activate(out: Decision, step: StepState, at_ms: int) -> None:
    definition = out.state.defs[step.name]
    if definition.when is not None:
        keys = definition.when.state_keys
        if keys and step.state_read is None:
            step.status = "checking"  # the loop reads the keys after this commit and sends StateRead
            out.do(ReadState(out.state.run_id, step.name, sorted(keys)))
            return
        test = definition.when.evaluate(_scope(out, definition.when.steps, step))
        if not truthy(test):
            _finish(out, step, "skipped", at_ms, None)
            advance(out, list(out.state.downstream.get(step.name, ())), at_ms)
            return
    step.status = "active"
    step.started_ms = at_ms
    if definition.spec.wait is not None:
        _start_wait(out, step, at_ms)
    elif definition.map is not None:
        _start_map(out, step, at_ms)
    else:
        _start_tasks(out, step, [None], at_ms)


def _start_wait(out: Decision, step: StepState, at_ms: int) -> None:
    wait = out.state.defs[step.name].spec.wait
    assert wait is not None
    if wait.signal in out.state.signals:
        complete_wait(out, step, out.state.signals.pop(wait.signal), at_ms)
    elif wait.timeout_s is not None:
        due = at_ms + int(wait.timeout_s * 1000)
        out.do(
            SetTimer(f"wait:{out.state.run_id}/{step.name}", out.state.run_id, due, "wait_timeout", step.name)
        )


def complete_wait(out: Decision, step: StepState, payload: Any, at_ms: int) -> None:
    """A signal completed a wait step: its output is the signal's payload."""
    out.do(CancelTimer(f"wait:{out.state.run_id}/{step.name}"))
    out.do(
        KeepOutput(task_id_of(out.state.run_id, step.name, -1), step.name, -1, literal=True, value=payload)
    )
    step.partial[-1] = payload
    finish_step(out, step, "succeeded", at_ms)


def _start_map(out: Decision, step: StepState, at_ms: int) -> None:
    definition = out.state.defs[step.name]
    assert definition.map is not None
    items = definition.map.evaluate(_scope(out, definition.map.steps))
    step.is_map = True
    if not isinstance(items, list):
        error = {
            "step": step.name,
            "kind": "bad_map",
            "message": f"map gave {type(items).__name__}, not a list",
        }
        finish_step(out, step, "failed", at_ms, error)
        return
    if not items:
        out.do(KeepOutput(task_id_of(out.state.run_id, step.name, -1), step.name, -1, literal=True, value=[]))
        finish_step(out, step, "succeeded", at_ms)
        return
    _start_tasks(out, step, items, at_ms)


def _start_tasks(out: Decision, step: StepState, items: list[Any], at_ms: int) -> None:
    state = out.state
    if state.task_count + len(items) > state.workflow.spec.max_steps:
        message = f"step {step.name!r} would exceed max_steps={state.workflow.spec.max_steps}"
        fail_run(out, {"step": step.name, "kind": "max_steps", "message": message}, at_ms)
        return
    state.task_count += len(items)
    step.total = len(items)
    for position, item in enumerate(items):
        index = position if step.is_map else -1
        task = TaskState(task_id_of(state.run_id, step.name, index), index)
        step.tasks[index] = task
        enqueue(out, step, task, at_ms, item)


def enqueue(out: Decision, step: StepState, task: TaskState, at_ms: int, item: Any = None) -> None:
    """Make a task claimable for its current try.

    A retried map task gets its element again from the map expression: the
    outputs it reads are in the state and never change, so it gives the same
    list, and the state need not keep every element.
    """
    definition = out.state.defs[step.name]
    spec = definition.spec
    if item is None and step.is_map and definition.map is not None:
        items = definition.map.evaluate(_scope(out, definition.map.steps))
        item = items[task.index] if isinstance(items, list) and 0 <= task.index < len(items) else None
    out.emit(TaskReady(task.task_id, task.try_no, at_ms))
    out.do(
        EnqueueTask(
            task_id=task.task_id,
            run_id=out.state.run_id,
            step=step.name,
            index=task.index,
            target=definition.target,
            labels=dict(spec.labels),
            priority=spec.priority,
            try_no=task.try_no,
            lease_floor=task.lease_floor,
            input_template=definition.input.source,
            item=item,
            timeout_ms=int(spec.timeout_s * 1000) if spec.timeout_s else None,
            input_schema=spec.input_schema,
            at_ms=at_ms,
        )
    )


def finish_step(
    out: Decision, step: StepState, status: str, at_ms: int, error: dict[str, Any] | None = None
) -> None:
    """Move a step to a final status and let its consequences follow."""
    _finish(out, step, status, at_ms, error)
    if status == "failed":
        fail_run(out, error or {"step": step.name, "kind": "error", "message": "step failed"}, at_ms)
        return
    advance(out, list(out.state.downstream.get(step.name, ())), at_ms)
    _maybe_end(out, at_ms)


def _finish(out: Decision, step: StepState, status: str, at_ms: int, error: dict[str, Any] | None) -> None:
    for task in step.tasks.values():
        if task.status in ("queued", "retry_wait"):
            task.status = "cancelled"
            out.do(DropTask(task.task_id))
    step.status = status
    step.finished_ms = at_ms
    out.state.open_steps -= 1
    out.emit(StepFinished(step.name, status, at_ms, error))


def _maybe_end(out: Decision, at_ms: int) -> None:
    if out.state.open_steps == 0 and not out.state.finished:
        end_run(out, "succeeded", None, at_ms)


def fail_run(out: Decision, error: dict[str, Any], at_ms: int) -> None:
    """End the run as failed, cancelling whatever still runs."""
    end_run(out, "failed", error, at_ms)


def end_run(out: Decision, status: str, error: dict[str, Any] | None, at_ms: int) -> None:
    """End the run: drop every unfinished task and timer, then record the end."""
    state = out.state
    if state.finished:
        return
    for step in state.steps.values():
        if step.status not in FINAL_STEP:
            for task in step.tasks.values():
                if task.status in ("queued", "retry_wait"):
                    task.status = "cancelled"
                    out.do(DropTask(task.task_id))
                    out.do(CancelTimer(f"retry:{task.task_id}:{task.try_no}"))
            step.status = "cancelled"
    if state.deadline_ms is not None:  # the run has a deadline timer
        out.do(CancelTimer(f"deadline:{state.run_id}"))
    state.status = status
    state.error = error
    state.finished_ms = at_ms
    out.emit(RunFinished(status, at_ms, error))
    out.do(FinishRun(status, error, at_ms))


def add_steps(out: Decision, task_id: str, parent: str, handoff: dict[str, Any], at_ms: int) -> bool:
    """Add a hand-off's steps; on a bad hand-off, fail the task's step and return False."""
    state = out.state
    try:
        specs = {name: StepSpec.model_validate(body) for name, body in handoff.items()}
        clash = sorted(set(specs) & set(state.defs))
        if clash:
            raise SpecError(f"step {clash[0]!r} already exists", step=clash[0])
        known = frozenset(state.defs) | frozenset(specs)
        added = compile_steps(specs, known=known, signals=frozenset(state.workflow.spec.signals))
    except (SpecError, ValueError) as exc:
        out.emit(Rejected(f"hand-off from {task_id}", str(exc), at_ms))
        error = {"step": parent, "kind": "bad_handoff", "message": str(exc)}
        finish_step(out, state.steps[parent], "failed", at_ms, error)
        return False
    for name, definition in added.items():
        state.defs[name] = definition
        state.steps[name] = StepState(name)
        state.downstream.setdefault(name, [])
        for dep in definition.deps:
            state.downstream.setdefault(dep, []).append(name)
    state.open_steps += len(added)
    out.emit(StepsAdded(task_id, list(added), at_ms))
    ready = [
        name for name, d in added.items() if all(state.steps[dep].status in FINAL_STEP for dep in d.deps)
    ]
    advance(out, ready, at_ms)
    return True
