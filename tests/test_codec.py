"""check_payload: what it refuses, and the field it names for each problem."""

from __future__ import annotations

from typing import Any

import pytest

from covey.codec import MAX_DEPTH, check_payload
from covey.errors import InputError


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "field", "reason"),
    [
        ({"a": {"b": [1, 2, {"c": float("nan")}]}}, "output.a.b[2].c", "nan is not a JSON number"),
        ({"a": [float("inf")]}, "output.a[0]", "inf is not a JSON number"),
        ({"a": {1: 2}}, "output.a", "object key 1 is not a string"),
        ({"x": [{"y": {1, 2}}]}, "output.x[0].y", "set is not a JSON value"),
        ((1, 2), "output", "tuple is not a JSON value"),
        (
            _nested(MAX_DEPTH + 1),
            "output" + "[0]" * (MAX_DEPTH + 1),
            f"nested deeper than {MAX_DEPTH} levels",
        ),
    ],
)
def test_a_payload_that_is_not_plain_json_is_refused_naming_where(
    value: Any, field: str, reason: str
) -> None:
    with pytest.raises(InputError) as info:
        check_payload(value, field="output")
    assert info.value.field == field
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -1.5,
        "text",
        [],
        {},
        {"items": list(range(100)), "ok": True, "none": None},
        _nested(MAX_DEPTH),
    ],
)
def test_plain_json_passes_and_comes_back_encoded(value: Any) -> None:
    import orjson

    assert check_payload(value, field="output") == orjson.dumps(value)


def test_a_payload_over_the_size_limit_is_refused() -> None:
    with pytest.raises(InputError, match="over the limit of 10") as info:
        check_payload("x" * 20, field="input", max_bytes=10)
    assert info.value.field == "input"


def test_subclasses_of_json_types_get_the_full_check() -> None:
    class Text(str):
        pass

    assert check_payload({"a": Text("b")}, field="output") == b'{"a":"b"}'
