"""A small driver for the pure engine: submit a run, feed it events, keep its history.

``Run`` plays the parts of the engine loop and the store that engine tests
need, and nothing more:

* the clock: each event is ``tick_ms`` later than the one before, and a timer
  fires no earlier than its due time;
* the task rows: an EnqueueTask makes a row whose next lease is
  ``lease_floor + 1`` (what the store's claim hands out), a DropTask deletes it;
* the timer rows: SetTimer inserts, CancelTimer deletes, firing deletes;
* the projections of an output, evaluated as the engine loop does before it
  decides a TaskSucceeded;
* the history: every input event followed by the derived events it caused, and
  the run's ``seq`` advanced by that many events, as the loop records them.
"""

from __future__ import annotations

from typing import Any

from covey.engine.commands import (
    CancelTimer,
    Command,
    DropTask,
    EnqueueTask,
    FinishRun,
    KeepOutput,
    SetTimer,
)
from covey.engine.decide import Decision, decide
from covey.engine.events import (
    CancelRequested,
    Event,
    RunSubmitted,
    SignalReceived,
    TaskFailed,
    TaskSucceeded,
    TimerFired,
)
from covey.engine.state import RunState, StepState, TaskState, project, task_id_of

__all__ = ["Run", "dump", "wf"]


def wf(*, signals: list[str] | None = None, **steps: dict[str, Any]) -> dict[str, Any]:
    """A workflow spec named ``w`` with ``steps`` (and ``signals`` when given)."""
    spec: dict[str, Any] = {"name": "w", "steps": steps}
    if signals:
        spec["signals"] = signals
    return spec


def dump(state: RunState, *, seq: bool = True) -> dict[str, Any]:
    """Everything a run's state holds, as plain data: equal dumps mean equal states.

    ``seq=False`` leaves out the event count, which every decided event advances.
    """
    return {
        "run": [state.run_id, state.workflow.hash, state.input, state.created_ms, state.status],
        "end": [state.error, state.finished_ms, state.open_steps, state.task_count],
        "seq": state.seq if seq else None,
        "signals": dict(state.signals),
        "defs": [[name, d.target, list(d.deps)] for name, d in state.defs.items()],
        "order": list(state.steps),
        "downstream": {name: list(children) for name, children in state.downstream.items()},
        "steps": {name: _dump_step(step) for name, step in state.steps.items()},
    }


def _dump_step(step: StepState) -> dict[str, Any]:
    return {
        "status": [step.status, step.total, step.done, step.is_map, step.started_ms, step.finished_ms],
        "partial": dict(step.partial),
        "tasks": {
            index: [task.task_id, task.status, task.try_no, task.lease_floor, task.lost_leases]
            for index, task in step.tasks.items()
        },
    }


