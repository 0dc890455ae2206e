"""Conformance: ``fire_due`` moves due timers and ended leases into the inbox, exactly once."""

from __future__ import annotations

import pytest

from covey.engine.commands import SetTimer
from covey.engine.events import TimerFired, event_from_json
from covey.store.base import InboxRow, Store
from covey.testing.conformance.driver import Driver, claim_request, task, wait_past

__all__ = ["TestTimers"]

HOUR_MS = 3_600_000


def _fired(rows: list[InboxRow]) -> list[TimerFired]:
    events = [event_from_json(row.event) for row in rows]
    assert all(isinstance(e, TimerFired) for e in events), events
    return [e for e in events if isinstance(e, TimerFired)]


@pytest.mark.asyncio
class TestTimers:
    """Timers are data: firing deletes the row and appends TimerFired in the same transaction."""

    async def test_a_due_timer_fires_once_and_a_later_one_waits(self, store: Store) -> None:
        d = await Driver.start(store)
        now = await store.now_ms()
        await d.start_run(
            "r1",
            timers=[
                SetTimer("retry:r1/a", "r1", now - 10, "retry", "r1/a", 3),
                SetTimer("deadline:r1", "r1", now + HOUR_MS, "run_deadline"),
            ],
        )

        assert await store.fire_due(10) == 1
        assert await store.fire_due(10) == 0

        rows = await store.read_inbox(0, 10)
        assert [row.run_id for row in rows] == ["r1"]
        (fired,) = _fired(rows)
        assert (fired.timer_id, fired.kind, fired.task_id, fired.lease_no) == (
            "retry:r1/a",
            "retry",
            "r1/a",
            3,
        )
        assert fired.at_ms >= now - 10
        assert await store.next_due_ms() == now + HOUR_MS

    async def test_a_timer_fires_when_its_time_comes(self, store: Store) -> None:
        d = await Driver.start(store)
        due = await store.now_ms() + 250  # long enough that the first fire_due comes before it, unless loaded
        await d.start_run("r1", timers=[SetTimer("soon", "r1", due, "wait_timeout", "approve")])
        assert await store.next_due_ms() == due
        early = await store.fire_due(10)
        if await store.now_ms() < due:  # on a machine so loaded that 250 ms passed, "early" is not observable
            assert early == 0
            await wait_past(store, due)
            assert await store.fire_due(10) == 1
        else:
            assert early + await store.fire_due(10) == 1

        (fired,) = _fired(await store.read_inbox(0, 10))
        assert (fired.timer_id, fired.kind, fired.task_id, fired.lease_no) == (
            "soon",
            "wait_timeout",
            "approve",
            0,
        )
        assert fired.at_ms >= due
        assert await store.next_due_ms() is None

    async def test_fire_due_respects_its_limit_and_loses_nothing(self, store: Store) -> None:
        d = await Driver.start(store)
        now = await store.now_ms()
        await d.start_run("r1", timers=[SetTimer(f"t{n}", "r1", now - n - 1, "retry") for n in range(5)])

        first = await store.fire_due(2)
        total = first
        for _ in range(5):
            total += await store.fire_due(2)

        assert 1 <= first <= 2
        assert total == 5
        fired = _fired(await store.read_inbox(0, 100))
        assert sorted(e.timer_id for e in fired) == [f"t{n}" for n in range(5)]

    async def test_an_expired_lease_fires_lease_expired(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a")])
        (lease,) = await store.claim(claim_request(lease_ms=30))
        assert await store.next_due_ms() == lease.lease_until_ms

        await wait_past(store, lease.lease_until_ms)
        assert await store.fire_due(10) == 1
        assert await store.fire_due(10) == 0

        (row,) = await store.list_tasks("r1")
        assert row.status == "expired"
        (fired,) = _fired(await store.read_inbox(0, 10))
        assert (fired.kind, fired.task_id, fired.lease_no) == ("lease_expired", "r1/a", 1)
        assert await store.next_due_ms() is None
        assert await store.claim(claim_request("w2")) == []

    async def test_a_lease_at_its_try_deadline_fires_try_timeout(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a", timeout_ms=30)])
        (lease,) = await store.claim(claim_request(lease_ms=60_000))

        await wait_past(store, lease.lease_until_ms)
        assert await store.fire_due(10) == 1

        (fired,) = _fired(await store.read_inbox(0, 10))
        assert (fired.kind, fired.task_id, fired.lease_no) == ("try_timeout", "r1/a", 1)
        (row,) = await store.list_tasks("r1")
        assert row.status == "expired"

    async def test_a_heartbeat_keeps_a_lease_from_expiring(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a")])
        (lease,) = await store.claim(claim_request(lease_ms=30))
        assert await store.heartbeat("w1", [(lease.task_id, lease.lease_no)], 60_000) == []

        await wait_past(store, lease.lease_until_ms)

        assert await store.fire_due(10) == 0
        (row,) = await store.list_tasks("r1")
        assert row.status == "leased"

    async def test_next_due_is_the_earliest_timer_or_lease(self, store: Store) -> None:
        assert await store.next_due_ms() is None
        d = await Driver.start(store)
        now = await store.now_ms()
        await d.start_run(
            "r1",
            enqueue=[task("r1", "a")],
            timers=[
                SetTimer("late", "r1", now + 2 * HOUR_MS, "retry"),
                SetTimer("soon", "r1", now + HOUR_MS, "retry"),
            ],
        )
        assert await store.next_due_ms() == now + HOUR_MS

        (lease,) = await store.claim(claim_request(lease_ms=60_000))
        assert await store.next_due_ms() == lease.lease_until_ms

        await d.update("r1", drop=["r1/a"], cancel_timers=["soon"])
        assert await store.next_due_ms() == now + 2 * HOUR_MS
