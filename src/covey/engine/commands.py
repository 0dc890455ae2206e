"""Commands: what a decision asks the engine loop to write or send.

``decide`` never performs effects; it returns these, and the engine loop turns
them into one store commit (task rows, timers, outputs, the run row) and,
only after that commit, into replies and bus hints (invariant 3).
"""

from __future__ import annotations

from typing import Any

from covey.records import record

__all__ = [
    "CancelTimer",
    "Command",
    "DropTask",
    "EnqueueTask",
    "FinishRun",
    "KeepOutput",
    "ReadState",
    "SetTimer",
]


@record
class EnqueueTask:
    """Insert or replace the task's row as ready to claim.

    ``lease_floor`` is the task's last lease number: the next claim takes
    ``lease_floor + 1``, so lease numbers only grow across retries.
    """

    task_id: str
    run_id: str
    step: str
    index: int
    target: str
    labels: dict[str, str]
    priority: int
    try_no: int
    lease_floor: int
    input_template: Any
    item: Any
    timeout_ms: int | None
    input_schema: dict[str, Any] | None
    at_ms: int


@record
class DropTask:
    """Delete the task's row: it finished, failed or was cancelled (a running try then loses its lease)."""

    task_id: str


@record
class SetTimer:
    """Insert a timer row that fires TimerFired(kind, task_id, lease_no) at ``due_ms``."""

    timer_id: str
    run_id: str
    due_ms: int
    kind: str
    task_id: str | None = None
    lease_no: int = 0


@record
class CancelTimer:
    """Delete a timer row if it has not fired yet."""

    timer_id: str


@record
class KeepOutput:
    """Store a task's output: the reported one, or ``value`` when ``literal`` (wait steps, empty maps)."""

    task_id: str
    step: str
    index: int
    literal: bool = False
    value: Any = None


@record
class ReadState:
    """Read these keys of the run's shared state after this commit and decide StateRead with them."""

    run_id: str
    step: str
    keys: list[str]


@record
class FinishRun:
    """Mark the run finished; the loop renders its output and answers whoever waits for it."""

    status: str
    error: dict[str, Any] | None
    at_ms: int


Command = EnqueueTask | DropTask | SetTimer | CancelTimer | KeepOutput | ReadState | FinishRun
