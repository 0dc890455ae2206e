"""The Python builder emits exactly the spec a hand-written file holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from covey.errors import SpecError
from covey.spec.builder import Cond, Ref, StepRef, Workflow
from covey.spec.compile import compile_workflow
from covey.spec.load import load_spec
from covey.spec.model import RetryPolicy

HAND_WRITTEN = """\
name: support
signals: [approve]
max_steps: 100
timeout_s: 60
input_schema:
  type: object
  required: [text, tickets]
steps:
  triage:
    skill: classify
    input: {text: "${input.text}"}
  per_ticket:
    skill: score
    map: "${input.tickets}"
    input: {t: "${item}", i: "${index}"}
  answer:
    skill: respond
    input:
      intent: "${steps.triage.intent}"
      all: "${steps.per_ticket}"
      note: "intent was ${steps.triage.intent}"
    when: "${steps.triage.confidence > `0.5`}"
    retry: {attempts: 5}
    after: [triage]
    priority: 10
    labels: {gpu: "true"}
    timeout_s: 20
    join: any
    max_lost_leases: 2
    input_schema: {type: object}
  review:
    agent: reviewer
    input: "${steps.answer}"
  approval:
    wait: {signal: approve, timeout_s: 30}
    after: [review]
output:
  answer: "${steps.answer}"
