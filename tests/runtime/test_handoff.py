"""Hand-offs through a real runner: added steps read the parent's output, loops end at max_steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from covey import Embedded, Handoff, Registry, agent

agents = Registry()


@agent(skills=["plan"], registry=agents)
def plan(value: Any) -> Handoff:
    """Plan work on the fly: a fan-out over the parts, and a check that only runs when asked."""
    return Handoff(
        output={"parts": value["parts"], "check": value["check"]},
        steps={
            "work": {"skill": "double", "map": "${steps.planner.parts}", "input": "${item}"},
            "check": {"skill": "double", "when": "steps.planner.check", "input": 100, "after": ["planner"]},
            "total": {"skill": "total", "input": {"parts": "${steps.work}"}, "after": ["work"]},
        },
    )


@agent(skills=["double"], registry=agents)
def double(value: int) -> int:
    return value * 2


@agent(skills=["total"], registry=agents)
def total(value: dict[str, Any]) -> int:
    return sum(value["parts"])


@agent(skills=["again"], registry=agents)
def again(value: Any, ctx: Any) -> Handoff:
    """Hand off to itself forever: only max_steps ends it."""
    n = int(ctx.step.removeprefix("loop") or 0) + 1
    return Handoff(output=n, steps={f"loop{n}": {"skill": "again", "after": [ctx.step]}})


async def test_added_steps_read_the_parent_output_in_map_and_when(tmp_path: Path) -> None:
    workflow = {"name": "plan", "steps": {"planner": {"skill": "plan", "input": "${input}"}}}
    async with Embedded(tmp_path / "covey.db", agents=list(agents)) as covey:
        skipped = await covey.wait(await covey.submit(workflow, {"parts": [1, 2, 3], "check": False}))
        checked = await covey.wait(await covey.submit(workflow, {"parts": [5], "check": True}))

    assert skipped.status == "succeeded"
    assert skipped.output == {"check": None, "total": 12}
    assert checked.output == {"check": 200, "total": 10}


async def test_a_hand_off_loop_ends_at_max_steps(tmp_path: Path) -> None:
    workflow = {"name": "loop", "max_steps": 5, "steps": {"loop": {"skill": "again"}}}
    async with Embedded(tmp_path / "covey.db", agents=list(agents)) as covey:
        info = await covey.wait(await covey.submit(workflow))
    assert info.status == "failed"
    assert info.error["kind"] == "max_steps"
