"""Properties of decide over random workflows and random event sequences (hypothesis).

A simulated store sits around the engine (see ``tests/engine/drive.py``): an
EnqueueTask makes a row whose claim holds lease ``lease_floor + 1``, a DropTask
deletes it, timers are rows that fire once. Each step of a sequence is drawn
from what that store could deliver next: a report for a live row's lease
(success, failure of a random kind, sometimes with a hand-off), the end of a
lease (expired, try timeout, voided), a due timer, a stale or duplicated report
or lease timer, a signal (declared or not), a cancel of the run or a step.

Properties:

* (a) replaying the recorded history, through JSON bytes, with
  ``fold(check=True)`` gives the live state (at the end and at a random cut);
* (b) after every decision a task has a store row iff it is queued (so no
  finished task stays claimable, and no queued task is lost), a task waiting to
  retry has its retry timer, TaskReady events match EnqueueTask commands, each
  enqueue of a task starts above every lease it had, and the run's count of open
  steps is right;
* (c) a report or lease timer for anything but a live row's current lease, or
  any input once the run ended, is Rejected and changes nothing, and a report
  for the current lease is never rejected;
* (d) a run in which every task succeeds (and every wait gets its signal)
  ends, and succeeds; after any random prefix of events, such a suffix ends it;
* (e) at most one TaskSucceeded is accepted per task: one output kept per task,
  exactly for the tasks that succeeded, accepted exactly when its lease was
  current; a task's final status never changes, and a run ends once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from covey.engine.commands import Command, EnqueueTask, KeepOutput
from covey.engine.events import (
    CancelRequested,
    Event,
    Rejected,
    RunFinished,
    SignalReceived,
    StepFinished,
    TaskFailed,
    TaskReady,
    TaskSucceeded,
    TimerFired,
    event_from_json,
    event_to_json,
)
from covey.engine.replay import fold
from covey.engine.state import FINAL_STEP, RunState, project
from tests.engine.drive import Run, dump

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KINDS = ("boom", "rate_limited", "bad_input")
LEASE_ENDS = ("lease_expired", "try_timeout", "lease_voided")
FINAL_TASK = frozenset({"succeeded", "failed", "cancelled"})

DETAIL = st.integers(min_value=0, max_value=2**40)


class Digits:
    """Choices read off one drawn integer, lowest digits first (0 gives every first choice).

    A whole workflow comes from a couple of draws, which keeps hypothesis fast;
    shrinking the integers towards 0 still shrinks the workflow towards plain steps.
    """

    def __init__(self, value: int) -> None:
        self.value = value

    def pick(self, n: int) -> int:
        self.value, digit = divmod(self.value, n)
        return digit


def output_of(detail: int, *, lists_only: bool = False) -> dict[str, Any]:
    """A step's output: ``ok`` for conditions, ``items`` for maps (now and then not a list)."""
    d = Digits(detail)
    ok = d.pick(4) != 3
    items: Any = [d.pick(10) for _ in range((1, 2, 0, 3)[d.pick(4)])]
    if not lists_only and d.pick(6) == 5:
        items = "not a list"
    return {"ok": ok, "items": items}


def retry_policy(d: Digits) -> dict[str, Any]:
    return {
        "attempts": (3, 2, 4, 1)[d.pick(4)],
        "backoff_s": (0, 0.5, 2)[d.pick(3)],
        "jitter": (0, 0.3)[d.pick(2)],
        "retry_on": (None, None, None, ["boom", "lease_lost", "timeout"], ["rate_limited"])[d.pick(5)],
        "no_retry_on": ([], [], [], ["bad_input"], ["boom"])[d.pick(5)],
    }