"""


def build() -> Workflow:
    wf = Workflow(
        "support",
        signals=["approve"],
        max_steps=100,
        timeout_s=60,
        input_schema={"type": "object", "required": ["text", "tickets"]},
    )
    triage = wf.step("triage", skill="classify", input={"text": wf.input["text"]})
    tickets = wf.step(
        "per_ticket", skill="score", map=wf.input["tickets"], input={"t": wf.item, "i": wf.index}
    )
    answer = wf.step(
        "answer",
        skill="respond",
        input={"intent": triage["intent"], "all": tickets, "note": f"intent was {triage['intent']}"},
        when=triage["confidence"].gt(0.5),
        retry=RetryPolicy(attempts=5),
        after=[triage],
        priority=10,
        labels={"gpu": "true"},
        timeout_s=20,
        join="any",
        max_lost_leases=2,
        input_schema={"type": "object"},
    )
    review = wf.step("review", agent="reviewer", input=answer)
    wf.wait("approval", signal="approve", timeout_s=30, after=[review])
    wf.output({"answer": answer})
    return wf


def test_builder_dict_equals_the_hand_written_yaml() -> None:
    assert build().to_dict() == yaml.safe_load(HAND_WRITTEN)


def test_builder_spec_equals_the_loaded_spec() -> None:
    assert build().spec() == load_spec(HAND_WRITTEN)


def test_builder_compiles_to_the_same_hash() -> None:
    assert build().compile().hash == compile_workflow(load_spec(HAND_WRITTEN)).hash


def test_to_dict_is_json_and_a_copy() -> None:
    wf = build()
    data = wf.to_dict()
    json.dumps(data)
    data["steps"]["triage"]["skill"] = "changed"
    assert wf.to_dict()["steps"]["triage"]["skill"] == "classify"


def test_only_set_fields_are_emitted() -> None:
    wf = Workflow("w")
    wf.step("a", skill="s")
    assert wf.to_dict() == {"name": "w", "steps": {"a": {"skill": "s"}}}


@pytest.mark.parametrize(
    ("ref", "text"),
    [
        (StepRef("triage"), "${steps.triage}"),
        (StepRef("triage")["intent"], "${steps.triage.intent}"),
        (StepRef("triage")["a"]["b"], "${steps.triage.a.b}"),
        (StepRef("triage")["items"][0], "${steps.triage.items[0]}"),
        (StepRef("triage")["items"][-1]["x"], "${steps.triage.items[-1].x}"),
        (StepRef("triage")["my-key"], '${steps.triage."my-key"}'),
        (StepRef("triage")['say "hi"'], '${steps.triage."say \\"hi\\""}'),
        (Ref("input")["1st"], '${input."1st"}'),
    ],
)
def test_refs_render_to_placeholders(ref: Ref, text: str) -> None:
    assert str(ref) == text


def test_quoted_keys_resolve_when_evaluated() -> None:
    wf = Workflow("w")
    a = wf.step("a", skill="s")
    wf.step("b", skill="s", input={"x": a["my-key"]['say "hi"'], "y": a["l"][1]})
    template = wf.compile().steps["b"].input
    output = {"my-key": {'say "hi"': 42}, "l": [0, 1]}
    assert template.render({"steps": {"a": output}}) == {"x": 42, "y": 1}


def test_refs_render_anywhere_inside_input() -> None:
    wf = Workflow("w")
    a = wf.step("a", skill="s")
    b = wf.step("b", skill="s", input={"deep": [{"x": a["x"]}, (a, 3)], "text": f"got {a['x']}!"})
    assert wf.to_dict()["steps"]["b"]["input"] == {
        "deep": [{"x": "${steps.a.x}"}, ["${steps.a}", 3]],
        "text": "got ${steps.a.x}!",
    }
    assert b.name == "b"


@pytest.mark.parametrize(
    ("cond", "text"),
    [
        (StepRef("a")["x"].eq("high"), '${steps.a.x == `"high"`}'),
        (StepRef("a")["x"].ne(None), "${steps.a.x != `null`}"),
        (StepRef("a")["x"].gt(0.5), "${steps.a.x > `0.5`}"),
        (StepRef("a")["x"].ge(1), "${steps.a.x >= `1`}"),
        (StepRef("a")["x"].lt(2), "${steps.a.x < `2`}"),
        (StepRef("a")["x"].le(3), "${steps.a.x <= `3`}"),
        (StepRef("a")["x"].eq({"k": [1, True]}), '${steps.a.x == `{"k":[1,true]}`}'),
        (StepRef("a")["x"].eq(Ref("input")["y"]), "${steps.a.x == input.y}"),
        (StepRef("a")["ok"].truthy(), "${steps.a.ok}"),
        (~StepRef("a")["ok"], "${!(steps.a.ok)}"),
        (StepRef("a")["x"].gt(1) & StepRef("b")["y"].lt(2), "${steps.a.x > `1` && steps.b.y < `2`}"),
        (
            (StepRef("a")["x"].gt(1) | StepRef("a")["y"]) & StepRef("b")["z"],
            "${(steps.a.x > `1` || steps.a.y) && steps.b.z}",
        ),
        (StepRef("a")["p"] | StepRef("a")["q"] & StepRef("a")["r"], "${steps.a.p || steps.a.q && steps.a.r}"),
        (~(StepRef("a")["x"].eq(1) & StepRef("a")["y"]), "${!(steps.a.x == `1` && steps.a.y)}"),
        (StepRef("a")["s"].eq("it's `odd`"), '${steps.a.s == `"it\'s \\`odd\\`"`}'),
    ],
)
def test_conditions_render(cond: Cond, text: str) -> None:
    assert str(cond) == text


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ({"x": 0.9, "ok": False, "kind": "a`}b"}, True),
        ({"x": 0.9, "ok": True, "kind": "other"}, False),
        ({"x": 0.1, "ok": False, "kind": "other"}, False),
        ({"x": 0.1, "ok": False, "kind": "a`}b"}, True),
    ],
)
def test_conditions_evaluate_as_written(output: dict[str, object], expected: bool) -> None:
    wf = Workflow("w")
    a = wf.step("a", skill="s")
    wf.step("b", skill="s", when=a["x"].gt(0.5) & ~a["ok"] | a["kind"].eq("a`}b"))
    when = wf.compile().steps["b"].when
    assert when is not None
    assert bool(when.evaluate({"steps": {"a": output}})) is expected


def test_when_accepts_a_ref_or_a_raw_string() -> None:
    wf = Workflow("w")
    a = wf.step("a", skill="s")
    wf.step("b", skill="s", when=a["ok"])
    wf.step("c", skill="s", when="${steps.a.n == `2`}")
    steps = wf.to_dict()["steps"]
    assert (steps["b"]["when"], steps["c"]["when"]) == ("${steps.a.ok}", "${steps.a.n == `2`}")
    assert wf.compile().steps["c"].deps == ("a",)


def test_after_accepts_handles_and_names() -> None:
    wf = Workflow("w")
    a = wf.step("a", skill="s")
    wf.step("b", skill="s")
    wf.step("c", skill="s", after=[a, "b", a])
    wf.step("d", skill="s", after=a)
    steps = wf.to_dict()["steps"]
    assert (steps["c"]["after"], steps["d"]["after"]) == (["a", "b"], ["a"])


def test_retry_as_dict_or_policy() -> None:
    wf = Workflow("w")
    wf.step("a", skill="s", retry={"attempts": 2, "backoff_s": 0.1})
    wf.step("b", skill="s", retry=RetryPolicy(attempts=2, backoff_s=0.1))
    steps = wf.spec().steps
    assert steps["a"].retry == steps["b"].retry == RetryPolicy(attempts=2, backoff_s=0.1)


def test_duplicate_step_name_is_refused() -> None:
    wf = Workflow("w", signals=["go"])
    wf.step("a", skill="s")
    with pytest.raises(SpecError, match="duplicate") as info:
        wf.step("a", agent="x")
    assert (info.value.step, info.value.field) == ("a", "name")
    with pytest.raises(SpecError, match="duplicate"):
        wf.wait("a", signal="go")


@pytest.mark.parametrize("kwargs", [{}, {"skill": "s", "agent": "x"}])
def test_a_step_needs_skill_or_agent(kwargs: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match="exactly one"):
        Workflow("w").step("a", **kwargs)


def test_invalid_field_is_refused_where_the_step_is_added() -> None:
    wf = Workflow("w")
    with pytest.raises(SpecError) as info:
        wf.step("a", skill="s", retry={"attempts": 0})
    assert (info.value.step, info.value.field) == ("a", "retry.attempts")
    assert "a" not in wf.to_dict()["steps"]


def test_bad_step_name_and_unknown_signal_are_refused() -> None:
    wf = Workflow("w", signals=["go"])
    with pytest.raises(SpecError, match="step names must match"):
        wf.step("my step", skill="s")
    with pytest.raises(SpecError, match="unknown signal 'stop'") as info:
        wf.wait("w", signal="stop")
    assert info.value.field == "wait.signal"


def test_non_json_input_is_refused_naming_the_path() -> None:
    with pytest.raises(SpecError, match="set is not JSON") as info:
        Workflow("w").step("a", skill="s", input={"x": [1, {2}]})
    assert (info.value.step, info.value.field) == ("a", "input.x[1]")
    with pytest.raises(SpecError, match="not a JSON number"):
        Workflow("w").step("a", skill="s", input={"x": float("nan")})


def test_refs_refuse_python_truth_and_iteration() -> None:
    ref = StepRef("a")["x"]
    with pytest.raises(TypeError, match="truth value"):
        bool(ref)
    with pytest.raises(TypeError, match="truth value"):
        bool(ref.gt(1))
    with pytest.raises(TypeError, match="iterated"):
        list(ref)
    with pytest.raises(TypeError, match="indexed"):
        ref[True]


def test_graph_errors_surface_on_compile() -> None:
    wf = Workflow("w")
    wf.step("a", skill="s", after=["ghost"])
    wf.spec()
    with pytest.raises(SpecError, match="unknown step 'ghost'"):
        wf.compile()


def test_empty_workflow_is_refused() -> None:
    with pytest.raises(SpecError) as info:
        Workflow("w").spec()
    assert info.value.field == "steps"


def _block_after(text: str, marker: str, lang: str) -> str:
    start = text.index(f"```{lang}\n", text.index(marker)) + len(lang) + 4
    return text[start : text.index("```", start)]


def test_docs_full_example_builder_equals_its_yaml() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "workflows.md").read_text()
    written = _block_after(docs, "## A full example", "yaml")
    code = _block_after(docs, "The same workflow in the builder:", "python")
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/workflows.md", "exec"), namespace)
    wf = namespace["wf"]
    assert wf.to_dict() == yaml.safe_load(written)
    assert namespace["spec"] == load_spec(written)
    assert namespace["compiled"].hash == compile_workflow(load_spec(written)).hash