class Run:
    """One run driven through ``decide``, with a simulated store around it."""

    def __init__(
        self,
        workflow: dict[str, Any],
        input: Any = None,
        *,
        run_id: str = "r",
        at_ms: int = 1_000,
        tick_ms: int = 10,
    ) -> None:
        self.run_id = run_id
        self.now = at_ms
        self.tick_ms = tick_ms
        self.history: list[Event] = []
        self.rows: dict[str, int] = {}
        """Task rows in the store: task id -> the lease number its claim holds."""
        self.enqueued: dict[str, EnqueueTask] = {}
        """The last EnqueueTask of each live row."""
        self.timers: dict[str, SetTimer] = {}
        self.issued: dict[str, int] = {}
        """For checks: the highest lease each task's rows have handed out."""
        self.kept: list[KeepOutput] = []
        self.finish: FinishRun | None = None
        self._state: RunState | None = None
        self.last = self.feed(RunSubmitted(run_id, workflow, input, at_ms))

    # -- feeding -----------------------------------------------------------------------

    @property
    def state(self) -> RunState:
        """The run's live state."""
        assert self._state is not None
        return self._state

    def at(self) -> int:
        """The time of the next event."""
        self.now += self.tick_ms
        return self.now

    def feed(self, event: Event) -> Decision:
        """Decide one input event, record it and apply its commands to the simulated store."""
        decision = decide(self._state, event)
        self._state = decision.state
        decision.state.seq += 1 + len(decision.events)
        self.history += [event, *decision.events]
        self._apply(decision.commands)
        self.last = decision
        return decision

    def _apply(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, EnqueueTask):
                self.rows[command.task_id] = command.lease_floor + 1
                self.enqueued[command.task_id] = command
            elif isinstance(command, DropTask):
                self.rows.pop(command.task_id, None)
                self.enqueued.pop(command.task_id, None)
            elif isinstance(command, SetTimer):
                self.timers[command.timer_id] = command
            elif isinstance(command, CancelTimer):
                self.timers.pop(command.timer_id, None)
            elif isinstance(command, KeepOutput):
                self.kept.append(command)
            elif isinstance(command, FinishRun):
                self.finish = command

    # -- inputs ------------------------------------------------------------------------

    def tid(self, step: str, index: int = -1) -> str:
        """The id of a step's task (``index`` for a map element)."""
        return task_id_of(self.run_id, step, index)

    def lease(self, step: str, index: int = -1) -> int:
        """The lease number a worker claiming the task's row now holds."""
        return self.rows[self.tid(step, index)]

    def succeed(
        self,
        step: str,
        output: Any = None,
        *,
        index: int = -1,
        lease: int | None = None,
        handoff: dict[str, Any] | None = None,
    ) -> Decision:
        """Report success of a task, with the projections of ``output`` the loop would store."""
        task_id = self.tid(step, index)
        lease = self.lease(step, index) if lease is None else lease
        projection = project(output, self.state.projection_paths(step)) if step in self.state.steps else []
        return self.feed(TaskSucceeded(task_id, lease, self.at(), projection, handoff))

    def fail(
        self, step: str, kind: str = "error", *, index: int = -1, lease: int | None = None, **extra: Any
    ) -> Decision:
        """Report failure of a task; ``extra`` goes into the error (retryable, retry_after_ms...)."""
        task_id = self.tid(step, index)
        lease = self.lease(step, index) if lease is None else lease
        error = {"kind": kind, "message": f"{kind} happened", **extra}
        return self.feed(TaskFailed(task_id, lease, self.at(), error))

    def lease_ends(
        self, step: str, kind: str = "lease_expired", *, index: int = -1, lease: int | None = None
    ) -> Decision:
        """The store saw a lease end (expired, try timeout or voided): its row stops being claimable."""
        task_id = self.tid(step, index)
        if lease is None:
            lease = self.rows.pop(task_id)
            self.enqueued.pop(task_id, None)
        return self.feed(TimerFired(f"lease:{task_id}:{lease}", kind, self.at(), task_id, lease))

    def fire(self, timer_id: str) -> Decision:
        """Fire a pending timer: delete its row and decide TimerFired at (or after) its due time."""
        timer = self.timers.pop(timer_id)
        self.now = max(self.now + self.tick_ms, timer.due_ms)
        return self.feed(TimerFired(timer.timer_id, timer.kind, self.now, timer.task_id, timer.lease_no))

    def fire_retry(self, step: str, index: int = -1) -> Decision:
        """Fire the pending retry timer of a task."""
        task = self.task(step, index)
        return self.fire(f"retry:{task.task_id}:{task.try_no}")

    def signal(self, name: str, payload: Any = None, *, signal_id: str | None = None) -> Decision:
        """Deliver a named signal."""
        at = self.at()
        return self.feed(SignalReceived(signal_id or f"sig-{at}", name, payload, at))

    def cancel(self, step: str | None = None, reason: str = "cancelled") -> Decision:
        """Cancel the run, or one step."""
        return self.feed(CancelRequested(self.at(), step, reason))

    # -- looking -----------------------------------------------------------------------

    def step(self, name: str) -> StepState:
        """A step's state."""
        return self.state.steps[name]

    def task(self, step: str, index: int = -1) -> TaskState:
        """A task's state."""
        return self.state.steps[step].tasks[index]

    def events(self, kind: type[Any]) -> list[Any]:
        """The last decision's derived events of one type."""
        return [event for event in self.last.events if isinstance(event, kind)]

    def commands(self, kind: type[Any]) -> list[Any]:
        """The last decision's commands of one type."""
        return [command for command in self.last.commands if isinstance(command, kind)]
