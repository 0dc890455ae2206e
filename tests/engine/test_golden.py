"""Golden histories: recorded runs that every later covey must replay to the same end.

Each ``histories/<name>.json`` is a run's whole history (input events and the
derived events deciding them gave) as ``event_to_json`` wrote it. The test folds
it with ``check=True``, so a change to ``decide`` that would give an old history
other derived events, or refuse its encoding, fails here (DESIGN: recorded
histories from each release are replayed in CI).

The files are written by driving ``decide`` through the scenarios below, and
then they are a record: a file that stops replaying is a compatibility break
to fix in the engine (or to meet with an upgrade of old events), not a file to
re-record. To record a new scenario, add it to ``SCENARIOS`` and run::

    COVEY_REGEN_GOLDEN=1 .venv/bin/pytest tests/engine/test_golden.py

which rewrites every file from today's engine; commit only the files you meant
to add or change.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import orjson

from covey.engine.events import Event, Rejected, event_from_json, event_to_json
from covey.engine.replay import fold
from covey.engine.state import RunState
from tests.engine.drive import Run, wf

HERE = Path(__file__).parent / "histories"
REGEN = os.environ.get("COVEY_REGEN_GOLDEN") == "1"


def linear() -> Run:
    """Three steps in a row, data flowing along, one condition true; a late duplicate report."""
    run = Run(
        wf(
            fetch={"skill": "fetch", "input": {"url": "${input.url}"}},
            summarize={"skill": "llm", "input": {"text": "${steps.fetch.body}"}, "timeout_s": 30},
            publish={"skill": "post", "input": "${steps.summarize}", "when": "${steps.summarize.ok}"},
        ),
        {"url": "https://example.com"},
        run_id="golden-linear",
    )
    run.succeed("fetch", {"body": "hello"})
    run.succeed("summarize", {"ok": True, "summary": "hi"})
    run.succeed("summarize", {"ok": True}, lease=1)  # repeated: rejected
    run.succeed("publish", {"id": 7})
    return run


def map_join_retry() -> Run:
    """A map over an upstream list, one element retried after a failure, then an all join and an any join."""
    run = Run(
        wf(
            split={"skill": "split"},
            each={
                "skill": "work",
                "map": "${steps.split.parts}",
                "input": {"part": "${item}", "i": "${index}"},
                "retry": {"attempts": 3, "backoff_s": 1, "jitter": 0.2},
            },
            side={"skill": "side", "when": "${input.side}"},
            merge={"skill": "merge", "input": "${steps.each}", "after": ["side"], "join": "any"},
            report={"skill": "report", "after": ["each", "merge"]},
        ),
        {"side": False},
        run_id="golden-map",
    )
    run.succeed("split", {"parts": ["a", "b", "c"]})
    run.succeed("each", {"n": 1}, index=2)
    run.fail("each", "rate_limited", index=1)
    run.succeed("each", {"n": 0}, index=0)
    run.fail("each", "rate_limited", index=1, lease=1)  # stale: rejected
    run.fire_retry("each", 1)
    run.succeed("each", {"n": 2}, index=1)
    run.succeed("merge", {"total": 3})
    run.succeed("report")
    return run


def wait_signal() -> Run:
    """A human approval that arrives before its wait step starts; an undeclared signal is refused."""
    run = Run(
        wf(
            signals=["approve"],
            draft={"skill": "write"},
            approval={"wait": {"signal": "approve", "timeout_s": 3600}, "after": ["draft"]},
            send={"skill": "send", "when": "${steps.approval.ok}", "input": "${steps.draft}"},
            archive={"skill": "archive", "when": "!(steps.approval.ok)", "after": ["approval"]},
        ),
        run_id="golden-wait",
    )
    run.signal("nope", {"ok": True})  # undeclared: rejected
    run.signal("approve", {"ok": True, "by": "ann"}, signal_id="approval-1")  # kept for the wait
    run.succeed("draft", {"text": "dear"})
    run.succeed("send")
    return run


def handoff() -> Run:
    """An agent hands off to two new steps; one loses a lease, one's lease is voided by a restart."""
    spec = wf(triage={"skill": "triage"})
    spec["max_steps"] = 10
    run = Run(spec, {"ticket": 42}, run_id="golden-handoff")
    run.succeed(
        "triage",
        {"intent": "refund"},
        handoff={
            "refund": {"skill": "refund", "input": {"ticket": "${input.ticket}"}},
            "notify": {"skill": "email", "after": ["refund"], "retry": {"backoff_s": 0.5}},
        },
    )
    run.lease_ends("refund", "lease_voided")
    run.succeed("refund", {"amount": 10})
    run.lease_ends("notify", "lease_expired")
    run.fire_retry("notify")
    run.succeed("notify")
    return run


SCENARIOS: dict[str, Callable[[], Run]] = {
    "linear": linear,
    "map_join_retry": map_join_retry,
    "wait_signal": wait_signal,
    "handoff": handoff,
}


def load(name: str) -> list[Event]:
    path = HERE / f"{name}.json"
    if REGEN:
        body = [event_to_json(event) for event in SCENARIOS[name]().history]
        path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
    assert path.exists(), f"{path} is missing; record it with COVEY_REGEN_GOLDEN=1"
    return [event_from_json(body) for body in orjson.loads(path.read_bytes())]


def replay(name: str) -> RunState:
    history = load(name)
    state = fold(history, check=True)
    assert state is not None
    assert state.seq == len(history)
    return state


def test_linear() -> None:
    state = replay("linear")
    assert state.status == "succeeded"
    assert [step.status for step in state.steps.values()] == ["succeeded"] * 3
    assert sum(isinstance(e, Rejected) for e in load("linear")) == 1


def test_map_join_retry() -> None:
    state = replay("map_join_retry")
    assert state.status == "succeeded"
    each = state.steps["each"]
    assert [each.tasks[i].try_no for i in range(3)] == [1, 2, 1]
    assert each.tasks[1].lease_floor == 1
    assert state.steps["side"].status == "skipped"
    assert state.steps["merge"].status == "succeeded"


def test_wait_signal() -> None:
    state = replay("wait_signal")
    assert state.status == "succeeded"
    assert state.steps["approval"].partial == {-1: {"ok": True, "by": "ann"}}
    assert (state.steps["send"].status, state.steps["archive"].status) == ("succeeded", "skipped")


def test_handoff() -> None:
    state = replay("handoff")
    assert state.status == "succeeded"
    assert list(state.steps) == ["triage", "refund", "notify"]
    assert state.steps["refund"].tasks[-1].lease_floor == 1
    assert state.steps["notify"].tasks[-1].lost_leases == 1