def step_body(i: int, d: Digits, steps: dict[str, Any], *, happy: bool) -> dict[str, Any]:
    """Step ``s<i>``: a wait, or a task (maybe a map over the input or an earlier step's items)."""
    earlier = list(steps)
    body: dict[str, Any]
    if d.pick(5) == 4:
        body = {"wait": {"signal": f"g{i}", **({"timeout_s": 5} if d.pick(2) else {})}}
    else:
        body = {"skill": "s", "retry": retry_policy(d), "max_lost_leases": (3, 2, 1)[d.pick(3)]}
        source = ([None, None, "input", *earlier])[d.pick(3 + i)]
        if source == "input":
            body["map"] = "${input.items}"
        elif source is not None:  # a map step's output is a list of outputs
            nested = "map" in steps[source]
            body["map"] = f"${{steps.{source}[].items[]}}" if nested else f"${{steps.{source}.items}}"
        if source is not None:
            body["input"] = "${item}"
    after = [name for bit, name in enumerate(earlier) if d.pick(4) == 0 and bit < 4]
    if after:
        body["after"] = after
        # Under join any, a map step may run with its source skipped: a bad_map, not a success.
        join = ("all", "all", "any")[d.pick(3)]
        if not (happy and "map" in body):
            body["join"] = join
    if earlier and d.pick(4) == 3:
        body["when"] = f"${{steps.{earlier[d.pick(i)]}.ok}}"
    return body


@st.composite
def workflows(draw: st.DrawFn, *, happy: bool = False) -> dict[str, Any]:
    """A small DAG: steps s0..sN-1, each depending only on earlier ones."""
    shapes = draw(st.lists(st.integers(0, 2**40), min_size=1, max_size=5))
    steps: dict[str, Any] = {}
    for i, shape in enumerate(shapes):
        steps[f"s{i}"] = step_body(i, Digits(shape), steps, happy=happy)
    spec: dict[str, Any] = {"name": "w", "steps": steps}
    signals = [body["wait"]["signal"] for body in steps.values() if "wait" in body]
    if signals:
        spec["signals"] = signals
    if not happy:
        head = Digits(draw(st.integers(0, 15)))
        spec["max_steps"] = (10_000, 10_000, 6, 3)[head.pick(4)]
        if head.pick(4) == 3:
            spec["timeout_s"] = 30
    return spec


# -- the simulation --------------------------------------------------------------------


@dataclass
class Decided:
    """One decided input, with what the simulated store knew about it."""

    event: Event
    current: bool | None
    """For a report or lease timer: whether it was for a live row's current lease."""
    ended: bool
    """Whether the run had ended before this event."""
    position: int
    """Where the event stands in the run's history."""
    events: list[Event]
    commands: list[Command]
    before: dict[str, Any]
    after: dict[str, Any]


Check = Callable[[Run, Decided], None]
Action = Callable[[int], Event]


