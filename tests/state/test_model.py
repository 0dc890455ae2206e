"""Shared state as data: StateOp's JSON form and its checks, namespace and key names."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from covey.errors import InputError
from covey.ids import RUN_ID
from covey.state.model import StateEntry, StateOp, check_key, check_namespace, run_namespace

_DROP = object()


def _op(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"op": "put", "namespace": "docs", "key": "k", "value": 1}
    data.update(changes)
    return {name: value for name, value in data.items() if value is not _DROP}


# -- StateOp.from_json ---------------------------------------------------------------


def test_a_minimal_write_reads_with_defaults() -> None:
    assert StateOp.from_json({"op": "delete", "namespace": "docs", "key": "k"}) == StateOp(
        "delete", "docs", "k", None, None, None
    )


@pytest.mark.parametrize("data", [None, [], "put", 1, [("op", "put")]])
def test_a_write_must_be_an_object(data: Any) -> None:
    with pytest.raises(InputError, match="must be an object") as caught:
        StateOp.from_json(data)
    assert caught.value.field == "state"


@pytest.mark.parametrize("op", [_DROP, None, "set", "PUT", "", 1, ["put"]])
def test_the_operation_must_be_put_delete_or_update(op: Any) -> None:
    with pytest.raises(InputError, match="use put, delete or update") as caught:
        StateOp.from_json(_op(op=op))
    assert caught.value.field == "state.op"


@pytest.mark.parametrize("if_version", [-1, "1", 1.0, 1.5, True, False, [1], {"v": 1}])
def test_if_version_must_be_a_whole_number_of_at_least_0(if_version: Any) -> None:
    with pytest.raises(InputError, match="if_version") as caught:
        StateOp.from_json(_op(if_version=if_version))
    assert caught.value.field == "state.if_version"


@pytest.mark.parametrize("if_version", [None, 0, 1, 2**40])
def test_valid_if_versions(if_version: int | None) -> None:
    assert StateOp.from_json(_op(if_version=if_version)).if_version == if_version


@pytest.mark.parametrize("reducer", [_DROP, None, "multiply", ["add"], {"name": "add"}])
def test_an_update_needs_a_known_reducer(reducer: Any) -> None:
    with pytest.raises(InputError, match="unknown reducer") as caught:
        StateOp.from_json(_op(op="update", reducer=reducer))
    assert caught.value.field == "reducer"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"namespace": _DROP}, "namespace"),
        ({"namespace": ""}, "namespace"),
        ({"namespace": "has space"}, "namespace"),
        ({"namespace": "docs\n"}, "namespace"),
        ({"namespace": 7}, "namespace"),
        ({"key": _DROP}, "key"),
        ({"key": ""}, "key"),
        ({"key": "x" * 513}, "key"),
        ({"key": ["k"]}, "key"),
    ],
)
def test_bad_names_are_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as caught:
        StateOp.from_json(_op(**changes))
    assert caught.value.field == field


def test_the_operation_is_checked_before_the_names() -> None:
    with pytest.raises(InputError) as caught:
        StateOp.from_json({"op": "nope", "namespace": "", "key": ""})
    assert caught.value.field == "state.op"


@pytest.mark.parametrize(
    "op",
    [
        StateOp("put", "docs", "k", {"nested": [1, 2.5, None, True, "é"]}),
        StateOp("put", "run:r-1", "a/b c", None, None, 0),
        StateOp("put", "team-a.cache", "k", [], None, 7),
        StateOp("delete", "docs", "k"),
        StateOp("delete", "docs", "k", None, None, 3),
        StateOp("update", "docs", "count", 1, "add"),
        StateOp("update", "docs", "log", {"line": "x"}, "append"),
        StateOp("update", "docs", "seen", ["a"], "extend", None),
    ],
)
def test_to_json_and_from_json_round_trip(op: StateOp) -> None:
    data = op.to_json()

    assert set(data) == {"op", "namespace", "key", "value", "reducer", "if_version"}
    assert StateOp.from_json(data) == op
    assert StateOp.from_json(orjson.loads(orjson.dumps(data))) == op  # through the wire, too


def test_writes_and_entries_are_immutable() -> None:
    op = StateOp("put", "docs", "k", 1)
    entry = StateEntry("docs", "k", 1, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        op.value = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.version = 2  # type: ignore[misc]


# -- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["docs", "team-a.cache", "run:abc_1", "A", "0", "a" * 200, "x:y:z", "-", ".", "_"]
)
def test_valid_namespaces(name: str) -> None:
    assert check_namespace(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "a" * 201, "has space", "a/b", "é", "docs\n", "\ndocs", "docs\r", "do\tcs", "*", None, 5, ["docs"]],
)
def test_invalid_namespaces_name_the_field(name: Any) -> None:
    with pytest.raises(InputError, match="not a valid namespace") as caught:
        check_namespace(name)
    assert caught.value.field == "namespace"


@pytest.mark.parametrize("key", ["k", "x" * 512, "a/b c", "é🙂", "line\nbreak", " ", "0"])
def test_valid_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 513, "é" * 513, None, 1, b"k", ["k"]])
def test_invalid_keys_name_the_field(key: Any) -> None:
    with pytest.raises(InputError, match="not a valid key") as caught:
        check_key(key)
    assert caught.value.field == "key"


def test_the_limits_count_characters_not_bytes() -> None:
    assert check_key("é" * 512) == "é" * 512
    with pytest.raises(InputError):
        check_namespace("é")  # namespaces are ASCII only, whatever their length


def test_a_run_namespace_is_a_valid_namespace_for_any_run_id() -> None:
    longest = "r" * 128
    assert RUN_ID.match(longest)
    assert run_namespace("r1") == "run:r1"
    assert check_namespace(run_namespace(longest)) == f"run:{longest}"
    assert check_namespace(run_namespace("a-b_c.d:e")) == "run:a-b_c.d:e"
