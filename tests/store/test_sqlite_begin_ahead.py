"""The sole writer begins its next write transaction ahead: held between commits, rolled back on close,
never with journaled writes unapplied, and never for a store that is not the file's sole writer."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from covey.runtime.runner import Runner
from covey.store import sqlite as sqlite_store
from covey.store.base import CommitBatch
from covey.store.sqlite import SQLiteStore
from covey.testing import wait_for
from covey.testing.conformance.driver import Driver, claim_request, task


@pytest.fixture(autouse=True)
def _unused_transactions_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction begun ahead stays until used, unless a test says otherwise (it ends when idle)."""
    monkeypatch.setattr(sqlite_store, "AHEAD_UNUSED_S", 60.0)


def _other_writer_can_write(path: Path) -> bool:
    """Whether another connection can take the write lock now (it gives up at once if not)."""
    db = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        return False
    finally:
        db.close()


def _runs(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [row[0] for row in db.execute("SELECT run_id FROM runs ORDER BY run_id")]
    finally:
        db.close()


def _in_transaction(store: SQLiteStore) -> bool:
    core = store._core
    assert core is not None
    return core.db.in_transaction


async def _hand_off(store: SQLiteStore, d: Driver, run_id: str) -> None:
    write = d.submit(run_id, {"q": 1})
    write.enqueue.append(task(run_id, "a"))
    assert store.commit_now(CommitBatch(d.epoch, [write], [claim_request("w1")])) is not None


async def test_the_sole_writer_holds_its_next_transaction_from_the_turn_after_a_commit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "covey.db"
    async with SQLiteStore(path, sole_writer=True) as store:
        d = await Driver.start(store)
        await _hand_off(store, d, "r1")

        await wait_for(lambda: _in_transaction(store), timeout=5)
        assert not _other_writer_can_write(path)

        await _hand_off(store, d, "r2")  # the write uses the transaction begun ahead
        core = store._core
        assert core is not None
        assert core.began_ahead
        await wait_for(lambda: _runs(path) == ["r1", "r2"], timeout=5)  # committed, and applied
    assert _other_writer_can_write(path), "closing rolls the transaction begun ahead back"
    assert _runs(path) == ["r1", "r2"]


async def test_an_unused_transaction_begun_ahead_ends_once_the_store_is_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle runner does not keep the write lock: a command that opened the file just as it started
    gets it."""
    monkeypatch.setattr(sqlite_store, "AHEAD_UNUSED_S", 0.01)
    path = tmp_path / "covey.db"
    async with SQLiteStore(path, sole_writer=True) as store:
        d = await Driver.start(store)
        await _hand_off(store, d, "r1")
        await wait_for(lambda: _other_writer_can_write(path), timeout=5)
        assert not _in_transaction(store)

        await _hand_off(store, d, "r2")  # a write after it begins its own transaction
        await wait_for(lambda: _runs(path) == ["r1", "r2"], timeout=5)


async def test_no_transaction_is_begun_ahead_while_journaled_writes_are_unapplied(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with SQLiteStore(path, sole_writer=True) as store:
        d = await Driver.start(store)
        await _hand_off(store, d, "r1")
        core = store._core
        assert core is not None
        assert core.unapplied, "the hand-off committed as a journal row"

        core.begin_ahead()  # refused: the writes are applied in a transaction of their own first

        assert not core.db.in_transaction
        await wait_for(lambda: not core.unapplied and core.db.in_transaction, timeout=5)


async def test_a_store_that_is_not_the_sole_writer_never_holds_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with SQLiteStore(path) as store:
        d = await Driver.start(store)
        await _hand_off(store, d, "r1")
        for _ in range(3):
            await asyncio.sleep(0)
        assert not _in_transaction(store)
        assert _other_writer_can_write(path)


async def test_the_runner_is_the_sole_writer_of_its_file(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db") as runner:
        assert runner.store.sole_writer
        run_id = await runner.submit({"name": "one", "steps": {"a": {"skill": "echo"}}})
        await wait_for(lambda: _in_transaction(runner.store), timeout=5)
        assert (await runner.store.get_run(run_id)) is not None  # reads inside it see every commit


@pytest.mark.parametrize("durable", [True, False])
async def test_a_write_begun_ahead_commits_as_durably_as_any(tmp_path: Path, durable: bool) -> None:
    path = tmp_path / "covey.db"
    async with SQLiteStore(path, durable=durable, sole_writer=True) as store:
        d = await Driver.start(store)
        await _hand_off(store, d, "r1")
        await wait_for(lambda: _in_transaction(store), timeout=5)
        core = store._core
        assert core is not None
        (synchronous,) = core.db.execute("PRAGMA synchronous").fetchone()
        assert synchronous == (2 if durable else 1)  # FULL for a durable store, NORMAL otherwise