class Sim:
    """A run plus a simulated store, fed events drawn by hypothesis."""

    def __init__(self, data: st.DataObject, workflow: dict[str, Any], input: Any, check: Check) -> None:
        self.data = data
        self.check = check
        self.trace: list[Decided] = []
        self.reports: list[TaskSucceeded | TaskFailed] = []
        self.handoffs = 0
        self.run = Run(workflow, input)
        first = self.run.last
        after = dump(self.state, seq=False)
        decided = Decided(self.run.history[0], None, False, 0, first.events, first.commands, {}, after)
        self.trace.append(decided)
        check(self.run, decided)

    @property
    def state(self) -> RunState:
        return self.run.state

    def feed(self, event: Event) -> None:
        run = self.run
        current: bool | None = None
        if isinstance(event, TaskSucceeded | TaskFailed) or (
            isinstance(event, TimerFired) and event.kind in LEASE_ENDS
        ):
            assert event.task_id is not None
            current = run.rows.get(event.task_id) == event.lease_no and not self.state.finished
            if isinstance(event, TimerFired) and current:
                del run.rows[event.task_id]  # the store marked the lease expired
        ended, before, position = self.state.finished, dump(self.state, seq=False), len(run.history)
        decision = run.feed(event)
        after = dump(self.state, seq=False)
        decided = Decided(event, current, ended, position, decision.events, decision.commands, before, after)
        self.trace.append(decided)
        if isinstance(event, TaskSucceeded | TaskFailed):
            self.reports.append(event)
        self.check(run, decided)

    # -- building events -------------------------------------------------------------
    #
    # Each event is built from one drawn integer, ``detail``: few draws keep
    # hypothesis fast, and small details (what shrinking aims for) give plain events.

    def success(self, task_id: str, lease: int, detail: int, *, valid: bool = False) -> TaskSucceeded:
        step = task_id.split("/")[1]
        paths = self.state.projection_paths(step) if step in self.state.steps else frozenset()
        projection = project(output_of(detail, lists_only=valid), paths)
        handoff = self.handoff(step, detail >> 24, valid=valid)
        return TaskSucceeded(task_id, lease, self.run.at(), projection, handoff)

    def handoff(self, parent: str, choice: int, *, valid: bool) -> dict[str, Any] | None:
        name = f"h{self.handoffs}"
        bodies: list[dict[str, Any]] = [
            {name: {"skill": "s"}},
            {name: {"skill": "s", "after": [parent]}},
            {name: {"skill": "s", "after": [parent], "when": f"${{steps.{parent}.ok}}"}},
            {name: {"skill": "s", "map": "${input.items}"}, f"{name}x": {"skill": "s", "after": [name]}},
        ]
        if not valid:
            # A known gap: the loop projects the parent's output before its hand-off is known,
            # so a hand-off step mapping over that output sees null and fails with bad_map.
            bodies += [
                {name: {"skill": "s", "map": f"${{steps.{parent}.items}}"}},
                {"s0": {"skill": "s"}},
                {name: {"skill": "s", "after": ["ghost"]}},
            ]
        pick = choice % 12 - 1
        if self.handoffs >= 3 or not 0 <= pick < len(bodies):
            return None
        self.handoffs += 1
        return bodies[pick]

    def failure(self, task_id: str, lease: int, detail: int) -> TaskFailed:
        d = Digits(detail)
        error: dict[str, Any] = {"kind": KINDS[d.pick(len(KINDS))], "message": "m"}
        extra = d.pick(4)
        if extra == 2:
            error["retryable"] = bool(d.pick(2))
        elif extra == 3:
            error["retry_after_ms"] = d.pick(5_000)
        return TaskFailed(task_id, lease, self.run.at(), error)

    def lease_end(self, task_id: str, lease: int, detail: int) -> TimerFired:
        kind = LEASE_ENDS[detail % len(LEASE_ENDS)]
        return TimerFired(f"lease:{task_id}:{lease}", kind, self.run.at(), task_id, lease)

    def fire(self, timer_id: str) -> TimerFired:
        timer = self.run.timers.pop(timer_id)
        self.run.now = max(self.run.now + self.run.tick_ms, timer.due_ms)
        return TimerFired(timer.timer_id, timer.kind, self.run.now, timer.task_id, timer.lease_no)

    def stale(self) -> list[Action]:
        """Reports and lease timers for leases no live row holds: superseded, or of finished tasks."""
        made: list[Action] = []
        builders = (self.success, self.failure, self.lease_end)
        for step in self.state.steps.values():
            for task in step.tasks.values():
                top = task.lease_floor if task.status == "queued" else task.lease_floor + 1
                if top >= 1:
                    made.append(
                        lambda d, tid=task.task_id, top=top: builders[d % 3](
                            tid, 1 + d // 3 % top, d // 3 // top
                        )
                    )
        for report in self.reports[-3:]:  # a worker repeating a report it sent before
            made.append(lambda d, r=report: replace(r, at_ms=self.run.at()))
        return made

    def actions(self) -> list[tuple[int, Action]]:
        """What the store could deliver next, with weights."""
        run = self.run
        made: list[tuple[int, Action]] = []
        for tid, lease in run.rows.items():
            made.append((5, lambda d, tid=tid, lease=lease: self.success(tid, lease, d)))
            made.append((2, lambda d, tid=tid, lease=lease: self.failure(tid, lease, d)))
            made.append((2, lambda d, tid=tid, lease=lease: self.lease_end(tid, lease, d)))
        made += [
            (4 if timer.kind == "retry" else 1, lambda d, t=timer.timer_id: self.fire(t))
            for timer in run.timers.values()
        ]
        made += [(2, action) for action in self.stale()]
        names = [*self.state.workflow.spec.signals, "undeclared"]
        made.append((2, lambda d: self.signal(names[d % len(names)], d >> 3)))
        steps = [*self.state.steps, "ghost"]
        made.append((1, lambda d: CancelRequested(run.at(), None if d % 8 == 7 else steps[d % len(steps)])))
        return made

    def signal(self, name: str, detail: int) -> SignalReceived:
        at = self.run.at()
        return SignalReceived(f"sig{at}", name, output_of(detail, lists_only=True), at)

    # -- driving -----------------------------------------------------------------------

    def chaos(self, count: int) -> None:
        """Feed up to ``count`` events drawn from everything the store could deliver.

        Once the run has ended, a few more show that it takes no more input.
        """
        for _ in range(count):
            if len(self.trace) > 2 and self.trace[-2].ended:
                return
            made = self.actions()
            pick, detail = self.data.draw(st.tuples(st.integers(0, sum(w for w, _ in made) - 1), DETAIL))
            for weight, action in made:
                if pick < weight:
                    self.feed(action(detail))
                    break
                pick -= weight

    def finish(self) -> None:
        """Succeed every task, fire retry timers and signal every wait, until nothing is left."""
        for _ in range(500):
            run = self.run
            if run.rows:
                tid, lease = next(iter(run.rows.items()))
                self.feed(self.success(tid, lease, self.data.draw(DETAIL), valid=True))
            elif retry := [t for t, timer in run.timers.items() if timer.kind == "retry"]:
                self.feed(self.fire(retry[0]))
            elif waits := self.open_waits():
                self.feed(self.signal(waits[0], self.data.draw(DETAIL)))
            else:
                return
        raise AssertionError("the run did not settle in 500 events")

    def open_waits(self) -> list[str]:
        state = self.state
        return [
            spec.wait.signal
            for name, step in state.steps.items()
            if step.status == "active" and (spec := state.defs[name].spec).wait is not None
        ]


