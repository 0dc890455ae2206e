"""Conformance: leases are extended by heartbeat, given back by release, voided by a new epoch."""

from __future__ import annotations

import pytest

from covey.store.base import Store
from covey.testing.conformance.driver import Driver, claim_request, task, wait_past

__all__ = ["TestLeases"]


@pytest.mark.asyncio
class TestLeases:
    """Heartbeat, release and begin_epoch, all fenced by lease number."""

    async def test_heartbeat_extends_the_workers_leases(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a")])
        (lease,) = await store.claim(claim_request(lease_ms=1_000))
        before = await store.now_ms()

        lost = await store.heartbeat("w1", [(lease.task_id, lease.lease_no)], 60_000)

        after = await store.now_ms()
        assert lost == []
        (row,) = await store.list_tasks("r1")
        assert row.lease_until_ms is not None
        assert before + 60_000 <= row.lease_until_ms <= after + 60_000
        assert (row.status, row.worker_id, row.lease_no) == ("leased", "w1", lease.lease_no)

    async def test_heartbeat_never_extends_past_the_try_deadline(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a", timeout_ms=30_000)])
        (lease,) = await store.claim(claim_request(lease_ms=1_000))
        deadline = lease.lease_until_ms - 1_000 + 30_000

        assert await store.heartbeat("w1", [(lease.task_id, lease.lease_no)], 120_000) == []

        (row,) = await store.list_tasks("r1")
        assert row.lease_until_ms == deadline

    async def test_heartbeat_reports_the_leases_a_worker_no_longer_holds(self, store: Store) -> None:
        # Given w1 holding four leases,
        d = await Driver.start(store)
        await d.start_run(
            "r1",
            enqueue=[
                task("r1", "dropped"),
                task("r1", "taken"),
                task("r1", "kept"),
                task("r1", "short", target="s"),
            ],
        )
        held = {lease.step: lease for lease in await store.claim(claim_request("w1", limit=3))}
        (short,) = await store.claim(claim_request("w1", ["s"], lease_ms=30))
        held["short"] = short
        # when one is dropped by the engine, one released and leased to w2, and one expires,
        await d.update("r1", drop=["r1/dropped"])
        taken = held["taken"]
        await store.release("w1", [(taken.task_id, taken.lease_no)])
        (retaken,) = await store.claim(claim_request("w2"))
        assert retaken.task_id == "r1/taken"
        await wait_past(store, short.lease_until_ms)
        assert await store.fire_due(10) == 1
        pairs = [(lease.task_id, lease.lease_no) for lease in held.values()]

        # then w1's heartbeat names those three, and w2's names what w2 does not hold.
        lost = await store.heartbeat("w1", pairs, 60_000)
        assert sorted(lost) == ["r1/dropped", "r1/short", "r1/taken"]
        kept = held["kept"]
        assert await store.heartbeat("w1", [(kept.task_id, kept.lease_no + 1)], 60_000) == [kept.task_id]
        assert await store.heartbeat("w2", [(kept.task_id, kept.lease_no)], 60_000) == [kept.task_id]
        assert await store.heartbeat("w2", [(retaken.task_id, retaken.lease_no)], 60_000) == []

    async def test_release_makes_tasks_ready_and_the_next_lease_higher(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a")])
        (lease,) = await store.claim(claim_request("w1"))
        pair = (lease.task_id, lease.lease_no)

        await store.release("w2", [pair])
        await store.release("w1", [(lease.task_id, lease.lease_no + 1)])
        (still,) = await store.list_tasks("r1")
        assert (still.status, still.worker_id) == ("leased", "w1")

        await store.release("w1", [pair])

        (row,) = await store.list_tasks("r1")
        assert (row.status, row.worker_id, row.lease_no) == ("ready", None, 1)
        assert await store.heartbeat("w1", [pair], 1_000) == [lease.task_id]
        (again,) = await store.claim(claim_request("w2"))
        assert (again.task_id, again.lease_no) == (lease.task_id, 2)
        assert await store.next_due_ms() == again.lease_until_ms

    async def test_a_new_epoch_voids_every_lease(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a"), task("r1", "b", target="later")])
        (lease,) = await store.claim(claim_request("w1", lease_ms=30))

        epoch = await store.begin_epoch()

        assert epoch > d.epoch
        tasks = {t.task_id: t.status for t in await store.list_tasks("r1")}
        assert tasks == {"r1/a": "expired", "r1/b": "ready"}
        (row,) = await store.read_inbox(0, 10)
        assert row.run_id == "r1"
        assert row.event["type"] == "TimerFired"
        assert (row.event["kind"], row.event["task_id"], row.event["lease_no"]) == ("lease_voided", "r1/a", 1)
        assert await store.heartbeat("w1", [(lease.task_id, lease.lease_no)], 60_000) == [lease.task_id]
        assert await store.claim(claim_request("w2")) == []
        assert [x.task_id for x in await store.claim(claim_request("w2", ["later"]))] == ["r1/b"]
        # A voided lease is reported once: its deadline passing later fires nothing more.
        await wait_past(store, lease.lease_until_ms)
        assert await store.fire_due(10) == 0
        assert len(await store.read_inbox(0, 10)) == 1
