"""The targets table: the embedded hand-off against one commit (the target) and against the hand-off floor."""

from __future__ import annotations

from covey.bench.figures import Figure
from covey.bench.report import compare

W2 = Figure("W2", "covey", "sqlite", "p50 µs", 525.0, 500)
COMMIT = Figure("commit", "sqlite", "sqlite", "p50 µs", 150.0, 2_000)
FLOOR = Figure("hand-off floor", "sqlite", "sqlite", "p50 µs", 175.0, 2_000)


def test_the_hand_off_is_held_to_three_commits_and_set_beside_the_floor() -> None:
    rows = {row.against: row for row in compare([COMMIT, FLOOR, W2])}

    assert rows["commit p50"].ratio == 3.5
    assert rows["commit p50"].met is False
    assert rows["hand-off floor p50"].ratio == 3.0
    assert rows["hand-off floor p50"].met is None  # shown, not a target


def test_without_the_floor_only_the_target_is_compared() -> None:
    rows = {row.against: row for row in compare([COMMIT, W2])}

    assert set(rows) == {"commit p50"}
    assert rows["commit p50"].met is False
