"""The state of one run, as folded from its history.

Plain mutable slotted records: ``decide`` updates them in place so each event
costs O(1), not a copy of the run. A step owns its tasks (one, or one per map
element); a task's ``lease_floor`` is the fencing line: a report whose lease
number is at or below it comes from a superseded lease and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from covey.spec.compile import CompiledStep, CompiledWorkflow
from covey.spec.expr import Path

__all__ = [
    "FINAL_STEP",
    "RUN_STATUSES",
    "RunState",
    "StepState",
    "TaskState",
    "project",
    "rebuild",
    "task_id_of",
]

#: Every status a run may have (``RunState.status``).
RUN_STATUSES = ("running", "succeeded", "failed", "cancelled")

#: Step statuses after which nothing changes.
FINAL_STEP = frozenset({"succeeded", "failed", "skipped", "cancelled"})


def task_id_of(run_id: str, step: str, index: int) -> str:
    """The id of a step's task: ``run/step`` or ``run/step/index`` for a map element."""
    return f"{run_id}/{step}" if index < 0 else f"{run_id}/{step}/{index}"


@dataclass(slots=True)
class TaskState:
    """One task: a step, or one element of a map step.

    Statuses: ``queued`` (ready or leased in the store), ``retry_wait``,
    ``succeeded``, ``failed``, ``cancelled``.
    """

    task_id: str
    index: int
    status: str = "queued"
    try_no: int = 1
    lease_floor: int = 0
    lost_leases: int = 0


@dataclass(slots=True)
class StepState:
    """One step: ``waiting`` for upstream, ``checking`` (reading the state its condition tests), ``active``, or final."""

    name: str
    status: str = "waiting"
    total: int = 0
    done: int = 0
    is_map: bool = False
    tasks: dict[int, TaskState] = field(default_factory=dict)
    partial: dict[int, Any] = field(default_factory=dict)
    """Projections of finished outputs by index (-1 for a plain step): what conditions may read."""
    started_ms: int | None = None
    finished_ms: int | None = None
    state_read: dict[str, Any] | None = None
    """The shared state its condition read (key -> value), once a StateRead arrived."""


@dataclass(slots=True)
class RunState:
    """A run: its pinned workflow, input, steps and where it stands."""

    run_id: str
    workflow: CompiledWorkflow
    input: Any
    created_ms: int
    status: str = "running"
    seq: int = 0
    steps: dict[str, StepState] = field(default_factory=dict)
    defs: dict[str, CompiledStep] = field(default_factory=dict)
    """Step definitions: the workflow's own plus any added by hand-offs."""
    downstream: dict[str, list[str]] = field(default_factory=dict)
    open_steps: int = 0
    task_count: int = 0
    signals: dict[str, Any] = field(default_factory=dict)
    """Signals received that no wait step has taken yet, by name."""
    error: dict[str, Any] | None = None
    finished_ms: int | None = None

    @property
    def finished(self) -> bool:
        """True once the run succeeded, failed or was cancelled."""
        return self.status != "running"

    @property
    def deadline_ms(self) -> int | None:
        """When the run's deadline timer fires; None when its workflow sets no ``timeout_s``, so it has none."""
        timeout_s = self.workflow.spec.timeout_s
        return None if timeout_s is None else self.created_ms + int(timeout_s * 1000)

    def projection_paths(self, step: str) -> frozenset[Path]:
        """Paths of ``step``'s output that conditions and map sources of this run read."""
        paths: set[Path] = set(self.workflow.projections.get(step, ()))
        for name in self.downstream.get(step, ()):
            if name in self.workflow.steps:
                continue
            definition = self.defs[name]
            for expr in (definition.when, definition.map):
                if expr is not None:
                    paths.update(expr.paths.get(step, ()))
        return frozenset(paths)

    def task(self, task_id: str) -> tuple[StepState, TaskState] | None:
        """The step and task of ``task_id``, if it belongs to this run."""
        rest = task_id[len(self.run_id) + 1 :] if task_id.startswith(self.run_id + "/") else None
        if rest is None:
            return None
        name, _, index_text = rest.partition("/")
        step = self.steps.get(name)
        if step is None:
            return None
        index = int(index_text) if index_text.isdecimal() else -1
        task = step.tasks.get(index)
        # Only the id exactly as issued: not "run/step/x" for "run/step", nor "run/m/01" for "run/m/1".
        return (step, task) if task is not None and task.task_id == task_id else None


def project(output: Any, paths: frozenset[Path]) -> list[Any]:
    """The ``[path, value]`` pairs of ``output`` at ``paths`` (missing parts are null)."""
    pairs: list[Any] = []
    for path in sorted(paths):
        value = output
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        pairs.append([list(path), value])
    return pairs


def rebuild(pairs: list[Any]) -> Any:
    """A partial output holding just the projected values, shaped like the original."""
    result: Any = None
    for path, value in pairs:
        if not path:
            return value
        if not isinstance(result, dict):
            result = {}
        node = result
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return result
