"""Conformance: ``purge_finished`` deletes finished runs past their retention, and everything that was theirs."""

from __future__ import annotations

import pytest

from covey.engine.commands import SetTimer
from covey.engine.events import RunFinished, SignalReceived
from covey.state.model import StateOp, run_namespace
from covey.store.base import Store
from covey.testing.conformance import StoreFactory
from covey.testing.conformance.driver import Driver, claim_request, inbox_row, task, wait_past

__all__ = ["TestRetention"]

HOUR_MS = 3_600_000


async def _finish(d: Driver, run_id: str, status: str = "succeeded") -> int:
    """Finish a run now (store clock); returns its ``finished_ms``."""
    at_ms = await d.store.now_ms()
    write = d.write(run_id, RunFinished(status, at_ms))
    write.status, write.finished_ms = status, at_ms
    await d.commit(write)
    return at_ms


async def _later(store: Store) -> int:
    """The store clock, once it has moved past its current reading."""
    return await wait_past(store, await store.now_ms())


async def _with_everything(d: Driver, run_id: str) -> None:
    """A run with a leased task, a ready one, a timer, outputs, a seen id, an inbox row and state."""
    store = d.store
    now = await store.now_ms()
    await d.start_run(
        run_id,
        {"n": 1},
        enqueue=[task(run_id, "a"), task(run_id, "b", target=f"only-{run_id}")],
        timers=[SetTimer(f"deadline:{run_id}", run_id, now + HOUR_MS, "run_deadline")],
        outputs=[("done", -1, {"v": run_id}), ("m", 0, "first"), ("m", 1, "second")],
    )
    (lease,) = await store.claim(claim_request(f"worker-{run_id}", [f"only-{run_id}"], limit=1))
    assert lease.run_id == run_id
    write = d.write(run_id)
    write.seen.append(f"signal-of-{run_id}")
    await d.commit(write)
    namespace = run_namespace(run_id)
    await store.state_apply([StateOp("put", namespace, "k", {"of": run_id})])
    await store.append_inbox(
        [inbox_row(f"row-of-{run_id}", run_id, SignalReceived(f"s-{run_id}", "go", None, 0))]
    )


@pytest.mark.asyncio
class TestRetention:
    """Finished runs purged oldest first, within a limit; running and recent ones kept; nothing left behind."""

    async def test_only_runs_finished_before_the_cutoff_go_oldest_first(self, store: Store) -> None:
        d = await Driver.start(store)
        for run_id in ("r1", "r2", "r3", "r4"):
            await d.start_run(run_id)
        await _finish(d, "r2", "failed")
        await _later(store)
        await _finish(d, "r1")
        cutoff = await _later(store)
        await _finish(d, "r3", "cancelled")

        assert await store.purge_finished(cutoff, 10) == ["r2", "r1"]

        assert await store.get_run("r1") is None
        assert await store.get_run("r2") is None
        assert (await store.get_run("r3")).status == "cancelled"  # type: ignore[union-attr]
        assert (await store.get_run("r4")).status == "running"  # type: ignore[union-attr]
        assert sorted(r.run_id for r in await store.list_runs()) == ["r3", "r4"]
        assert await store.purge_finished(cutoff, 10) == []

    async def test_a_running_run_is_kept_however_old(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("old")
        later = await _later(store)

        assert await store.purge_finished(later + HOUR_MS, 10) == []
        assert (await store.get_run("old")).status == "running"  # type: ignore[union-attr]

    async def test_the_limit_bounds_one_call(self, store: Store) -> None:
        d = await Driver.start(store)
        for run_id in ("r1", "r2", "r3"):
            await d.start_run(run_id)
            await _finish(d, run_id)
            await _later(store)
        cutoff = await store.now_ms()

        assert await store.purge_finished(cutoff, 2) == ["r1", "r2"]
        assert await store.purge_finished(cutoff, 2) == ["r3"]
        assert await store.purge_finished(cutoff, 2) == []
        assert await store.list_runs() == []

    async def test_a_purged_run_leaves_nothing_behind_and_others_keep_theirs(self, store: Store) -> None:
        d = await Driver.start(store)
        await _with_everything(d, "gone")
        await _with_everything(d, "kept")
        await _finish(d, "gone")
        cutoff = await _later(store)

        assert await store.purge_finished(cutoff, 10) == ["gone"]

        namespace = run_namespace("gone")
        assert await store.get_run("gone") is None
        assert await store.load_history("gone") == []
        assert await store.load_histories(["gone"]) == {}
        assert await store.list_tasks("gone") == []
        assert await store.get_outputs("gone", ["done", "m"]) == {"done": None, "m": None}
        assert await store.seen(["signal-of-gone"]) == set()
        assert await store.state_get(namespace, "k") is None
        assert await store.state_list(namespace) == []
        assert await store.state_changes(namespace, 0) == []
        assert [row.run_id for row in await store.read_inbox(0, 100)] == ["kept"]
        # Its ready task is no longer claimable, and neither its timer nor its lease fires.
        leases = await store.claim(claim_request("w9", ["echo"], limit=10))
        assert [lease.run_id for lease in leases] == ["kept"]

        history = await store.load_history("kept")
        assert [event["type"] for event in history][:1] == ["RunSubmitted"]
        assert (await store.get_run("kept")).status == "running"  # type: ignore[union-attr]
        assert {t.step for t in await store.list_tasks("kept")} == {"a", "b"}
        assert await store.get_outputs("kept", ["done", "m"]) == {
            "done": {"v": "kept"},
            "m": ["first", "second"],
        }
        assert await store.seen(["signal-of-kept"]) == {"signal-of-kept"}
        assert (await store.state_get(run_namespace("kept"), "k")).value == {"of": "kept"}  # type: ignore[union-attr]
        assert len(await store.state_changes(run_namespace("kept"), 0)) == 1

    async def test_a_purged_runs_lease_and_timers_never_fire(self, store: Store) -> None:
        d = await Driver.start(store)
        now = await store.now_ms()
        await d.start_run(
            "gone",
            enqueue=[task("gone", "a")],
            timers=[SetTimer("retry:gone/x", "gone", now + 50, "retry", "gone/x", 1)],
        )
        (lease,) = await store.claim(claim_request("w1", ["echo"], limit=1, lease_ms=50))
        assert lease.run_id == "gone"
        await _finish(d, "gone")
        cutoff = await _later(store)

        assert await store.purge_finished(cutoff, 10) == ["gone"]
        await wait_past(store, now + 100)

        assert await store.fire_due(10) == 0
        assert await store.next_due_ms() is None
        assert await store.read_inbox(0, 100) == []

    async def test_a_run_purged_by_one_connection_is_gone_for_another(
        self, store: Store, store_factory: StoreFactory
    ) -> None:
        d = await Driver.start(store)
        await d.start_run("r1")
        await _finish(d, "r1")
        cutoff = await _later(store)
        async with store_factory() as other:
            assert await other.purge_finished(cutoff, 10) == ["r1"]

        assert await store.get_run("r1") is None
        assert await store.purge_finished(cutoff, 10) == []
