"""Loading specs from JSON and YAML text and files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from covey.errors import ConfigError, SpecError
from covey.spec import load
from covey.spec.load import load_spec, load_spec_file

YAML_SPEC = """\
name: support
signals: [approve]
max_steps: 50
steps:
  triage:
    skill: classify
    input: {text: "${input.text}"}
    retry: {attempts: 5, backoff_s: 0.5}
  answer:
    agent: writer
    input:
      intent: "${steps.triage.intent}"
    when: "${steps.triage.score > `0.5`}"
    labels: {gpu: "true"}
  approval:
    wait: {signal: approve, timeout_s: 30}
    after: [answer]
output: {answer: "${steps.answer}"}
"""

JSON_SPEC = {
    "name": "support",
    "signals": ["approve"],
    "max_steps": 50,
    "steps": {
        "triage": {
            "skill": "classify",
            "input": {"text": "${input.text}"},
            "retry": {"attempts": 5, "backoff_s": 0.5},
        },
        "answer": {
            "agent": "writer",
            "input": {"intent": "${steps.triage.intent}"},
            "when": "${steps.triage.score > `0.5`}",
            "labels": {"gpu": "true"},
        },
        "approval": {"wait": {"signal": "approve", "timeout_s": 30}, "after": ["answer"]},
    },
    "output": {"answer": "${steps.answer}"},
}


def test_json_and_yaml_give_the_same_spec() -> None:
    from_yaml = load_spec(YAML_SPEC)
    from_json = load_spec(json.dumps(JSON_SPEC))
    assert from_yaml == from_json
    assert list(from_yaml.steps) == ["triage", "answer", "approval"]
    assert from_yaml.steps["triage"].retry.attempts == 5
    assert from_yaml.steps["approval"].wait is not None
    assert from_yaml.steps["approval"].wait.timeout_s == 30


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_explicit_format(fmt: str) -> None:
    text = json.dumps(JSON_SPEC) if fmt == "json" else YAML_SPEC
    assert load_spec(text, fmt=fmt).name == "support"


def test_explicit_json_refuses_yaml() -> None:
    with pytest.raises(SpecError, match="malformed JSON"):
        load_spec(YAML_SPEC, fmt="json")


def test_unknown_format_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="toml"):
        load_spec(YAML_SPEC, fmt="toml")


def test_malformed_yaml_names_source_and_line() -> None:
    text = "name: w\nsteps:\n  a:\n    skill: s\n   bad: [1\n"
    with pytest.raises(SpecError, match=r"malformed YAML in flow\.yaml at line 5") as info:
        load_spec(text, source="flow.yaml")
    assert info.value.step is None


def test_malformed_json_names_source_and_line() -> None:
    text = '{\n  "name": "w",\n  "steps": {"a": {"skill": "s"}\n  "x": 1\n}'
    with pytest.raises(SpecError, match=r"malformed JSON in flow\.json at line 4, column 3"):
        load_spec(text, fmt="json", source="flow.json")


def test_json_looking_text_reports_the_json_error() -> None:
    with pytest.raises(SpecError, match=r"malformed JSON in <spec> at line 2"):
        load_spec('{"name": "w",\n "steps": {]}')


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just text", "str"), ("", "nothing"), ("42", "int")]
)
def test_top_level_must_be_an_object(text: str, kind: str) -> None:
    with pytest.raises(SpecError, match=f"must be an object at the top level, got {kind}"):
        load_spec(text, source="x.yaml")


def test_unknown_field_names_step_and_field() -> None:
    text = YAML_SPEC.replace("    agent: writer", "    agnet: writer")
    with pytest.raises(SpecError) as info:
        load_spec(text, source="flow.yaml")
    assert (info.value.step, info.value.field) == ("answer", "agnet")
    assert "flow.yaml" in str(info.value)


def test_bad_nested_value_names_the_field_path() -> None:
    text = YAML_SPEC.replace("attempts: 5", "attempts: 0")
    with pytest.raises(SpecError) as info:
        load_spec(text)
    assert (info.value.step, info.value.field) == ("triage", "retry.attempts")


def test_workflow_level_field_error_has_no_step() -> None:
    with pytest.raises(SpecError) as info:
        load_spec("name: w\nsteps: {a: {skill: s}}\nmax_steps: 0\n")
    assert (info.value.step, info.value.field) == (None, "max_steps")


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ("name: w\nsteps:\n  a: {skill: s}\n  a: {skill: t}\n", "yaml"),
        ('{"name": "w", "steps": {"a": {"skill": "s"}, "a": {"skill": "t"}}}', "json"),
    ],
)
def test_duplicate_keys_are_refused(text: str, fmt: str) -> None:
    with pytest.raises(SpecError, match="duplicate key 'a'"):
        load_spec(text, fmt=fmt)


def test_duplicate_yaml_key_names_its_line() -> None:
    with pytest.raises(SpecError, match="at line 4"):
        load_spec("name: w\nsteps:\n  a: {skill: s}\n  a: {skill: t}\n")


def test_yaml_values_that_are_not_json_are_refused() -> None:
    with pytest.raises(SpecError, match="date") as info:
        load_spec("name: w\nsteps:\n  a: {skill: s, input: {day: 2024-01-02}}\n")
    assert (info.value.step, info.value.field) == ("a", "input.day")


def test_yaml_keys_that_are_not_strings_are_refused() -> None:
    with pytest.raises(SpecError, match="key True is not a string") as info:
        load_spec("name: w\nsteps:\n  a: {skill: s, input: {on: 1}}\n")
    assert (info.value.step, info.value.field) == ("a", "input")


def test_alias_bombs_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load, "MAX_SPEC_VALUES", 10_000)  # the default takes longer to reach
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(SpecError, match="more than"):
        load_spec("\n".join(lines) + "\n")


def test_anchors_and_aliases_work() -> None:
    text = "name: w\nsteps:\n  a: {skill: s, retry: &r {attempts: 7}}\n  b: {skill: s, retry: *r}\n"
    assert load_spec(text).steps["b"].retry.attempts == 7


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json", ".spec"])
def test_load_spec_file_by_suffix(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"flow{suffix}"
    path.write_text(json.dumps(JSON_SPEC) if suffix == ".json" else YAML_SPEC)
    assert load_spec_file(path) == load_spec(YAML_SPEC)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: [\n")
    with pytest.raises(SpecError, match=r"broken\.yaml at line 2"):
        load_spec_file(str(path))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found: .*nope\.yaml"):
        load_spec_file(tmp_path / "nope.yaml")


def test_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_spec_file(tmp_path)


@pytest.mark.parametrize(
    ("text", "fmt"),
    [('{"name": "w", "steps": {"a": {"skill": "s", "input": NaN}}}', "json"), ("name: w\nx: .inf\n", "yaml")],
)
def test_non_finite_numbers_are_refused(text: str, fmt: str) -> None:
    with pytest.raises(SpecError, match="not a JSON number"):
        load_spec(text, fmt=fmt)