def no_check(run: Run, decided: Decided) -> None:
    pass


def simulate(data: st.DataObject, *, check: Check = no_check, finish: bool = False) -> Sim:
    workflow = data.draw(workflows(), label="workflow")
    sim = Sim(data, workflow, output_of(data.draw(DETAIL, label="input")), check)
    sim.chaos(40)
    if finish:
        sim.finish()
    return sim


def replayed(history: list[Event]) -> RunState:
    """Fold a history after a trip through JSON bytes, checking every derived event."""
    stored = orjson.dumps([event_to_json(event) for event in history])
    state = fold([event_from_json(body) for body in orjson.loads(stored)], check=True)
    assert state is not None
    return state


# -- (a) replay ------------------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_replaying_the_history_reproduces_the_live_state(data: st.DataObject) -> None:
    sim = simulate(data)
    history = sim.run.history
    assert dump(replayed(history)) == dump(sim.state)
    assert sim.state.seq == len(history)

    # A cut just before some input: the live state at that point is recorded in the trace.
    cut = (
        sim.trace[data.draw(st.integers(1, len(sim.trace) - 1), label="cut")] if len(sim.trace) > 1 else None
    )
    if cut is not None:
        assert dump(replayed(history[: cut.position]), seq=False) == cut.before


# -- (b) rows and tasks ----------------------------------------------------------------


def rows_match_tasks(run: Run, decided: Decided) -> None:
    state = run.state
    for command in decided.commands:  # a task's leases only grow: each enqueue is above the last
        if isinstance(command, EnqueueTask):
            assert command.lease_floor >= run.issued.get(command.task_id, 0)
            run.issued[command.task_id] = command.lease_floor + 1
    if state.finished:
        finished = {e.step for e in run.history if isinstance(e, StepFinished)}
        assert state.status != "succeeded" or finished == set(state.steps)
    else:
        assert state.open_steps == sum(step.status not in FINAL_STEP for step in state.steps.values())
    queued = set()
    for step in state.steps.values():
        for task in step.tasks.values():
            assert task.status in {"queued", "retry_wait", *FINAL_TASK}
            if task.status == "queued":
                queued.add(task.task_id)
                assert run.rows[task.task_id] == task.lease_floor + 1
            if task.status == "retry_wait":
                assert f"retry:{task.task_id}:{task.try_no}" in run.timers
            if task.status in FINAL_TASK:
                assert task.task_id not in run.rows, f"{task.task_id} is {task.status} but claimable"
    assert set(run.rows) == queued
    ready = [(e.task_id, e.try_no) for e in decided.events if isinstance(e, TaskReady)]
    enqueued = [(c.task_id, c.try_no) for c in decided.commands if isinstance(c, EnqueueTask)]
    assert ready == enqueued
    if state.finished:
        assert queued == set()


