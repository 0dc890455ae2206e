"""Static checks and compilation: graph, references, signals, schemas, hash, projections."""

from __future__ import annotations

from typing import Any

import pytest

from covey.errors import SpecError
from covey.spec.compile import MAX_SPEC_BYTES, check_targets, compile_steps, compile_workflow
from covey.spec.model import StepSpec, WorkflowSpec


def spec(**steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": "w", "signals": ["go"], "steps": steps}


def refused(data: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as info:
        compile_workflow(data)
    return info.value


def test_deps_come_from_after_input_when_and_map_in_order() -> None:
    compiled = compile_workflow(
        spec(
            a={"skill": "s"},
            b={"skill": "s"},
            c={"skill": "s", "map": "${steps.b.list}"},
            d={
                "skill": "s",
                "after": ["c"],
                "input": {"x": "${steps.a.x}"},
                "when": "${steps.b.ok}",
            },
        )
    )
    assert compiled.steps["d"].deps == ("c", "a", "b")
    assert compiled.steps["c"].deps == ("b",)
    assert compiled.downstream == {"a": ("d",), "b": ("c", "d"), "c": ("d",), "d": ()}


def test_cycle_is_refused_naming_the_steps_on_it() -> None:
    error = refused(
        spec(
            a={"skill": "s", "input": "${steps.c}"},
            b={"skill": "s", "after": ["a"]},
            c={"skill": "s", "when": "${steps.b.ok}"},
        )
    )
    assert "dependency cycle: a -> c -> b -> a" in str(error)


def test_self_reference_is_refused() -> None:
    error = refused(spec(a={"skill": "s", "after": ["a"]}))
    assert (error.step, error.field) == ("a", "after")
    assert "itself" in error.reason


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"skill": "s", "after": ["ghost"]}, "after"),
        ({"skill": "s", "input": {"x": "${steps.ghost.x}"}}, "input"),
        ({"skill": "s", "when": "${steps.ghost.ok}"}, "when"),
        ({"skill": "s", "map": "${steps.ghost.list}"}, "map"),
    ],
)
def test_unknown_step_reference_names_the_field(step: dict[str, Any], field: str) -> None:
    error = refused(spec(a={"skill": "s"}, b=step))
    assert (error.step, error.field) == ("b", field)
    assert "'ghost'" in error.reason


def test_output_referring_to_unknown_step_is_refused() -> None:
    error = refused({**spec(a={"skill": "s"}), "output": {"x": "${steps.ghost}"}})
    assert (error.step, error.field) == (None, "output")


def test_unknown_signal_is_refused() -> None:
    error = refused(spec(a={"wait": {"signal": "stop"}}))
    assert (error.step, error.field) == ("a", "wait.signal")
    assert "'stop'" in error.reason


def test_declared_signal_is_accepted() -> None:
    assert compile_workflow(spec(a={"wait": {"signal": "go", "timeout_s": 5}})).steps["a"].target == ""


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"skill": "s", "input": {"x": "${item.id}"}}, "input"),
        ({"skill": "s", "when": "${index > `0`}"}, "when"),
        ({"skill": "s", "map": "${item}"}, "map"),
        ({"skill": "s", "map": "${input.list}", "when": "${item.ok}"}, "when"),
        ({"skill": "s", "map": "${input.list}", "input": {"x": "${input.x}"}, "when": "${steps.z}"}, None),
    ],
)
def test_item_and_index_only_inside_a_map_steps_input(step: dict[str, Any], field: str | None) -> None:
    data = spec(z={"skill": "s"}, a=step)
    if field is None:
        compile_workflow(data)
        return
    error = refused(data)
    assert (error.step, error.field) == ("a", field)
    assert "item/index" in error.reason


def test_item_is_allowed_in_a_map_step() -> None:
    compiled = compile_workflow(
        spec(a={"skill": "s", "map": "${input.l}", "input": {"t": "${item}", "i": "${index}"}})
    )
    assert compiled.steps["a"].map is not None
    assert compiled.steps["a"].input.render({"item": "x", "index": 3}) == {"t": "x", "i": 3}


def test_item_as_a_key_name_is_not_the_map_item() -> None:
    compile_workflow(spec(a={"skill": "s", "input": {"x": "${input.item}", "y": '${input."index"}'}}))


def test_bad_input_schema_is_refused() -> None:
    error = refused(spec(a={"skill": "s", "input_schema": {"type": "nonsense"}}))
    assert (error.step, error.field) == ("a", "input_schema")


@pytest.mark.parametrize(
    "step", [{"skill": "s", "agent": "x"}, {"input": {}}, {"skill": "s", "wait": {"signal": "go"}}]
)
def test_a_step_needs_exactly_one_target(step: dict[str, Any]) -> None:
    error = refused(spec(a=step))
    assert (error.step, error.field) == ("a", "skill")


