"""decide(): fencing, retries, lease timers, joins, conditions, maps, waits, cancels and hand-offs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from covey.engine.backoff import retry_delay_ms
from covey.engine.commands import (
    CancelTimer,
    DropTask,
    EnqueueTask,
    FinishRun,
    KeepOutput,
    ReadState,
    SetTimer,
)
from covey.engine.decide import MAX_RETRY_AFTER_MS, decide
from covey.engine.events import (
    CancelRequested,
    Rejected,
    RetryScheduled,
    RunFinished,
    RunSubmitted,
    SignalReceived,
    StateRead,
    StepFinished,
    StepsAdded,
    TaskFailed,
    TaskReady,
    TaskSucceeded,
    TimerFired,
)
from covey.engine.replay import fold
from covey.engine.state import RunState, TaskState
from covey.spec.model import RetryPolicy
from tests.engine.drive import Run, dump, wf

NO_JITTER = {"attempts": 3, "backoff_s": 1, "multiplier": 2, "jitter": 0}


def unchanged(run: Run, event: Any) -> list[Any]:
    """Decide ``event`` and check it changed nothing: the derived events it gave (all Rejected)."""
    before = dump(run.state)
    decision = decide(run.state, event)
    assert dump(run.state) == before
    assert decision.commands == []
    assert decision.events
    assert all(isinstance(e, Rejected) for e in decision.events)
    return decision.events


def chain() -> Run:
    return Run(wf(a={"skill": "s"}, b={"skill": "t", "input": {"x": "${steps.a.x}"}}))


# -- submit and task ids ---------------------------------------------------------------


def test_submit_makes_root_steps_ready_with_run_slash_step_ids() -> None:
    run = Run(
        wf(
            a={"skill": "s", "priority": 5, "labels": {"gpu": "true"}, "timeout_s": 2.5, "input": {"k": 1}},
            b={"agent": "bob", "after": ["a"]},
        ),
        {"q": 1},
    )
    assert run.last.events == [TaskReady("r/a", 1, 1_000)]
    [enqueue] = run.commands(EnqueueTask)
    assert enqueue.task_id == "r/a"
    assert (enqueue.run_id, enqueue.step, enqueue.index, enqueue.target) == ("r", "a", -1, "s")
    assert (enqueue.try_no, enqueue.lease_floor, enqueue.priority) == (1, 0, 5)
    assert (enqueue.labels, enqueue.timeout_ms, enqueue.input_template) == ({"gpu": "true"}, 2_500, {"k": 1})
    assert run.step("a").status == "active"
    assert run.step("b").status == "waiting"
    assert run.step("b").tasks == {}
    assert run.rows == {"r/a": 1}

    run.succeed("a")
    assert run.enqueued["r/b"].target == "agent:bob"


def test_map_elements_are_tasks_run_slash_step_slash_index() -> None:
    run = Run(wf(m={"skill": "s", "map": "${input.xs}", "input": "${item}"}), {"xs": ["p", "q"]})
    assert run.last.events == [TaskReady("r/m/0", 1, 1_000), TaskReady("r/m/1", 1, 1_000)]
    assert [(c.task_id, c.index, c.item) for c in run.commands(EnqueueTask)] == [
        ("r/m/0", 0, "p"),
        ("r/m/1", 1, "q"),
    ]
    assert run.state.task("r/m/1") == (run.step("m"), run.task("m", 1))
    assert run.state.task("r/m") is None


def test_submit_sets_the_run_deadline_timer() -> None:
    spec = wf(a={"skill": "s"})
    spec["timeout_s"] = 60
    run = Run(spec)
    assert run.commands(SetTimer) == [SetTimer("deadline:r", "r", 61_000, "run_deadline")]


def test_a_run_that_ends_cancels_its_deadline_timer() -> None:
    spec = wf(a={"skill": "s"})
    spec["timeout_s"] = 60
    run = Run(spec)
    run.succeed("a")
    assert run.last.events[-1] == RunFinished("succeeded", run.now)
    assert run.commands(CancelTimer) == [CancelTimer("deadline:r")]
    assert run.timers == {}


def test_decide_refuses_misuse() -> None:
    run = chain()
    with pytest.raises(ValueError, match="already submitted"):
        decide(run.state, RunSubmitted("r", wf(a={"skill": "s"}), None, 5))
    with pytest.raises(ValueError, match="does not exist"):
        decide(None, TaskSucceeded("r/a", 1, 5))
    with pytest.raises(ValueError, match="not an input event"):
        decide(run.state, TaskReady("r/a", 1, 5))


# -- success ---------------------------------------------------------------------------


def test_success_drops_the_row_keeps_the_output_and_readies_downstream() -> None:
    run = chain()
    run.succeed("a", {"x": 1})
    assert run.last.events == [StepFinished("a", "succeeded", 1_010), TaskReady("r/b", 1, 1_010)]
    assert run.last.commands[:2] == [DropTask("r/a"), KeepOutput("r/a", "a", -1)]
    assert run.task("a").status == "succeeded"
    assert run.rows == {"r/b": 1}

    run.succeed("b")
    assert run.last.events[-1] == RunFinished("succeeded", 1_020)
    assert run.commands(FinishRun) == [FinishRun("succeeded", None, 1_020)]
    assert not run.commands(CancelTimer)  # a run without a deadline has no deadline timer to cancel
    assert run.state.status == "succeeded"
    assert run.state.finished_ms == 1_020


def test_partial_output_holds_only_the_projection() -> None:
    run = Run(wf(a={"skill": "s"}, b={"skill": "s", "when": "${steps.a.ok}"}))
    run.succeed("a", {"ok": True, "big": "x" * 100})
    assert run.step("a").partial == {-1: {"ok": True}}
    assert run.step("b").status == "active"


# -- fencing (invariant 4) -------------------------------------------------------------


@pytest.mark.parametrize("report", ["succeed", "fail"])
def test_report_from_a_superseded_lease_changes_nothing(report: str) -> None:
    run = chain()
    run.lease_ends("a")  # lease 1 expired: floor 1, waiting to retry
    run.fire_retry("a")
    assert run.lease("a") == 2
    old = (
        TaskSucceeded("r/a", 1, run.at(), [])
        if report == "succeed"
        else TaskFailed("r/a", 1, run.at(), {"kind": "boom"})
    )
    [rejected] = unchanged(run, old)
    assert rejected.what == "report r/a#1"
    assert "superseded" in rejected.reason

    run.succeed("a")  # the current lease is accepted
    assert run.step("a").status == "succeeded"


def test_repeated_report_is_rejected() -> None:
    run = chain()
    run.succeed("a", lease=1)
    [rejected] = unchanged(run, TaskSucceeded("r/a", 1, run.at(), []))
    assert rejected.reason == "task is succeeded"
    unchanged(run, TaskFailed("r/a", 1, run.at(), {"kind": "late"}))


def test_report_while_waiting_to_retry_is_rejected() -> None:
    run = chain()
    run.fail("a", lease=1)
    [rejected] = unchanged(run, TaskSucceeded("r/a", 2, run.at(), []))
    assert rejected.reason == "task is retry_wait"


@pytest.mark.parametrize("task_id", ["r/nope", "other/a", "r/a/0", "r/b", "r", "r/a/xyz", "r/a/²"])
def test_report_for_an_unknown_task_is_rejected(task_id: str) -> None:
    run = chain()
    [rejected] = unchanged(run, TaskSucceeded(task_id, 1, run.at(), []))
    assert rejected.reason == "no such task"
    unchanged(run, TaskFailed(task_id, 1, run.at(), {"kind": "x"}))


def test_map_task_id_must_be_spelled_as_issued() -> None:
    run = Run(wf(m={"skill": "s", "map": "${input}"}), ["a", "b"])
    for alias in ("r/m/01", "r/m/+1", "r/m/١"):
        unchanged(run, TaskSucceeded(alias, 1, run.at(), []))
    run.succeed("m", index=1)
    assert run.task("m", 1).status == "succeeded"


def test_every_input_after_the_run_ended_is_rejected() -> None:
    run = chain()
    run.cancel()
    for event in (
        TaskSucceeded("r/a", 1, run.at(), []),
        TimerFired("retry:r/a:2", "retry", run.at(), "r/a", 1),
        SignalReceived("s1", "go", None, run.at()),
    ):
        [rejected] = unchanged(run, event)
        assert rejected.reason == "run is already cancelled"


# -- retries ---------------------------------------------------------------------------


def test_failure_schedules_a_retry_with_backoff() -> None:
    run = Run(wf(a={"skill": "s", "retry": NO_JITTER}))
    error = {"kind": "boom", "message": "boom happened"}
    run.fail("a", "boom")
    assert run.last.events == [RetryScheduled("r/a", 2, 2_010, error, 1_010)]
    assert run.last.commands == [
        DropTask("r/a"),
        SetTimer("retry:r/a:2", "r", 2_010, "retry", "r/a", 1),
    ]
    task = run.task("a")
    assert (task.status, task.try_no, task.lease_floor) == ("retry_wait", 2, 1)

    run.fire_retry("a")
    assert run.last.events == [TaskReady("r/a", 2, 2_010)]
    [enqueue] = run.commands(EnqueueTask)
    assert (enqueue.try_no, enqueue.lease_floor) == (2, 1)
    assert run.lease("a") == 2

    run.fail("a", "boom")  # second delay doubles
    assert run.events(RetryScheduled)[0].due_ms == run.now + 2_000


def test_retry_delay_has_deterministic_jitter_within_bounds() -> None:
    policy = RetryPolicy(backoff_s=1, multiplier=2, jitter=0.5)
    delays = {retry_delay_ms(policy, f"r/a/{i}", 1) for i in range(50)}
    assert all(500 <= d <= 1_500 for d in delays)
    assert len(delays) > 10  # spread
    assert retry_delay_ms(policy, "r/a/7", 1) == retry_delay_ms(policy, "r/a/7", 1)


def test_retry_delay_grows_and_is_capped() -> None:
    policy = RetryPolicy(backoff_s=1, multiplier=3, jitter=0, max_backoff_s=20)
    assert [retry_delay_ms(policy, "t", n) for n in range(1, 6)] == [1_000, 3_000, 9_000, 20_000, 20_000]


def test_retry_delay_stays_capped_when_the_exponential_overflows() -> None:
    policy = RetryPolicy(attempts=1000, backoff_s=1, multiplier=10, jitter=0, max_backoff_s=60)
    assert retry_delay_ms(policy, "t", 400) == 60_000
    assert retry_delay_ms(policy.model_copy(update={"backoff_s": 0}), "t", 400) == 0


def test_long_retry_sequence_with_a_steep_multiplier_keeps_deciding() -> None:
    retry = {"attempts": 1000, "backoff_s": 1, "multiplier": 10, "max_backoff_s": 5, "jitter": 0}
    run = Run(wf(a={"skill": "s", "retry": retry}))
    for _ in range(330):
        run.fail("a")
        run.fire_retry("a")
    assert run.task("a").try_no == 331
    assert run.state.status == "running"


def test_retry_after_ms_overrides_the_backoff() -> None:
    run = Run(wf(a={"skill": "s", "retry": NO_JITTER}))
    run.fail("a", "rate_limited", retry_after_ms=250)
    assert run.events(RetryScheduled)[0].due_ms == 1_010 + 250


def test_attempts_exhausted_fails_the_step_and_the_run() -> None:
    run = Run(
        wf(a={"skill": "s", "retry": {"attempts": 2, "backoff_s": 0}}, b={"skill": "s", "after": ["a"]})
    )
    run.fail("a", "boom")
    run.fire_retry("a")
    run.fail("a", "boom")
    error = {"step": "a", "task": "r/a", "kind": "boom", "message": "boom happened"}
    assert run.last.events == [
        StepFinished("a", "failed", run.now, error),
        RunFinished("failed", run.now, error),
    ]
    assert run.task("a").status == "failed"
    assert run.step("b").status == "cancelled"
    assert run.finish == FinishRun("failed", error, run.now)
    assert run.rows == {}


@pytest.mark.parametrize(
    ("retry", "error"),
    [
        ({}, {"retryable": False}),
        ({"no_retry_on": ["boom"]}, {}),
        ({"retry_on": ["rate_limited"]}, {}),
    ],
)
def test_errors_the_policy_does_not_retry_fail_at_once(retry: dict[str, Any], error: dict[str, Any]) -> None:
    run = Run(wf(a={"skill": "s", "retry": retry}))
    run.fail("a", "boom", **error)
    assert run.events(RetryScheduled) == []
    assert run.state.status == "failed"
    assert run.state.error is not None
    assert run.state.error["kind"] == "boom"


def test_retry_on_lists_the_kinds_that_are_retried() -> None:
    run = Run(wf(a={"skill": "s", "retry": {"retry_on": ["rate_limited"]}}))
    run.fail("a", "rate_limited")
    assert run.task("a").status == "retry_wait"


def test_retry_timer_for_a_task_not_waiting_is_rejected() -> None:
    run = Run(wf(a={"skill": "s", "retry": NO_JITTER}))
    run.fail("a")
    stale = TimerFired("retry:r/a:2", "retry", run.at(), "r/a", 1)
    run.fire_retry("a")
    [rejected] = unchanged(run, stale)
    assert rejected.reason == "task is not waiting to retry"


# -- lease timers ----------------------------------------------------------------------


def test_lost_lease_counts_as_a_failed_try() -> None:
    run = Run(wf(a={"skill": "s", "retry": NO_JITTER}))
    run.lease_ends("a", "lease_expired")
    [scheduled] = run.events(RetryScheduled)
    assert scheduled.error["kind"] == "lease_lost"
    task = run.task("a")
    assert (task.status, task.try_no, task.lease_floor, task.lost_leases) == ("retry_wait", 2, 1, 1)


def test_too_many_lost_leases_quarantine_the_task_as_poison() -> None:
    run = Run(wf(a={"skill": "s", "max_lost_leases": 2, "retry": {"attempts": 10, "backoff_s": 0}}))
    run.lease_ends("a")
    run.fire_retry("a")
    run.lease_ends("a")
    [finished] = run.events(StepFinished)
    assert finished.status == "failed"
    assert finished.error is not None
    assert finished.error["kind"] == "poison"
    assert run.task("a").lost_leases == 2
    assert run.state.status == "failed"


def test_try_timeout_fails_the_try_without_counting_a_lost_lease() -> None:
    run = Run(wf(a={"skill": "s", "retry": NO_JITTER}))
    run.lease_ends("a", "try_timeout")
    [scheduled] = run.events(RetryScheduled)
    assert scheduled.error["kind"] == "timeout"
    assert run.task("a").lost_leases == 0
    assert run.task("a").try_no == 2


def test_voided_lease_reenqueues_the_same_try_uncounted() -> None:
    run = Run(wf(a={"skill": "s"}))
    run.lease_ends("a", "lease_voided")
    assert run.last.events == [TaskReady("r/a", 1, 1_010)]
    task = run.task("a")
    assert (task.status, task.try_no, task.lease_floor, task.lost_leases) == ("queued", 1, 1, 0)
    assert run.lease("a") == 2


@pytest.mark.parametrize("kind", ["lease_expired", "try_timeout", "lease_voided"])
def test_stale_lease_timer_changes_nothing(kind: str) -> None:
    run = Run(wf(a={"skill": "s"}))
    run.lease_ends("a", "lease_voided")  # floor is now 1
    unchanged(run, TimerFired("lease:r/a:1", kind, run.at(), "r/a", 1))
    run.succeed("a")
    unchanged(run, TimerFired("lease:r/a:2", kind, run.at(), "r/a", 2))


# -- run deadline and wait timeout -----------------------------------------------------


def test_run_deadline_fails_the_run_and_cleans_up() -> None:
    spec = wf(a={"skill": "s"}, b={"skill": "s", "retry": NO_JITTER})
    spec["timeout_s"] = 30
    run = Run(spec)
    run.fail("b")
    run.fire("deadline:r")
    assert run.last.events == [
        RunFinished("failed", 31_000, {"kind": "deadline", "message": "run deadline exceeded"})
    ]
    assert DropTask("r/a") in run.last.commands
    assert CancelTimer("retry:r/b:2") in run.last.commands
    assert run.rows == {}
    assert "retry:r/b:2" not in run.timers
    assert (run.task("a").status, run.task("b").status) == ("cancelled", "cancelled")


def test_wait_timeout_fails_a_wait_that_got_no_signal() -> None:
    run = Run(wf(signals=["go"], w={"wait": {"signal": "go", "timeout_s": 5}}))
    assert run.commands(SetTimer) == [SetTimer("wait:r/w", "r", 6_000, "wait_timeout", "w")]
    run.fire("wait:r/w")
    error = {"step": "w", "kind": "timeout", "message": "signal did not arrive in time"}
    assert run.last.events[0] == StepFinished("w", "failed", 6_000, error)
    assert run.state.status == "failed"


def test_wait_timeout_after_the_signal_changes_nothing() -> None:
    run = Run(
        wf(signals=["go"], w={"wait": {"signal": "go", "timeout_s": 5}}, b={"skill": "s", "after": ["w"]})
    )
    late = TimerFired("wait:r/w", "wait_timeout", 7_000, "w")
    run.signal("go", 1)
    assert CancelTimer("wait:r/w") in run.last.commands
    before = dump(run.state)
    decision = decide(run.state, late)
    assert (decision.events, decision.commands) == ([], [])
    assert dump(run.state) == before


# -- joins and conditions --------------------------------------------------------------


def test_join_all_waits_for_every_upstream_step() -> None:
    run = Run(wf(a={"skill": "s"}, b={"skill": "s"}, c={"skill": "s", "after": ["a", "b"]}))
    run.succeed("a")
    assert run.step("c").status == "waiting"
    run.succeed("b")
    assert run.events(TaskReady) == [TaskReady("r/c", 1, run.now)]


def test_false_condition_skips_and_the_skip_propagates() -> None:
    run = Run(
        wf(
            a={"skill": "s"},
            b={"skill": "s", "when": "${steps.a.ok}"},
            c={"skill": "s", "after": ["b"]},
            d={"skill": "s", "after": ["a"]},
        )
    )
    run.succeed("a", {"ok": False})
    assert run.events(StepFinished) == [
        StepFinished("a", "succeeded", 1_010),
        StepFinished("b", "skipped", 1_010),
        StepFinished("c", "skipped", 1_010),
    ]
    assert run.events(TaskReady) == [TaskReady("r/d", 1, 1_010)]
    run.succeed("d")
    assert run.state.status == "succeeded"


@pytest.mark.parametrize(
    ("flag", "status"), [(True, "active"), (0, "active"), ("", "skipped"), (None, "skipped")]
)
def test_condition_on_the_input_uses_jmespath_truth(flag: Any, status: str) -> None:
    run = Run(wf(a={"skill": "s", "when": "${input.flag}"}), {"flag": flag})
    assert run.step("a").status == status


def test_join_any_waits_for_all_upstream_and_runs_if_one_succeeded() -> None:
    run = Run(
        wf(
            a={"skill": "s"},
            b={"skill": "s", "when": "${input.b}"},
            c={"skill": "s"},
            j={"skill": "s", "after": ["a", "b", "c"], "join": "any"},
        ),
        {"b": False},
    )
    assert run.step("b").status == "skipped"
    run.succeed("a")
    assert run.step("j").status == "waiting"  # c is not final yet
    run.cancel("c")
    assert run.step("j").status == "active"


def test_join_any_is_skipped_when_no_upstream_step_succeeded() -> None:
    run = Run(
        wf(
            a={"skill": "s", "when": "${input.go}"},
            b={"skill": "s", "when": "${input.go}"},
            j={"skill": "s", "after": ["a", "b"], "join": "any"},
            k={"skill": "s", "after": ["j"]},
        ),
        {"go": False},
    )
    assert [run.step(n).status for n in "abjk"] == ["skipped"] * 4
    assert run.state.status == "succeeded"


# -- map -------------------------------------------------------------------------------


def test_map_step_succeeds_when_every_element_did_in_any_order() -> None:
    run = Run(
        wf(
            a={"skill": "s"},
            m={"skill": "s", "map": "${steps.a.items}", "input": "${item}"},
            z={"skill": "s", "when": "${steps.m[?ok] | length(@) == `2`}"},
        )
    )
    run.succeed("a", {"items": [10, 20, 30]})
    assert [(c.task_id, c.item) for c in run.commands(EnqueueTask)] == [
        ("r/m/0", 10),
        ("r/m/1", 20),
        ("r/m/2", 30),
    ]
    run.succeed("m", {"ok": True}, index=2)
    run.succeed("m", {"ok": False}, index=0)
    assert run.step("m").status == "active"
    assert run.step("m").done == 2
    run.succeed("m", {"ok": True}, index=1)
    assert run.step("m").status == "succeeded"
    assert run.step("m").partial == {0: {"ok": False}, 1: {"ok": True}, 2: {"ok": True}}
    assert run.step("z").status == "active"


def test_a_retried_map_element_gets_its_item_again() -> None:
    # Given a map over an upstream output, whose elements include a falsy one.
    run = Run(
        wf(
            a={"skill": "s"},
            m={
                "skill": "s",
                "map": "${steps.a.items}",
                "input": "${item}",
                "retry": {"attempts": 3, "backoff_s": 0},
            },
        )
    )
    run.succeed("a", {"items": [0, "x", {"k": 1}]})
    # When element 0's lease is lost, element 1 fails and element 2's lease is voided (a runner restart).
    run.lease_ends("m", index=0)
    run.fire_retry("m", index=0)
    retried = {c.task_id: c.item for c in run.last.commands if isinstance(c, EnqueueTask)}
    run.fail("m", index=1, retryable=True)
    run.fire_retry("m", index=1)
    retried.update({c.task_id: c.item for c in run.last.commands if isinstance(c, EnqueueTask)})
    run.lease_ends("m", "lease_voided", index=2)
    retried.update({c.task_id: c.item for c in run.last.commands if isinstance(c, EnqueueTask)})
    # Then each new try is enqueued with the same element as the first.
    assert retried == {"r/m/0": 0, "r/m/1": "x", "r/m/2": {"k": 1}}


def test_map_over_an_empty_list_succeeds_at_once_with_an_empty_list() -> None:
    run = Run(wf(m={"skill": "s", "map": "${input}"}, z={"skill": "s", "when": "length(steps.m) == `0`"}), [])
    assert KeepOutput("r/m", "m", -1, literal=True, value=[]) in run.last.commands
    assert run.step("m").status == "succeeded"
    assert run.step("m").tasks == {}
    assert run.step("z").status == "active"


@pytest.mark.parametrize("value", [{"a": 1}, "abc", 3, None])
def test_map_over_a_non_list_fails_with_bad_map(value: Any) -> None:
    run = Run(wf(m={"skill": "s", "map": "${input.xs}"}), {"xs": value})
    assert run.state.status == "failed"
    assert run.state.error is not None
    assert run.state.error["kind"] == "bad_map"
    assert run.state.error["step"] == "m"


def test_failed_map_element_fails_the_step_and_cancels_the_others() -> None:
    run = Run(wf(m={"skill": "s", "map": "${input}", "retry": {"attempts": 1}}), [1, 2, 3])
    run.succeed("m", index=0)
    run.fail("m", "boom", index=1)
    assert DropTask("r/m/2") in run.last.commands
    assert [run.task("m", i).status for i in range(3)] == ["succeeded", "failed", "cancelled"]
    assert run.state.status == "failed"
    assert run.rows == {}


def test_max_steps_bounds_the_tasks_of_a_run() -> None:
    spec = wf(a={"skill": "s"}, m={"skill": "s", "map": "${input}"})
    spec["max_steps"] = 3
    run = Run(spec, [1, 2, 3])
    assert run.state.status == "failed"
    assert run.state.error is not None
    assert run.state.error["kind"] == "max_steps"
    assert run.rows == {}
    assert run.state.task_count == 1


# -- wait and signals ------------------------------------------------------------------


def test_wait_completes_with_the_signal_payload() -> None:
    run = Run(
        wf(signals=["approve"], w={"wait": {"signal": "approve"}}, b={"skill": "s", "when": "${steps.w.ok}"})
    )
    assert run.step("w").status == "active"
    assert run.rows == {}
    run.signal("approve", {"ok": True, "by": "ann"})
    assert run.commands(KeepOutput) == [
        KeepOutput("r/w", "w", -1, literal=True, value={"ok": True, "by": "ann"})
    ]
    assert run.events(StepFinished) == [StepFinished("w", "succeeded", run.now)]
    assert run.step("b").status == "active"


def test_signal_before_the_wait_is_kept_for_it() -> None:
    run = Run(
        wf(signals=["go"], a={"skill": "s"}, w={"wait": {"signal": "go", "timeout_s": 5}, "after": ["a"]})
    )
    run.signal("go", 7)
    assert run.last.events == []
    assert run.state.signals == {"go": 7}
    run.succeed("a")
    assert run.step("w").status == "succeeded"
    assert run.step("w").partial == {-1: 7}
    assert run.commands(SetTimer) == []  # no timeout: it completed at once
    assert run.state.signals == {}
    assert run.state.status == "succeeded"


def test_unknown_signal_is_rejected() -> None:
    run = Run(wf(signals=["go"], w={"wait": {"signal": "go"}}))
    [rejected] = unchanged(run, SignalReceived("s1", "stop", None, run.at()))
    assert rejected.what == "signal stop"


# -- cancel ----------------------------------------------------------------------------


def test_cancel_run_drops_tasks_and_timers() -> None:
    spec = wf(a={"skill": "s"}, b={"skill": "s", "retry": NO_JITTER}, c={"skill": "s", "after": ["a"]})
    spec["timeout_s"] = 60
    run = Run(spec)
    run.fail("b")
    run.cancel(reason="user asked")
    error = {"kind": "cancelled", "message": "user asked"}
    assert run.last.events == [RunFinished("cancelled", run.now, error)]
    for command in (DropTask("r/a"), CancelTimer("retry:r/b:2"), CancelTimer("deadline:r")):
        assert command in run.last.commands
    assert run.finish == FinishRun("cancelled", error, run.now)
    assert run.rows == {}
    assert run.timers == {}
    assert [run.step(n).status for n in "abc"] == ["cancelled"] * 3


def test_cancel_step_drops_its_tasks_and_skips_downstream() -> None:
    run = Run(
        wf(m={"skill": "s", "map": "${input}"}, b={"skill": "s", "after": ["m"]}, c={"skill": "s"}), [1, 2]
    )
    run.cancel("m", reason="enough")
    assert run.last.events == [
        StepFinished("m", "cancelled", run.now, {"kind": "cancelled", "message": "enough"}),
        StepFinished("b", "skipped", run.now),
    ]
    assert set(run.commands(DropTask)) == {DropTask("r/m/0"), DropTask("r/m/1")}
    assert run.rows == {"r/c": 1}
    run.succeed("c")
    assert run.state.status == "succeeded"


@pytest.mark.parametrize("step", ["nope", "a"])
def test_cancel_of_an_unknown_or_finished_step_is_rejected(step: str) -> None:
    run = Run(wf(a={"skill": "s"}, b={"skill": "s"}))
    run.succeed("a")
    [rejected] = unchanged(run, CancelRequested(run.at(), step))
    assert rejected.what == f"cancel {step}"


# -- hand-offs -------------------------------------------------------------------------


def test_handoff_adds_steps_and_the_run_waits_for_them() -> None:
    run = Run(wf(a={"skill": "s"}))
    run.succeed(
        "a",
        handoff={"x": {"skill": "t"}, "y": {"skill": "u", "after": ["a", "x"], "when": "${steps.x.ok}"}},
    )
    assert run.last.events == [
        StepsAdded("r/a", ["x", "y"], 1_010),
        TaskReady("r/x", 1, 1_010),
        StepFinished("a", "succeeded", 1_010),
    ]
    assert run.state.status == "running"
    assert run.state.projection_paths("x") == frozenset({("ok",)})
    run.succeed("x", {"ok": True})
    assert run.step("y").status == "active"
    assert run.enqueued["r/y"].target == "u"
    run.succeed("y")
    assert run.state.status == "succeeded"


def test_handoff_loops_are_bounded_by_max_steps() -> None:
    spec = wf(a={"skill": "s"})
    spec["max_steps"] = 3
    run = Run(spec)
    run.succeed("a", handoff={"a1": {"skill": "s"}})
    run.succeed("a1", handoff={"a2": {"skill": "s"}})
    assert run.state.status == "running"
    run.succeed("a2", handoff={"a3": {"skill": "s"}})
    assert run.state.status == "failed"
    assert run.state.error is not None
    assert run.state.error["kind"] == "max_steps"


@pytest.mark.parametrize(
    "handoff",
    [
        {"a": {"skill": "s"}},  # clashes with an existing step
        {"x": {"skill": "s", "after": ["ghost"]}},
        {"x": {"skill": "s", "retry": {"attempts": 0}}},
        {"x": {"wait": {"signal": "undeclared"}}},
        {"bad name": {"skill": "s"}},
        {"x": {"skill": "s", "after": ["y"]}, "y": {"skill": "s", "after": ["x"]}},
        {"x": "not a step"},
    ],
)
def test_bad_handoff_fails_the_step(handoff: dict[str, Any]) -> None:
    run = Run(wf(a={"skill": "s"}, b={"skill": "s"}))
    defs = sorted(run.state.defs)
    run.succeed("a", handoff=handoff)
    rejected = run.events(Rejected)
    assert [r.what for r in rejected] == ["hand-off from r/a"]
    [finished] = run.events(StepFinished)
    assert (finished.step, finished.status) == ("a", "failed")
    assert finished.error is not None
    assert finished.error["kind"] == "bad_handoff"
    assert run.state.status == "failed"
    assert sorted(run.state.defs) == defs
    assert run.rows == {}


# -- pieces ----------------------------------------------------------------------------


def test_decide_reads_nothing_but_its_arguments() -> None:
    spec = wf(a={"skill": "s"})
    first = Run(copy.deepcopy(spec))
    second = Run(copy.deepcopy(spec))
    first.fail("a")
    second.fail("a")
    assert first.history == second.history
    assert dump(first.state) == dump(second.state)


def test_task_lookup() -> None:
    state: RunState = Run(wf(a={"skill": "s"})).state
    assert state.task("r/a") == (state.steps["a"], TaskState("r/a", -1))
    assert state.task("ra") is None


def test_retry_on_does_not_turn_a_lost_lease_into_a_failure() -> None:
    run = Run(wf(a={"skill": "s", "retry": {"retry_on": ["rate_limited"], "backoff_s": 0}}))
    run.lease_ends("a", "lease_expired")
    [scheduled] = run.events(RetryScheduled)
    assert scheduled.error["kind"] == "lease_lost"
    assert run.task("a").status == "retry_wait"


def test_retry_timer_set_for_an_earlier_lease_is_rejected() -> None:
    run = Run(wf(a={"skill": "s", "retry": {"attempts": 5, "backoff_s": 0}}))
    run.fail("a")
    stale = TimerFired("retry:r/a:2", "retry", run.at(), "r/a", 0)
    [rejected] = unchanged(run, stale)
    assert rejected.reason == "timer was set for an earlier lease"


def test_retry_after_is_capped() -> None:
    run = Run(wf(a={"skill": "s", "retry": {"attempts": 2}}))
    run.fail("a", "slow_down", retry_after_ms=10**30)
    [scheduled] = run.events(RetryScheduled)
    assert scheduled.due_ms - scheduled.at_ms == MAX_RETRY_AFTER_MS


# -- conditions on shared state --------------------------------------------------------


def _state_run() -> Run:
    return Run(wf(a={"skill": "s"}, b={"skill": "s", "after": ["a"], "when": "state.go == `true`"}))


def test_a_condition_on_state_asks_for_a_read_and_waits() -> None:
    run = _state_run()
    run.succeed("a")
    [read] = run.commands(ReadState)
    assert (read.step, read.keys) == ("b", ["go"])
    assert run.step("b").status == "checking"
    assert run.commands(EnqueueTask) == []


@pytest.mark.parametrize(("value", "status"), [(True, "active"), (False, "skipped"), (None, "skipped")])
def test_the_state_read_decides_the_condition(value: Any, status: str) -> None:
    run = _state_run()
    run.succeed("a")
    version = 0 if value is None else 3
    run.feed(StateRead("b", {"go": {"value": value, "version": version}}, run.at()))
    assert run.step("b").status == status
    assert run.step("b").state_read == {"go": value}


def test_a_state_read_nobody_waits_for_is_rejected() -> None:
    run = _state_run()
    [rejected] = unchanged(run, StateRead("b", {"go": {"value": True, "version": 1}}, run.at()))
    assert rejected.reason == "the step is not waiting for state"


def test_replay_sees_the_recorded_state() -> None:
    run = _state_run()
    run.succeed("a")
    run.feed(StateRead("b", {"go": {"value": True, "version": 2}}, run.at()))
    replayed = fold(run.history)
    assert replayed is not None
    assert dump(replayed) == dump(run.state)
