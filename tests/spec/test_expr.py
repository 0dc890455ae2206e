"""``${...}`` placeholders: parsing, what they read, and rendering on a scope."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jmespath.visitor import TreeInterpreter

from covey.errors import SpecError
from covey.spec.expr import compile_expr, compile_template, truthy

SCOPE = {
    "input": {"name": "Ann", "age": 30, "tags": ["a", "b"]},
    "steps": {"triage": {"intent": "refund", "score": 0.8, "meta": {"k": 1}}},
    "item": {"id": 7},
    "index": 2,
}


def test_whole_placeholder_takes_the_value_of_any_json_type() -> None:
    template = compile_template(
        {"n": "${input.age}", "tags": "${input.tags}", "meta": "${steps.triage.meta}"}
    )
    assert template.render(SCOPE) == {"n": 30, "tags": ["a", "b"], "meta": {"k": 1}}


def test_placeholders_inside_text_are_interpolated() -> None:
    template = compile_template("Hi ${input.name}, ${input.age}: ${input.tags} ${input.missing}!")
    assert template.render(SCOPE) == 'Hi Ann, 30: ["a","b"] !'


def test_placeholders_in_nested_lists_and_objects() -> None:
    template = compile_template({"a": [{"b": "${item.id}"}, "${index}", 5, None]})
    assert template.render(SCOPE) == {"a": [{"b": 7}, 2, 5, None]}


def test_double_dollar_escapes_a_literal_placeholder() -> None:
    template = compile_template({"a": "cost $${x}", "b": "${input.name} $${y}"})
    assert template.render(SCOPE) == {"a": "cost ${x}", "b": "Ann ${y}"}
    assert template.steps == frozenset()


def test_a_template_of_only_escapes_is_not_literal() -> None:
    template = compile_template({"a": "cost $${x}"})
    assert not template.is_literal
    assert template.render({}) == {"a": "cost ${x}"}


def test_plain_json_is_literal_and_renders_as_is() -> None:
    source = {"a": [1, "two", {"three": None}]}
    template = compile_template(source)
    assert template.is_literal
    assert template.render({}) == source


def test_paths_and_steps_found() -> None:
    expr = compile_expr("${steps.triage.intent == 'refund' && steps.check.meta.ok || input.x}")
    assert expr.steps == {"triage", "check"}
    assert expr.paths == {"triage": {("intent",)}, "check": {("meta", "ok")}}


def test_path_stops_at_an_index_and_whole_output_is_empty_path() -> None:
    assert compile_expr("steps.a.items[0].x").paths == {"a": {()}}
    assert compile_expr("${steps.a}").paths == {"a": {()}}
    assert compile_expr('steps.a."my-key".b').paths == {"a": {("my-key", "b")}}


def test_template_steps_collects_every_placeholder() -> None:
    template = compile_template({"x": "${steps.a.x}", "y": ["${steps.b}"], "z": "n=${steps.c.n}"})
    assert template.steps == {"a", "b", "c"}


def test_bare_expression_and_placeholder_compile_alike() -> None:
    assert compile_expr("steps.a.score > `0.5`").text == compile_expr("${steps.a.score > `0.5`}").text


@pytest.mark.parametrize(
    "text",
    ["${triage.intent}", "${foo.x == `1`}", "${length(stpes.a) > `0`}", "${input.a || nope.b}", "nope"],
)
def test_unknown_root_is_refused_wherever_it_is(text: str) -> None:
    with pytest.raises(SpecError, match="unknown name") as info:
        compile_expr(text, step="s", field_name="when")
    assert (info.value.step, info.value.field) == ("s", "when")


def test_names_inside_filters_and_after_dots_are_not_roots() -> None:
    expr = compile_expr("input.list[?kind == 'x'].value | [0]")
    assert expr.roots == {"input"}


@pytest.mark.parametrize("text", ["${steps}", "${steps.*}", "${steps == `1`}"])
def test_steps_must_name_a_step(text: str) -> None:
    with pytest.raises(SpecError, match="must name a step"):
        compile_expr(text)


def test_bad_expression_names_step_and_field_path() -> None:
    with pytest.raises(SpecError, match="bad expression") as info:
        compile_template({"a": {"b": "${input.x ==}"}}, step="s")
    assert (info.value.step, info.value.field) == ("s", "input.a.b")


@pytest.mark.parametrize(("text", "reason"), [("${input.a", "unclosed"), ("${ }", "empty expression")])
def test_malformed_placeholders(text: str, reason: str) -> None:
    with pytest.raises(SpecError, match=reason):
        compile_template(text)


def test_braces_and_escaped_quotes_inside_literals_do_not_close_the_placeholder() -> None:
    expr = compile_expr("${steps.a.x == `\"a\\`}\"` || steps.a.y == '}'}")
    assert expr.evaluate({"steps": {"a": {"x": "a`}"}}}) is True
    assert expr.evaluate({"steps": {"a": {"y": "}"}}}) is True
    assert expr.evaluate({"steps": {"a": {"x": "b"}}}) is False


def test_condition_evaluates_on_scope() -> None:
    expr = compile_expr("${steps.triage.score > `0.5` && input.age >= `18`}")
    assert truthy(expr.evaluate(SCOPE))
    assert not truthy(expr.evaluate({**SCOPE, "input": {"age": 10}}))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (False, False),
        ("", False),
        ([], False),
        ({}, False),
        (0, True),
        (0.0, True),
        ([0], True),
    ],
)
def test_jmespath_truth(value: object, expected: bool) -> None:
    assert truthy(value) is expected


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "x"]), inner, max_size=3)
    ),
    max_leaves=10,
)


@pytest.mark.parametrize("text", ["steps.a", "input", "item.x", 'steps."a".b.x', "steps.a.b.a"])
@given(scope=st.fixed_dictionaries({"steps": _json, "input": _json, "item": _json}))
@settings(max_examples=60, deadline=None)
def test_a_plain_path_is_looked_up_as_jmespath_would(text: str, scope: dict[str, object]) -> None:
    """Paths of names skip the interpreter; the value must be the interpreter's, whatever the data."""
    expr = compile_expr("${" + text + "}", step="s")
    assert expr.fields is not None
    assert expr.evaluate(scope) == TreeInterpreter().visit(expr.parsed.parsed, scope)


def test_other_expressions_go_through_the_interpreter() -> None:
    for text in ("steps.a.x[0]", "steps.a.x == `1`", "length(steps.a)", "steps.a.*"):
        assert compile_expr("${" + text + "}", step="s").fields is None
