"""``@record``: immutable to the type checker, hashable and comparable by fields, slotted."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api as mypy_api

from covey.engine.events import TaskReady
from covey.records import record


@record
class Point:
    x: int
    y: int = 0


def test_a_record_compares_and_hashes_by_its_fields() -> None:
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(2, 1)
    assert hash(Point(1, 2)) == hash(Point(1, 2))
    assert len({Point(1), Point(1, 0), Point(2)}) == 2


def test_a_record_is_slotted() -> None:
    assert not hasattr(Point(1), "__dict__")
    assert not hasattr(TaskReady("r/a", 1, 0), "__dict__")
    with pytest.raises(AttributeError):
        Point(1).z = 3  # type: ignore[attr-defined]


def test_the_type_checker_refuses_an_assignment_to_a_record_field(tmp_path: Path) -> None:
    source = tmp_path / "assigns.py"
    source.write_text(
        "from covey.engine.events import TaskReady\nevent = TaskReady('r/a', 1, 0)\nevent.try_no = 2\n"
    )
    out, _, status = mypy_api.run(["--strict", "--no-incremental", str(source)])
    assert status == 1, out
    assert "assigns.py:3: error" in out
    assert "read-only" in out
