"""Reducers: pure updates of one key's value, and the InputError each misfit raises."""

from __future__ import annotations

from typing import Any

import pytest

from covey.errors import InputError
from covey.state.reducers import REDUCERS, apply_reducer, check_reducer


def test_the_reducers_are_exactly_these() -> None:
    assert sorted(REDUCERS) == ["add", "append", "extend", "max", "merge", "min"]


@pytest.mark.parametrize(
    ("name", "current", "arg", "expected"),
    [
        ("append", None, 1, [1]),
        ("append", None, None, [None]),
        ("append", [1], [2], [1, [2]]),
        ("append", [], {"a": 1}, [{"a": 1}]),
        ("extend", None, [], []),
        ("extend", None, [1, 2], [1, 2]),
        ("extend", [1], [2, [3]], [1, 2, [3]]),
        ("merge", None, {}, {}),
        ("merge", None, {"a": 1}, {"a": 1}),
        ("merge", {"a": 1, "b": 2}, {"b": 3, "c": None}, {"a": 1, "b": 3, "c": None}),
        ("merge", {"n": {"x": 1}}, {"n": {"y": 2}}, {"n": {"y": 2}}),  # shallow: a nested object is replaced
        ("add", None, 3, 3),
        ("add", None, 0.5, 0.5),
        ("add", 3, 4, 7),
        ("add", 3, -4.5, -1.5),
        ("add", 2**62, 2**62, 2**63),
        ("max", None, -1, -1),
        ("max", 1, 2, 2),
        ("max", 2, 1, 2),
        ("max", 1.5, 1, 1.5),
        ("min", None, 5, 5),
        ("min", 1, 2, 1),
        ("min", 2, 1, 1),
        ("min", -0.5, 0, -0.5),
    ],
)
def test_each_reducer(name: str, current: Any, arg: Any, expected: Any) -> None:
    result = apply_reducer(name, current, arg, key="k")

    assert result == expected
    assert type(result) is type(expected)


def test_integer_sums_stay_integers() -> None:
    assert type(apply_reducer("add", 1, 2, key="k")) is int
    assert type(apply_reducer("add", None, 2, key="k")) is int
    assert type(apply_reducer("add", 1, 2.0, key="k")) is float


@pytest.mark.parametrize("name", ["append", "extend", "merge"])
def test_reducers_never_change_their_inputs(name: str) -> None:
    current: Any = {"a": 1} if name == "merge" else [1]
    arg: Any = {"b": 2} if name == "merge" else [2]
    before = (repr(current), repr(arg))

    result = apply_reducer(name, current, arg, key="k")
    fresh = apply_reducer(name, None, arg, key="k")

    assert (repr(current), repr(arg)) == before
    assert result is not current
    assert fresh is not arg  # a new key gets a copy, not the caller's list or dict
    fresh.clear()
    assert arg


@pytest.mark.parametrize(
    ("name", "current", "arg", "complaint"),
    [
        ("append", {"a": 1}, 1, "append needs a list"),
        ("append", "text", 1, "append needs a list"),
        ("append", 0, 1, "append needs a list"),
        ("extend", None, "ab", "extend takes a list"),
        ("extend", None, {"a": 1}, "extend takes a list"),
        ("extend", "ab", ["c"], "extend needs a list"),
        ("merge", None, [("a", 1)], "merge takes an object"),
        ("merge", None, "a", "merge takes an object"),
        ("merge", [1], {"a": 1}, "merge needs an object"),
        ("add", "1", 1, "add needs numbers"),
        ("add", 1, "1", "add needs numbers"),
        ("add", None, None, "add needs numbers"),
        ("add", [1], 1, "add needs numbers"),
        ("max", {"a": 1}, 1, "max needs numbers"),
        ("max", None, "9", "max needs numbers"),
        ("min", 1, None, "min needs numbers"),
        ("min", None, [0], "min needs numbers"),
    ],
)
def test_a_misfit_raises_input_error_naming_the_key_and_reducer(
    name: str, current: Any, arg: Any, complaint: str
) -> None:
    with pytest.raises(InputError) as caught:
        apply_reducer(name, current, arg, key="team/score")

    err = caught.value
    assert err.field == "team/score"
    assert err.reason.startswith(f"{name} on 'team/score': ")
    assert complaint in err.reason
    assert f"(current value: {type(current).__name__})" in err.reason


@pytest.mark.parametrize("name", ["add", "max", "min"])
@pytest.mark.parametrize(("current", "arg"), [(True, 1), (1, True), (None, False), (False, 0.5)])
def test_bools_are_not_numbers(name: str, current: Any, arg: Any) -> None:
    with pytest.raises(InputError, match=f"{name} needs numbers"):
        apply_reducer(name, current, arg, key="k")


def test_bools_are_plain_values_to_the_other_reducers() -> None:
    assert apply_reducer("append", [True], False, key="k") == [True, False]
    assert apply_reducer("merge", {"on": True}, {"on": False}, key="k") == {"on": False}


@pytest.mark.parametrize(("current", "arg"), [(1e308, 1e308), (-1e308, -1e308), (None, float("inf"))])
def test_an_add_whose_sum_is_not_a_finite_number_is_refused(current: Any, arg: Any) -> None:
    # JSON has no infinity: storing one would silently become null.
    with pytest.raises(InputError, match="not a finite number") as caught:
        apply_reducer("add", current, arg, key="total")

    assert caught.value.field == "total"


@pytest.mark.parametrize("name", ["multiply", "", "ADD", None, 1, ["add"], {"add": 1}])
def test_an_unknown_reducer_is_an_input_error_listing_the_known_ones(name: Any) -> None:
    with pytest.raises(InputError) as caught:
        check_reducer(name)
    assert caught.value.field == "reducer"
    assert f"unknown reducer {name!r}" in caught.value.reason
    assert "['add', 'append', 'extend', 'max', 'merge', 'min']" in caught.value.reason

    with pytest.raises(InputError) as applied:
        apply_reducer(name, 1, 1, key="k")
    assert applied.value.field == "reducer"


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_a_known_reducer_checks_out(name: str) -> None:
    assert check_reducer(name) == name
