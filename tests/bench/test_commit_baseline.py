"""The SQLite commit baseline times commits in the WAL's steady state, not while the WAL file still grows.

Until SQLite's first automatic checkpoint every commit makes the WAL longer,
and its fsync also records the new size; a p50 taken across both regimes fell
on either side of that step from one run to the next.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from covey.bench.baselines import WAL_STEADY_COMMITS, _warm_up_wal, sqlite_commit
from covey.bench.config import QUICK, Env

CHECKPOINT_PAGES = 40


def test_the_warm_up_ends_once_commits_rewrite_the_wal_in_place(tmp_path: Path) -> None:
    path = tmp_path / "baseline.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        made: list[int] = []

        def commit(i: int) -> float:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO events (body) VALUES (?)", (f"event {i}",))
            db.execute("COMMIT")
            made.append(i)
            return 0.0

        warm = _warm_up_wal(db, path, commit)
        wal = Path(f"{path}-wal")
        size = wal.stat().st_size
        for i in range(3 * CHECKPOINT_PAGES):
            commit(warm + i)
            assert wal.stat().st_size == size, f"commit {i} after the warm-up grew the WAL"

    assert made[:warm] == list(range(warm))
    # The first checkpoint (after about CHECKPOINT_PAGES commits, a few of which write two pages),
    # then a full run of commits that left the size unchanged.
    assert CHECKPOINT_PAGES // 2 + WAL_STEADY_COMMITS <= warm <= 2 * CHECKPOINT_PAGES + WAL_STEADY_COMMITS


def test_the_baseline_reports_its_commits_and_times_only_the_ones_asked_for(tmp_path: Path) -> None:
    figures = {f.metric: f for f in sqlite_commit(Env(tmp_path, sizes=QUICK))}

    assert set(figures) == {"commits/s", "p50 µs", "p99 µs"}
    assert all(f.n == QUICK.commits for f in figures.values())
    assert 0 < figures["p50 µs"].value <= figures["p99 µs"].value
    with closing(sqlite3.connect(tmp_path / "sqlite-commit.db")) as db:
        (rows,) = db.execute("SELECT count(*) FROM events").fetchone()
    assert rows > QUICK.commits + WAL_STEADY_COMMITS  # the warm-up's commits came first
