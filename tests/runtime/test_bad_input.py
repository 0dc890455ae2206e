"""Bad input gets a clear error naming what was wrong, and changes nothing.

Each case submits something wrong to a real embedded runner (or has an agent
return something wrong) and checks both the message and that nothing was
half-applied: no run row, or a run that failed at once without retries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from covey import Embedded, InputError, Registry, SpecError, agent
from covey.codec import MAX_PAYLOAD_BYTES
from covey.runtime.runner import Runner
from covey.spec.compile import MAX_SPEC_BYTES

agents = Registry()


@agent(skills=["echo"], registry=agents)
def echo(value: Any) -> Any:
    return value


@agent(skills=["not_json"], registry=agents)
def not_json(value: Any) -> Any:
    return {"when": object()}


@agent(skills=["huge"], registry=agents)
def huge(value: Any) -> Any:
    return "x" * (MAX_PAYLOAD_BYTES + 1)


@pytest.fixture
async def covey(tmp_path: Path) -> AsyncIterator[Embedded]:
    async with Embedded(tmp_path / "covey.db", agents=list(agents), workers=1) as embedded:
        yield embedded


async def _no_runs(covey: Embedded) -> None:
    assert await covey.runner.store.list_runs() == []


async def test_malformed_spec_names_step_and_field(covey: Embedded) -> None:
    bad = {"name": "w", "steps": {"a": {"skill": "echo", "retry": {"attempts": "many"}}}}
    with pytest.raises(SpecError) as caught:
        await covey.submit(bad)
    assert caught.value.step == "a"
    assert caught.value.field == "retry.attempts"
    await _no_runs(covey)


async def test_unknown_skill_is_refused(covey: Embedded) -> None:
    with pytest.raises(SpecError, match="unknown skill 'translate'") as caught:
        await covey.submit({"name": "w", "steps": {"t": {"skill": "translate"}}})
    assert (caught.value.step, caught.value.field) == ("t", "skill")
    await _no_runs(covey)


async def test_input_failing_the_workflow_schema_is_refused(covey: Embedded) -> None:
    workflow = {
        "name": "w",
        "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        "steps": {"a": {"skill": "echo", "input": "${input}"}},
    }
    with pytest.raises(InputError) as caught:
        await covey.submit(workflow, {"n": "three"})
    assert caught.value.field == "input.n"
    await _no_runs(covey)


async def test_input_over_the_size_limit_is_refused(covey: Embedded) -> None:
    with pytest.raises(InputError, match="over the limit") as caught:
        await covey.submit(
            {"name": "w", "steps": {"a": {"skill": "echo"}}}, {"blob": "x" * MAX_PAYLOAD_BYTES}
        )
    assert caught.value.field == "input"
    await _no_runs(covey)


async def test_bad_run_id_is_refused(covey: Embedded) -> None:
    with pytest.raises(InputError, match="not a valid run id"):
        await covey.submit({"name": "w", "steps": {"a": {"skill": "echo"}}}, run_id="a/b")
    await _no_runs(covey)


async def test_step_input_failing_its_schema_fails_without_retry(covey: Embedded) -> None:
    workflow = {
        "name": "w",
        "steps": {
            "a": {
                "skill": "echo",
                "input": {"n": "${input.n}"},
                "input_schema": {"properties": {"n": {"type": "integer"}}},
            }
        },
    }
    info = await covey.wait(await covey.submit(workflow, {"n": "three"}))
    assert info.status == "failed"
    assert info.error["kind"] == "input_invalid"
    assert "input.n" in info.error["message"]
    history = await covey.runner.store.load_history(info.run_id)
    assert not [e for e in history if e["type"] == "RetryScheduled"]


@pytest.mark.parametrize(("skill", "needle"), [("not_json", "not a JSON value"), ("huge", "over the limit")])
async def test_bad_agent_result_fails_the_step_without_retry(
    covey: Embedded, skill: str, needle: str
) -> None:
    info = await covey.wait(await covey.submit({"name": "w", "steps": {"a": {"skill": skill}}}))
    assert info.status == "failed"
    assert info.error["kind"] == "bad_output"
    assert needle in info.error["message"]
    history = await covey.runner.store.load_history(info.run_id)
    assert not [e for e in history if e["type"] == "RetryScheduled"]
    assert not [e for e in history if e["type"] == "TaskSucceeded"]


async def test_unknown_signal_is_refused(covey: Embedded) -> None:
    workflow = {"name": "w", "signals": ["approve"], "steps": {"w": {"wait": {"signal": "approve"}}}}
    run_id = await covey.submit(workflow)
    with pytest.raises(InputError, match="accepts no signal 'reject'"):
        await covey.signal(run_id, "reject", {})
    history = await covey.runner.store.load_history(run_id)
    assert not [e for e in history if e["type"] == "SignalReceived"]
    await covey.signal(run_id, "approve", {"by": "ann"})
    info = await covey.wait(run_id)
    assert info.output == {"w": {"by": "ann"}}


async def test_repeated_run_id_is_a_no_op(covey: Embedded) -> None:
    workflow = {"name": "w", "steps": {"a": {"skill": "echo", "input": "${input}"}}}
    first = await covey.submit(workflow, {"v": 1}, run_id="same")
    second = await covey.submit(workflow, {"v": 2}, run_id="same")
    assert first == second == "same"
    info = await covey.wait("same")
    assert info.output == {"a": {"v": 1}}
    assert len(await covey.runner.store.list_runs()) == 1


async def test_a_workflow_over_the_spec_size_limit_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    huge = {"name": "huge", "description": "x" * MAX_SPEC_BYTES, "steps": {"a": {"skill": "echo"}}}
    async with Runner(tmp_path / "covey.db", serve_socket=False) as runner:
        with pytest.raises(SpecError, match="over the limit"):
            await runner.submit(huge, run_id="r1")
        assert await runner.store.list_runs() == []