@SETTINGS
@given(st.data())
def test_no_task_is_both_claimable_and_finished(data: st.DataObject) -> None:
    simulate(data, check=rows_match_tasks)


# -- (c) fencing -----------------------------------------------------------------------


def fenced(run: Run, decided: Decided) -> None:
    rejected = [e for e in decided.events if isinstance(e, Rejected)]
    if decided.current is False or decided.ended:
        assert len(decided.events) == 1
        assert rejected == decided.events
        assert decided.commands == []
        assert decided.after == decided.before
    elif decided.current:
        event = decided.event
        assert isinstance(event, TaskSucceeded | TaskFailed | TimerFired)
        assert not [r for r in rejected if r.what == f"report {event.task_id}#{event.lease_no}"]
    if decided.events and rejected == decided.events:
        assert decided.commands == []
        assert decided.after == decided.before


@SETTINGS
@given(st.data())
def test_superseded_and_repeated_reports_change_nothing(data: st.DataObject) -> None:
    sim = simulate(data, check=fenced)
    # Then every superseded lease of every task, and a late report for every finished task.
    for step in list(sim.state.steps.values()):
        for task in list(step.tasks.values()):
            leases = range(1, task.lease_floor + 1)
            if task.status in FINAL_TASK:
                leases = range(1, task.lease_floor + 2)
            for lease in leases:
                sim.feed(TaskSucceeded(task.task_id, lease, sim.run.at(), []))
                sim.feed(TaskFailed(task.task_id, lease, sim.run.at(), {"kind": "late"}))
                timer = f"lease:{task.task_id}:{lease}"
                sim.feed(TimerFired(timer, "lease_expired", sim.run.at(), task.task_id, lease))


# -- (d) runs end ----------------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_a_run_whose_tasks_all_succeed_succeeds(data: st.DataObject) -> None:
    workflow = data.draw(workflows(happy=True), label="workflow")
    sim = Sim(data, workflow, output_of(data.draw(DETAIL, label="input"), lists_only=True), rows_match_tasks)
    sim.finish()
    assert sim.state.status == "succeeded", sim.state.error
    assert all(step.status in ("succeeded", "skipped") for step in sim.state.steps.values())
    assert sim.run.rows == {}


@SETTINGS
@given(st.data())
def test_any_run_ends_once_its_tasks_succeed(data: st.DataObject) -> None:
    sim = simulate(data, check=rows_match_tasks, finish=True)
    assert sim.state.finished
    assert sim.run.rows == {}
    assert all(t.status in FINAL_TASK for s in sim.state.steps.values() for t in s.tasks.values())
    assert sim.run.finish is not None
    assert sim.run.finish.status == sim.state.status


# -- (e) one outcome per task ----------------------------------------------------------


@SETTINGS
@given(st.data())
def test_at_most_one_success_is_accepted_per_task(data: st.DataObject) -> None:
    sim = simulate(data, finish=data.draw(st.booleans()))
    kept = Counter(
        command.task_id
        for decided in sim.trace
        for command in decided.commands
        if isinstance(command, KeepOutput) and not command.literal
    )
    assert all(count == 1 for count in kept.values()), kept
    succeeded = {
        task.task_id
        for step in sim.state.steps.values()
        for task in step.tasks.values()
        if task.status == "succeeded"
    }
    assert set(kept) == succeeded
    for decided in sim.trace:
        if isinstance(decided.event, TaskSucceeded):
            kept_now = {c.task_id for c in decided.commands if isinstance(c, KeepOutput)}
            assert (decided.event.task_id in kept_now) == bool(decided.current)
        for name, step in decided.before.get("steps", {}).items():  # a final task stays as it ended
            for index, (_, status, *_) in step["tasks"].items():
                if status in FINAL_TASK:
                    assert decided.after["steps"][name]["tasks"][index][1] == status
    assert sum(isinstance(e, RunFinished) for e in sim.run.history) <= 1
