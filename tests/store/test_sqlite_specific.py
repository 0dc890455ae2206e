"""What only the SQLite store does: read-only opening, schema migrations, durability, its clock.

These tests open SQLiteStore directly on a file of their own (not the
parametrized ``store`` fixture, which may be another backend).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from covey.errors import BackendError, CoveyError
from covey.store.base import AGING_MS, WorkerInfo
from covey.store.sqlite import SQLiteStore
from covey.store.sqlite.core import SQLiteCore
from covey.store.sqlite.schema import MIGRATIONS
from covey.testing.conformance.driver import Driver, claim_request, task, wait_past

pytestmark = pytest.mark.asyncio

TABLES = {"meta", "specs", "runs", "events", "tasks", "outputs", "timers", "inbox", "seen", "workers"}


def _sql(path: Path, query: str, *args: object) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        with db:
            return db.execute(query, args).fetchall()
    finally:
        db.close()


def _store_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("covey-sqlite"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "covey.db"


async def test_a_read_only_store_sees_what_the_writer_commits(db_path: Path) -> None:
    async with SQLiteStore(db_path) as writer:
        d = await Driver.start(writer)
        await d.start_run("r1", {"q": 1}, enqueue=[task("r1", "a")])
        async with SQLiteStore(db_path, readonly=True) as reader:
            info = await reader.get_run("r1")
            assert info is not None
            assert info.input == {"q": 1}
            assert [t.status for t in await reader.list_tasks("r1")] == ["ready"]

            # Committed after the reader opened: the next read sees it.
            await writer.claim(claim_request())
            await d.start_run("r2")

            assert [t.status for t in await reader.list_tasks("r1")] == ["leased"]
            assert {r.run_id for r in await reader.list_runs()} == {"r1", "r2"}
            assert len(await reader.load_history("r2")) == 1


async def test_a_read_only_store_refuses_writes_with_a_backend_error(db_path: Path) -> None:
    async with SQLiteStore(db_path) as writer:
        await writer.begin_epoch()
    async with SQLiteStore(db_path, readonly=True) as reader:
        with pytest.raises(BackendError, match="readonly"):
            await reader.begin_epoch()
        with pytest.raises(BackendError, match=str(db_path)):
            await reader.register_worker(WorkerInfo("w1", frozenset({"echo"}), {}, 1, 0, 0))
    assert _sql(db_path, "SELECT value FROM meta WHERE key = 'epoch'") == [("1",)]


async def test_opening_a_missing_file_read_only_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="cannot open"):
        async with SQLiteStore(tmp_path / "nothing.db", readonly=True):
            pass
    assert not (tmp_path / "nothing.db").exists()


@pytest.fixture
def garbage_path(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a SQLite database, not even close" * 100)
    return path


async def test_a_file_that_is_not_a_database_is_a_backend_error(garbage_path: Path) -> None:
    db_path = garbage_path
    before = _store_threads()

    with pytest.raises(BackendError, match=str(db_path)):
        async with SQLiteStore(db_path):
            pass

    assert _store_threads() == before


async def test_migration_creates_the_schema_once(db_path: Path) -> None:
    async with SQLiteStore(db_path):
        pass
    tables = {row[0] for row in _sql(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables >= TABLES
    assert _sql(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(len(MIGRATIONS)),)]
    assert _sql(db_path, "SELECT value FROM meta WHERE key = 'epoch'") == [("0",)]

    async with SQLiteStore(db_path) as store:
        assert await store.begin_epoch() == 1
    assert _sql(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(len(MIGRATIONS)),)]


async def test_an_older_schema_is_upgraded_with_its_tasks_still_claimable_and_expiring(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Written by a covey that knew only the first four migrations: one ready task, one leased.
    monkeypatch.setattr("covey.store.sqlite.connection.MIGRATIONS", MIGRATIONS[:4])
    async with SQLiteStore(db_path) as old:
        d = await Driver.start(old)
        await d.start_run("r1", enqueue=[task("r1", "leased"), task("r1", "ready", target="other")])
        (leased,) = await old.claim(claim_request(lease_ms=30))
    assert _sql(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [("4",)]
    monkeypatch.undo()

    async with SQLiteStore(db_path) as store:
        (ready,) = await store.claim(claim_request("w2", ["other"]))
        await wait_past(store, leased.lease_until_ms)
        assert await store.fire_due(10) == 1  # the old lease expires through the new index

    assert ready.task_id == "r1/ready"
    assert _sql(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(len(MIGRATIONS)),)]
    indexes = {row[0] for row in _sql(db_path, "SELECT name FROM sqlite_master WHERE tbl_name = 'tasks'")}
    assert {"tasks_ready", "tasks_leased"} <= indexes
    assert not {"tasks_to_claim", "tasks_by_lease"} & indexes


@pytest.mark.parametrize("readonly", [False, True])
async def test_an_older_covey_refuses_a_newer_schema(db_path: Path, readonly: bool) -> None:
    async with SQLiteStore(db_path):
        pass
    newer = len(MIGRATIONS) + 1
    _sql(db_path, "UPDATE meta SET value = ? WHERE key = 'schema_version'", str(newer))
    store = SQLiteStore(db_path, readonly=readonly)
    before = _store_threads()

    with pytest.raises(CoveyError) as caught:
        async with store:
            pass

    message = str(caught.value)
    assert f"schema version {newer}" in message
    assert f"newer than this covey knows ({len(MIGRATIONS)})" in message
    assert "upgrade covey" in message
    assert _sql(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(newer),)]
    assert _store_threads() == before  # the failed enter stopped the thread it started


@pytest.mark.parametrize(("durable", "synchronous"), [(True, 2), (False, 1)])
async def test_durability_settings(db_path: Path, durable: bool, synchronous: int) -> None:
    async with SQLiteStore(db_path, durable=durable) as store:
        assert store._core is not None
        assert store._core.db.execute("PRAGMA synchronous").fetchone() == (synchronous,)
        assert store._core.db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_committed_data_survives_close_and_reopen(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        d = await Driver.start(store)
        await d.start_run("r1", {"q": 1}, enqueue=[task("r1", "a")], outputs=[("a", -1, "out")])

    async with SQLiteStore(db_path) as store:
        info = await store.get_run("r1")
        assert info is not None
        assert (info.seq, info.input) == (1, {"q": 1})
        assert [t.task_id for t in await store.list_tasks("r1")] == ["r1/a"]
        assert await store.get_outputs("r1", ["a"]) == {"a": "out"}
        assert await store.begin_epoch() == d.epoch + 1


async def test_a_long_wait_outranks_a_higher_priority(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a priority-0 task that has waited 2.5 aging periods (the store's clock is moved, not slept),
    now = SQLiteCore.now_ms()
    monkeypatch.setattr(SQLiteCore, "now_ms", staticmethod(lambda: now - 5 * AGING_MS // 2))
    async with SQLiteStore(db_path) as store:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "old", priority=0)])
        monkeypatch.setattr(SQLiteCore, "now_ms", staticmethod(lambda: now))
        # and newer tasks at priorities 2 and 3,
        await d.update("r1", enqueue=[task("r1", "p2", priority=2), task("r1", "p3", priority=3)])

        # when a worker claims one at a time,
        order = [[lease.step for lease in await store.claim(claim_request(limit=1))] for _ in range(3)]

    # then the old task overtakes priority 2 but not priority 3.
    assert order == [["p3"], ["old"], ["p2"]]


async def test_a_commit_rereads_what_another_connection_changed_since_its_own_writes(db_path: Path) -> None:
    """The runner's connection skips re-reading run sequence numbers and held shards it wrote or read
    itself, but only while no other connection commits (``PRAGMA data_version``): a foreign write to the
    same file makes the next commit read both again, so a stale write is still refused."""
    async with SQLiteStore(db_path) as first:
        d1 = await Driver.start(first)
        await d1.start_run("r1")
        assert not (await d1.commit(d1.write("r1"))).conflicts  # r1's seq is now known without a read

        async with SQLiteStore(db_path) as second:
            d2 = Driver(second, d1.epoch)
            d2.seqs = dict(d1.seqs)
            assert not (await d2.commit(d2.write("r1"))).conflicts  # another connection moves r1 on

            stale = await d1.commit(d1.write("r1"))
            assert stale.conflicts == {"r1"}
            assert len(await first.load_history("r1")) == d2.seqs["r1"]

            await second.begin_epoch()  # another connection takes every shard
            with pytest.raises(CoveyError, match="no longer holds"):
                await d1.commit(d1.write("r1"))
            assert len(await first.load_history("r1")) == d2.seqs["r1"]


async def test_a_commit_after_its_own_epoch_change_checks_the_shards_again(db_path: Path) -> None:
    """Shards the connection itself gives up are not taken as still held."""
    async with SQLiteStore(db_path) as store:
        d = await Driver.start(store)
        await d.start_run("r1")  # the epoch's shards are now known as held
        await store.release_shards(d.epoch, list(range(256)))
        fresh = await store.join_epoch()
        assert await store.take_shards(fresh, list(range(256)), 60_000) == set(range(256))
        with pytest.raises(CoveyError, match="no longer holds"):
            await d.commit(d.write("r1"))


async def test_a_hand_off_sees_a_task_another_connection_made_ready(db_path: Path) -> None:
    """Once a hand-off's commit read that no task is ready, the next ones do not read it again, unless
    another connection committed since (``PRAGMA data_version``): its ready task is then taken first."""
    async with SQLiteStore(db_path) as first:
        d1 = await Driver.start(first)
        await d1.start_run("r1")
        first_hand_off = await d1.update(
            "r1", enqueue=[task("r1", "a", target="next")], claims=[claim_request("w1", ["next"])]
        )
        assert [lease.task_id for lease in first_hand_off.leases["w1"]] == ["r1/a"]

        async with SQLiteStore(db_path) as second:
            d2 = Driver(second, d1.epoch)
            await d2.start_run("r0", enqueue=[task("r0", "urgent", target="next", priority=5)])

        after = await d1.update(
            "r1", enqueue=[task("r1", "b", target="next")], claims=[claim_request("w1", ["next"], limit=1)]
        )
        assert [lease.task_id for lease in after.leases["w1"]] == ["r0/urgent"]
