"""The SQLite hand-off commit as a journal row: durable at once, in the tables one turn later, replayed
after a crash, and only for batches that read nothing they write."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from covey.client import LocalClient
from covey.state.model import StateOp, run_namespace
from covey.store.base import CommitBatch
from covey.store.sqlite import SQLiteStore
from covey.store.sqlite.journal import decode_writes, encode_writes
from covey.testing.conformance.driver import Driver, claim_request, task

ROOT = Path(__file__).resolve().parents[2]


def _sql(path: Path, query: str) -> list[tuple[object, ...]]:
    """Read with a connection of its own, as another process would."""
    db = sqlite3.connect(path)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def _journal_rows(path: Path) -> int:
    return int(_sql(path, "SELECT count(*) FROM journal")[0][0])


def _runs(path: Path) -> list[object]:
    return [row[0] for row in _sql(path, "SELECT run_id FROM runs ORDER BY run_id")]


def test_journaled_writes_come_back_as_written() -> None:
    writes = [
        ("INSERT INTO t VALUES (?, ?, ?)", [(1, b"\x00{\xff", None), (2, b"", "text")]),
        ("DELETE FROM t WHERE id = ?", [(3,)]),
    ]
    assert decode_writes(encode_writes(writes)) == [
        ("INSERT INTO t VALUES (?, ?, ?)", [[1, b"\x00{\xff", None], [2, b"", "text"]]),
        ("DELETE FROM t WHERE id = ?", [[3]]),
    ]


def test_a_journal_row_written_with_base64_blobs_is_still_read() -> None:
    """Rows an earlier covey left (blobs in base64) are replayed by this one."""
    body = b'[["INSERT INTO t VALUES (?, ?)",[[1,{"$b":"AHv/"}]]]]'
    assert decode_writes(body) == [("INSERT INTO t VALUES (?, ?)", [[1, b"\x00{\xff"]])]


async def test_a_small_inline_commit_is_one_journal_row_then_in_the_tables_on_the_next_turn(
    tmp_path: Path,
) -> None:
    path = tmp_path / "covey.db"
    async with SQLiteStore(path) as store:
        d = await Driver.start(store)
        write = d.submit("r1", {"q": 1})
        write.enqueue.append(task("r1", "a"))

        result = store.commit_now(CommitBatch(d.epoch, [write], [claim_request("w1")]))

        assert result is not None
        (lease,) = result.leases["w1"]
        assert (lease.task_id, lease.lease_no) == ("r1/a", 1)
        assert _journal_rows(path) == 1, "durable as one journal row when the call returns"
        assert _runs(path) == [], "the tables get its writes once the answers are out"

        await asyncio.sleep(0)  # the event loop's next turn

        assert _journal_rows(path) == 0
        assert _runs(path) == ["r1"]
        assert _sql(path, "SELECT task_id, status, worker_id FROM tasks") == [("r1/a", "leased", "w1")]


async def test_a_call_before_that_turn_applies_the_journal_first(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with SQLiteStore(path) as store:
        d = await Driver.start(store)
        write = d.submit("r1", {"q": 1})
        write.enqueue.append(task("r1", "a"))
        assert store.commit_now(CommitBatch(d.epoch, [write], [])) is not None

        info = await store.get_run("r1")  # no turn in between: the read applies the row first

        assert info is not None
        assert info.input == {"q": 1}
        assert [t.status for t in await store.list_tasks("r1")] == ["ready"]
        assert _journal_rows(path) == 0


def _killed_after_a_journaled_commit(tmp_path: Path) -> Path:
    """A file whose writer was SIGKILLed right after a journaled commit, before it applied the row."""
    path = tmp_path / "covey.db"
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from covey.store.base import CommitBatch
        from covey.store.sqlite import SQLiteStore
        from covey.testing.conformance.driver import Driver, claim_request, task

        async def main():
            async with SQLiteStore({str(path)!r}) as store:
                d = await Driver.start(store)
                write = d.submit("r1", {{"q": 1}})
                write.enqueue.append(task("r1", "a"))
                assert store.commit_now(CommitBatch(d.epoch, [write], [claim_request("w1")])) is not None
                os.kill(os.getpid(), signal.SIGKILL)  # before the turn that applies the row

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert _journal_rows(path) == 1
    assert _runs(path) == []
    return path


async def test_a_journal_row_a_killed_writer_left_is_applied_when_the_file_is_opened_again(
    tmp_path: Path,
) -> None:
    path = _killed_after_a_journaled_commit(tmp_path)

    async with SQLiteStore(path) as store:
        info = await store.get_run("r1")
        assert info is not None
        assert info.input == {"q": 1}
        assert len(await store.load_history("r1")) == 1
        (leased,) = await store.list_tasks("r1")
        assert (leased.status, leased.worker_id, leased.lease_no) == ("leased", "w1", 1)
    assert _journal_rows(path) == 0


async def test_a_read_command_after_the_crash_sees_the_journaled_commit(tmp_path: Path) -> None:
    path = _killed_after_a_journaled_commit(tmp_path)

    info = await LocalClient(path).get_run("r1")  # what `covey show r1` reads, with no runner up

    assert info.input == {"q": 1}
    assert _journal_rows(path) == 0


async def _visible_at_once(path: Path, store: SQLiteStore, batch: CommitBatch) -> bool:
    """Whether ``batch``, committed inline, is in the tables before the event loop turns."""
    result = store.commit_now(batch)
    assert result is not None
    visible = _journal_rows(path) == 0
    await asyncio.sleep(0)
    return visible


async def test_batches_that_read_what_they_write_are_written_to_the_tables_directly(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with SQLiteStore(path) as store:
        d = await Driver.start(store)

        staged = d.submit("staged")
        staged.state_ops.append(StateOp("put", run_namespace("staged"), "k", 1))
        assert await _visible_at_once(path, store, CommitBatch(d.epoch, [staged], []))

        rendered = d.submit("rendered")
        rendered.output_template = b'{"a": "${steps.a}"}'
        rendered.outputs.append(("a", -1, b"1"))
        assert await _visible_at_once(path, store, CommitBatch(d.epoch, [rendered], []))

        mapped = d.submit("mapped")
        mapped.outputs.append(("each", 0, b"1"))
        assert await _visible_at_once(path, store, CommitBatch(d.epoch, [mapped], []))

        # A claim its own batch cannot serve reads the ready tasks, the batch's own among them.
        await d.start_run("older", enqueue=[task("older", "a")])
        newer = d.submit("newer")
        newer.enqueue.append(task("newer", "a"))
        result = store.commit_now(CommitBatch(d.epoch, [newer], [claim_request("w1", limit=2)]))
        assert result is not None
        assert sorted(lease.task_id for lease in result.leases["w1"]) == ["newer/a", "older/a"]
        assert _journal_rows(path) == 0

        plain = d.submit("plain")
        assert not await _visible_at_once(path, store, CommitBatch(d.epoch, [plain], []))


async def test_without_durability_nothing_is_journaled(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with SQLiteStore(path, durable=False) as store:
        d = await Driver.start(store)
        assert await _visible_at_once(path, store, CommitBatch(d.epoch, [d.submit("r1")], []))


@pytest.mark.parametrize("runs", [3])
async def test_a_batch_of_many_runs_is_written_to_the_tables_directly(tmp_path: Path, runs: int) -> None:
    path = tmp_path / "covey.db"
    async with SQLiteStore(path) as store:
        d = await Driver.start(store)
        writes = [d.submit(f"r{i}") for i in range(runs)]
        assert await _visible_at_once(path, store, CommitBatch(d.epoch, writes, []))


async def test_the_writes_of_a_closing_store_are_applied(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with SQLiteStore(path) as store:
        d = await Driver.start(store)
        assert store.commit_now(CommitBatch(d.epoch, [d.submit("r1")], [])) is not None
    assert _journal_rows(path) == 0
    assert _runs(path) == ["r1"]


def test_the_journal_table_exists_in_a_new_file(tmp_path: Path) -> None:
    async def open_and_close() -> None:
        async with SQLiteStore(tmp_path / "covey.db"):
            pass

    asyncio.run(open_and_close())
    assert _sql(tmp_path / "covey.db", "SELECT name FROM sqlite_master WHERE name = 'journal'") == [
        ("journal",)
    ]
    assert os.path.exists(tmp_path / "covey.db")


def _open_wal_files(path: Path) -> list[str]:
    """This process's open file descriptors on ``path``'s WAL (Linux's /proc)."""
    fds = Path("/proc/self/fd")
    found = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed while listing
        if target == f"{path}-wal":
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc to list open files")
async def test_the_wal_is_flushed_behind_applied_writes_and_let_go_on_close(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with SQLiteStore(path) as store:
        d = await Driver.start(store)
        before = len(_open_wal_files(path))  # SQLite's own connection holds one
        assert store.commit_now(CommitBatch(d.epoch, [d.submit("r1")], [])) is not None
        await asyncio.sleep(0)  # applied, and the WAL handed to the flushing thread
        assert _runs(path) == ["r1"]
        assert len(_open_wal_files(path)) == before + 1
    assert _open_wal_files(path) == []


async def test_a_batch_with_a_large_output_is_written_to_the_tables_directly(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with SQLiteStore(path) as store:
        d = await Driver.start(store)
        small, large = d.submit("small"), d.submit("large")
        small.outputs.append(("a", -1, b'"' + b"x" * 1_000 + b'"'))
        large.outputs.append(("a", -1, b'"' + b"x" * 100_000 + b'"'))

        assert not await _visible_at_once(path, store, CommitBatch(d.epoch, [small], []))
        assert await _visible_at_once(path, store, CommitBatch(d.epoch, [large], []))
        assert _sql(path, "SELECT run_id, length(body) FROM outputs ORDER BY run_id") == [
            ("large", 100_002),
            ("small", 1_002),
        ]
