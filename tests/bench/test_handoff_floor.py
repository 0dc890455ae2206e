"""The hand-off floor: round trips to a second process, each through one durable commit, with no engine."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from covey.bench.backends import Servers, backend_named
from covey.bench.baselines import WAL_STEADY_COMMITS
from covey.bench.config import QUICK, Env
from covey.bench.floor import FLOOR_PERSISTS, WARM_ROUND_TRIPS, handoff_floor
from covey.bench.suite import persists


def test_each_round_trip_commits_one_row_and_the_timed_ones_are_reported(tmp_path: Path) -> None:
    figures = {f.metric: f for f in handoff_floor(Env(tmp_path, sizes=QUICK))}

    assert set(figures) == {"p50 µs", "p99 µs"}
    assert {f.workload for f in figures.values()} == {"hand-off floor"}
    assert all(f.n == QUICK.commits for f in figures.values())
    assert 0 < figures["p50 µs"].value <= figures["p99 µs"].value
    with closing(sqlite3.connect(tmp_path / "handoff-floor.db")) as db:
        counts = dict(db.execute("SELECT run_id, count(*) FROM events GROUP BY run_id").fetchall())
    # The WAL's warm-up commits first, then one commit per round trip, warm or timed.
    assert counts["hand-off"] == WARM_ROUND_TRIPS + QUICK.commits
    assert counts["warm-up"] > WAL_STEADY_COMMITS


def test_the_floor_is_described_when_the_embedded_hand_off_is_measured(tmp_path: Path) -> None:
    env = Env(tmp_path, sizes=QUICK)
    sqlite = [backend_named("sqlite", Servers())]

    assert FLOOR_PERSISTS in persists(env, sqlite, with_peers=False, workloads=["W2"])
    assert FLOOR_PERSISTS not in persists(env, sqlite, with_peers=False, workloads=["W1", "W4"])