def test_bad_step_name_is_refused() -> None:
    error = refused(spec(**{"my-step": {"skill": "s"}}))
    assert (error.step, error.field) == ("my-step", "name")


def test_bad_expression_names_the_input_path() -> None:
    error = refused(spec(a={"skill": "s", "input": {"q": ["ok", "${input.x ==}"]}}))
    assert (error.step, error.field) == ("a", "input.q[1]")


def test_check_targets_refuses_unknown_skill_and_agent() -> None:
    compiled = compile_workflow(spec(a={"skill": "classify"}, b={"agent": "writer"}))
    check_targets(compiled, skills=frozenset({"classify"}), agents=frozenset({"writer"}))
    with pytest.raises(SpecError, match="unknown skill 'classify'") as info:
        check_targets(compiled, skills=frozenset({"other"}), agents=frozenset({"writer"}))
    assert (info.value.step, info.value.field) == ("a", "skill")
    with pytest.raises(SpecError, match="unknown agent 'writer'") as info:
        check_targets(compiled, skills=frozenset({"classify"}), agents=frozenset())
    assert (info.value.step, info.value.field) == ("b", "agent")


def test_target_of_agent_step() -> None:
    compiled = compile_workflow(spec(a={"skill": "classify"}, b={"agent": "writer"}))
    assert (compiled.steps["a"].target, compiled.steps["b"].target) == ("classify", "agent:writer")


def test_hash_is_stable_across_key_order_and_defaults() -> None:
    one = {"name": "w", "steps": {"a": {"skill": "s", "input": {"x": 1, "y": 2}, "priority": 0}}}
    two = {"steps": {"a": {"input": {"y": 2, "x": 1}, "skill": "s"}}, "name": "w", "max_steps": 10_000}
    assert compile_workflow(one).hash == compile_workflow(two).hash


def test_hash_changes_with_content() -> None:
    one = {"name": "w", "steps": {"a": {"skill": "s", "input": {"x": 1}}}}
    two = {"name": "w", "steps": {"a": {"skill": "s", "input": {"x": 2}}}}
    assert compile_workflow(one).hash != compile_workflow(two).hash


def test_projections_hold_the_paths_conditions_and_map_sources_read() -> None:
    compiled = compile_workflow(
        spec(
            a={"skill": "s"},
            b={
                "skill": "s",
                "when": "${steps.a.score > `0.5` && steps.a.meta.ok}",
                "input": "${steps.a.big}",
            },
            c={"skill": "s", "map": "${steps.a.items}"},
            d={"skill": "s", "when": "${steps.b}"},
        )
    )
    assert compiled.projections == {"a": {("score",), ("meta", "ok"), ("items",)}, "b": {()}}


def test_cycle_closed_by_an_input_reference_names_that_field() -> None:
    error = refused(spec(a={"skill": "s", "after": ["b"]}, b={"skill": "s", "input": {"x": "${steps.a.x}"}}))
    assert (error.step, error.field) == ("b", "input")


def test_long_chains_compile_without_recursion_limits() -> None:
    n = 3000
    steps = {f"s{i}": {"skill": "x", **({"after": [f"s{i + 1}"]} if i < n - 1 else {})} for i in range(n)}
    assert len(compile_workflow({"name": "w", "steps": steps}).steps) == n


def test_compile_steps_refuses_a_cycle_among_added_steps() -> None:
    specs = {"x": StepSpec(skill="s", after=["y", "old"]), "y": StepSpec(skill="s", input="${steps.x}")}
    with pytest.raises(SpecError, match="dependency cycle: x -> y -> x"):
        compile_steps(specs, known=frozenset({"x", "y", "old"}), signals=frozenset())
    specs = {"x": StepSpec(skill="s", after=["y", "old"]), "y": StepSpec(skill="s", after=["old"])}
    assert list(compile_steps(specs, known=frozenset({"x", "y", "old"}), signals=frozenset())) == ["x", "y"]


def test_a_spec_over_the_size_limit_is_refused_saying_so() -> None:
    huge = {"name": "huge", "description": "x" * MAX_SPEC_BYTES, "steps": {"a": {"skill": "s"}}}

    with pytest.raises(SpecError, match=r"over the limit of 4,194,304"):
        compile_workflow(huge)
    with pytest.raises(SpecError, match=r"over the limit"):
        compile_workflow(WorkflowSpec.model_validate(huge))


def test_a_spec_just_under_the_limit_compiles() -> None:
    spec = {"name": "big", "description": "", "steps": {"a": {"skill": "s"}}}
    spec["description"] = "x" * (MAX_SPEC_BYTES - len(str(spec).encode()) - 100)

    assert compile_workflow(spec).spec.name == "big"
