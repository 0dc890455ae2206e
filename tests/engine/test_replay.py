"""Event encoding and replay: fold(history) re-decides inputs and refuses a history it would not write."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from covey.engine.events import (
    EVENT_SCHEMA_VERSION,
    INPUT_EVENTS,
    Rejected,
    RetryScheduled,
    StepFinished,
    TaskReady,
    encode_event,
    event_from_json,
    event_to_json,
)
from covey.engine.replay import ReplayMismatch, fold
from covey.errors import InputError
from tests.engine.drive import Run, dump, wf


def sample() -> Run:
    run = Run(wf(a={"skill": "s", "retry": {"jitter": 0.5}}, b={"skill": "s", "after": ["a"]}))
    run.fail("a", "boom")
    run.fire_retry("a")
    run.succeed("a", {"x": 1})
    run.succeed("a", lease=1)  # rejected
    return run


def test_encoded_text_is_the_json_object() -> None:
    for event in sample().history:
        assert orjson.loads(encode_event(event)) == event_to_json(event)


def test_every_event_round_trips_through_json() -> None:
    history = sample().history
    kinds = {type(event).__name__ for event in history}
    assert {"RunSubmitted", "TaskFailed", "RetryScheduled", "TimerFired", "Rejected"} <= kinds
    for event in history:
        body = event_to_json(event)
        assert body["v"] == EVENT_SCHEMA_VERSION
        assert body["type"] == type(event).__name__
        assert event_from_json(body) == event
    assert {
        "RunSubmitted",
        "TaskSucceeded",
        "TaskFailed",
        "TimerFired",
        "SignalReceived",
        "CancelRequested",
        "StateRead",
    } == INPUT_EVENTS


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"type": "Nope"}, "unknown event type"),
        ({"at_ms": 1}, "unknown event type"),
        (
            {"type": "TaskReady", "v": EVENT_SCHEMA_VERSION + 1, "task_id": "r/a", "try_no": 1, "at_ms": 1},
            "newer",
        ),
        ({"type": "TaskReady", "task_id": "r/a"}, "bad TaskReady event"),
        ({"type": "TaskReady", "task_id": "r/a", "try_no": 1, "at_ms": 1, "extra": 1}, "bad TaskReady event"),
    ],
)
def test_a_body_that_is_no_event_is_refused(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        event_from_json(body)


def test_fold_rebuilds_the_live_state() -> None:
    run = sample()
    state = fold(run.history)
    assert state is not None
    assert dump(state) == dump(run.state)
    assert fold([]) is None


@pytest.mark.parametrize("change", ["alter", "drop", "add", "trailing"])
def test_fold_refuses_a_history_other_than_decide_writes(change: str) -> None:
    history = sample().history
    at = next(i for i, event in enumerate(history) if isinstance(event, RetryScheduled))
    retry = history[at]
    assert isinstance(retry, RetryScheduled)
    if change == "alter":
        history[at] = replace(retry, due_ms=retry.due_ms + 1)
    elif change == "drop":
        del history[at]
    elif change == "add":
        history.insert(at, TaskReady("r/b", 1, retry.at_ms))
    else:
        history.append(StepFinished("b", "succeeded", 99_999))
    with pytest.raises(ReplayMismatch):
        fold(history, check=True)
    fold(history, check=False)  # without the check, derived events are only skipped


def test_fold_without_derived_events_gives_the_same_state() -> None:
    run = sample()
    inputs = [event for event in run.history if event.is_input]
    state = fold(inputs, check=False)
    assert state is not None
    assert dump(state, seq=False) == dump(run.state, seq=False)
    assert any(isinstance(event, Rejected) for event in run.history)
