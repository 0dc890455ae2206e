"""Conformance: reading runs and tasks, and finding everything again after reopening the store."""

from __future__ import annotations

import orjson
import pytest

from covey.engine.commands import SetTimer
from covey.engine.events import RunFinished, RunSubmitted, SignalReceived
from covey.store.base import Store, WorkerInfo
from covey.testing.conformance import StoreFactory
from covey.testing.conformance.driver import SPEC, Driver, claim_request, inbox_row, task, wait_past

__all__ = ["TestReads"]

HOUR_MS = 3_600_000


async def _finish(d: Driver, run_id: str, status: str) -> None:
    write = d.write(run_id, RunFinished(status, 1))
    write.status, write.finished_ms = status, 1
    await d.commit(write)


@pytest.mark.asyncio
class TestReads:
    """get_run, list_runs, list_tasks, and durability across reopening."""

    async def test_unknown_runs_read_as_absent(self, store: Store) -> None:
        assert await store.get_run("missing") is None
        assert await store.list_tasks("missing") == []
        assert await store.list_runs() == []
        assert await store.load_histories([]) == {}

    async def test_many_run_ids_load_each_history_once(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1")
        await d.commit(d.write("r1"))
        ids = ["r1", *(f"missing-{n}" for n in range(999)), "r1"]

        found = await store.load_histories(ids)

        assert list(found) == ["r1"]
        assert [e["type"] for e in found["r1"]] == ["RunSubmitted", "SignalReceived"]

    async def test_the_backlog_counts_running_runs_and_waiting_inputs(self, store: Store) -> None:
        d = await Driver.start(store)
        assert await store.backlog() == 0
        for run_id in ("r1", "r2", "r3"):
            await d.start_run(run_id)
        await _finish(d, "r2", "succeeded")
        assert await store.backlog() == 2  # r1 and r3 run; r2 is done

        await store.append_inbox(
            [
                inbox_row("submit:r4", "r4", RunSubmitted("r4", dict(SPEC), None, 1)),
                inbox_row("signal:r1:s", "r1", SignalReceived("signal:r1:s", "go", None, 1)),
            ]
        )
        assert await store.backlog() == 4  # and two inputs wait to be decided

        rows = await store.read_inbox(0, 10)
        await d.commit(consumed=[row.seq for row in rows])
        await _finish(d, "r1", "cancelled")
        assert await store.backlog() == 1

    async def test_runs_are_listed_newest_first_and_filtered_by_status(self, store: Store) -> None:
        d = await Driver.start(store)
        for run_id in ("r1", "r2", "r3"):
            await d.start_run(run_id)
            await wait_past(store, await store.now_ms())
        await _finish(d, "r2", "succeeded")
        await _finish(d, "r1", "failed")

        assert [r.run_id for r in await store.list_runs()] == ["r3", "r2", "r1"]
        assert [r.run_id for r in await store.list_runs(limit=2)] == ["r3", "r2"]
        assert [r.run_id for r in await store.list_runs(status="running")] == ["r3"]
        assert [r.run_id for r in await store.list_runs(status="succeeded")] == ["r2"]
        assert [r.run_id for r in await store.list_runs(status="failed")] == ["r1"]
        assert [r.status for r in await store.list_runs()] == ["running", "succeeded", "failed"]

    async def test_a_commit_moves_updated_ms_but_not_created_ms(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1")
        first = await store.get_run("r1")
        assert first is not None
        await wait_past(store, first.updated_ms)

        await d.commit(d.write("r1"))

        later = await store.get_run("r1")
        assert later is not None
        assert later.created_ms == first.created_ms
        assert later.updated_ms > first.updated_ms
        assert later.seq == first.seq + 1

    async def test_everything_committed_is_there_after_reopening(self, store_factory: StoreFactory) -> None:
        # Given a store with a run, tasks (one leased), a timer, outputs, an inbox row, a seen id and a worker,
        async with store_factory() as first:
            d = await Driver.start(first)
            now = await first.now_ms()
            write = await d.start_run(
                "r1",
                {"q": 1},
                enqueue=[task("r1", "a"), task("r1", "b", target="later")],
                timers=[SetTimer("t1", "r1", now + HOUR_MS, "retry")],
                outputs=[("o", -1, {"v": 2})],
            )
            seen = d.write("r1")
            seen.seen.append("sig-1")
            await d.commit(seen)
            (lease,) = await first.claim(claim_request())
            await first.append_inbox([inbox_row("i1", "r1", RunFinished("x", 1))])
            worker = WorkerInfo("w1", frozenset({"echo"}), {}, 2, now, now)
            await first.register_worker(worker)
        # when it is closed and opened again,
        async with store_factory() as second:
            # then everything is there, and a new epoch is higher and voids the old lease.
            info = await second.get_run("r1")
            assert info is not None
            assert (info.seq, info.input, info.status) == (2, {"q": 1}, "running")
            history = await second.load_history("r1")
            assert len(history) == 2
            assert history[0]["workflow"] == SPEC
            assert orjson.loads(write.events[0][3])["run_id"] == history[0]["run_id"]
            tasks = {t.task_id: (t.status, t.lease_no) for t in await second.list_tasks("r1")}
            assert tasks == {"r1/a": ("leased", 1), "r1/b": ("ready", 0)}
            assert await second.next_due_ms() == lease.lease_until_ms
            assert await second.get_outputs("r1", ["o"]) == {"o": {"v": 2}}
            assert [r.id for r in await second.read_inbox(0, 10)] == ["i1"]
            assert await second.seen(["sig-1"]) == {"sig-1"}
            assert await second.list_workers() == [worker]
            assert await second.begin_epoch() > d.epoch
            statuses = {t.task_id: t.status for t in await second.list_tasks("r1")}
            assert statuses == {"r1/a": "expired", "r1/b": "ready"}
