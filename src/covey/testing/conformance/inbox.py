"""Conformance: the inbox is an ordered, idempotent queue of rows for the engine loop."""

from __future__ import annotations

import pytest

from covey.engine.events import CancelRequested, SignalReceived, TaskSucceeded, event_to_json
from covey.store.base import InboxRow, Store
from covey.testing.conformance.driver import Driver, inbox_row

__all__ = ["TestInbox"]


def _signal(row_id: str, run_id: str = "r1", payload: object = None) -> InboxRow:
    return inbox_row(row_id, run_id, SignalReceived(row_id, "go", payload, 0))


@pytest.mark.asyncio
class TestInbox:
    """append_inbox / read_inbox: order, paging, idempotency, seen ids."""

    async def test_rows_come_back_in_order_with_increasing_seq(self, store: Store) -> None:
        report = TaskSucceeded("r1/a", 2, 5, [["x", 1]])
        await store.append_inbox(
            [_signal("s1", payload={"k": [1, 2]}), inbox_row("rep", "r2", report, {"x": 1})]
        )
        await store.append_inbox([inbox_row("c1", "r1", CancelRequested(7, "a"))])

        rows = await store.read_inbox(0, 100)

        assert [(r.id, r.run_id) for r in rows] == [("s1", "r1"), ("rep", "r2"), ("c1", "r1")]
        seqs = [r.seq for r in rows]
        assert seqs == sorted(set(seqs))
        assert seqs[0] > 0
        assert rows[0].event == event_to_json(SignalReceived("s1", "go", {"k": [1, 2]}, 0))
        assert rows[1].event == event_to_json(report)
        assert rows[1].output == b'{"x":1}'
        assert rows[0].output is None
        assert rows[2].event == event_to_json(CancelRequested(7, "a"))

    async def test_reading_pages_through_the_inbox(self, store: Store) -> None:
        await store.append_inbox([_signal(f"s{n}") for n in range(7)])

        seen: list[str] = []
        cursor = 0
        pages = 0
        while page := await store.read_inbox(cursor, 3):
            assert len(page) <= 3
            assert all(row.seq > cursor for row in page)
            seen.extend(row.id for row in page)
            cursor = page[-1].seq
            pages += 1

        assert seen == [f"s{n}" for n in range(7)]
        assert pages == 3
        assert await store.read_inbox(0, 0) == []

    async def test_appending_is_idempotent_by_id(self, store: Store) -> None:
        await store.append_inbox([_signal("s1", payload="first"), _signal("s1", payload="again")])
        await store.append_inbox([_signal("s1", payload="later"), _signal("s2")])

        rows = await store.read_inbox(0, 100)

        assert [r.id for r in rows] == ["s1", "s2"]
        assert rows[0].event["payload"] == "first"

    async def test_ids_already_committed_as_seen_are_ignored(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1")
        write = d.write("r1", SignalReceived("sig-1", "go", None, 0))
        write.seen.append("sig-1")
        await d.commit(write)

        await store.append_inbox([_signal("sig-1"), _signal("sig-2")])

        assert [r.id for r in await store.read_inbox(0, 100)] == ["sig-2"]

    async def test_rows_appended_after_consumed_ones_come_after_the_cursor(self, store: Store) -> None:
        # The engine loop reads from a cursor; a sequence number reused after a delete would be skipped.
        d = await Driver.start(store)
        await store.append_inbox([_signal("s1", "unknown"), _signal("s2", "unknown")])
        rows = await store.read_inbox(0, 10)
        cursor = rows[-1].seq
        await d.commit(consumed=[row.seq for row in rows])
        assert await store.read_inbox(0, 10) == []

        await store.append_inbox([_signal("s3", "unknown")])

        (row,) = await store.read_inbox(cursor, 10)
        assert row.id == "s3"
        assert row.seq > cursor

    async def test_a_report_keeps_its_staged_state_writes(self, store: Store) -> None:
        ops = [
            {
                "op": "update",
                "namespace": "run:r1",
                "key": "n",
                "value": 2,
                "reducer": "add",
                "if_version": None,
            }
        ]
        row = inbox_row("rep", "r1", TaskSucceeded("r1/a", 1, 5, []), {"x": 1})
        await store.append_inbox([InboxRow(row.id, row.run_id, row.event, output=row.output, state_ops=ops)])
        await store.append_inbox([_signal("s1")])
        rows = await store.read_inbox(0, 10)
        assert rows[0].state_ops == ops
        assert rows[1].state_ops is None
