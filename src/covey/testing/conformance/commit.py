"""Conformance: ``commit`` writes a batch atomically, checking each run's sequence and the epoch."""

from __future__ import annotations

import orjson
import pytest

from covey.engine.commands import SetTimer
from covey.engine.events import RunFinished, RunSubmitted, SignalReceived, TaskReady, event_to_json
from covey.errors import Conflict
from covey.store.base import RunWrite, Store
from covey.testing.conformance import StoreFactory
from covey.testing.conformance.driver import (
    SPEC,
    WORKFLOW,
    Driver,
    claim_request,
    inbox_row,
    task,
)

__all__ = ["TestCommit"]

FAR_MS = 3_600_000


@pytest.mark.asyncio
class TestCommit:
    """Group commit: events, task rows, timers, outputs, consumed inbox rows and seen ids, all or nothing."""

    async def test_new_run_is_written_with_all_its_rows(self, store: Store) -> None:
        d = await Driver.start(store)
        before = await store.now_ms()
        due = before + FAR_MS
        await d.start_run(
            "r1",
            {"q": "hello"},
            enqueue=[task("r1", "a"), task("r1", "m", 0, item=1), task("r1", "m", 1, item=2)],
            timers=[SetTimer("deadline:r1", "r1", due, "run_deadline")],
            outputs=[("lit", -1, {"v": 1})],
        )
        after = await store.now_ms()

        info = await store.get_run("r1")
        assert info is not None
        assert (info.run_id, info.workflow, info.status, info.seq) == ("r1", WORKFLOW, "running", 1)
        assert info.input == {"q": "hello"}
        assert (info.output, info.error, info.finished_ms) == (None, None, None)
        assert before <= info.created_ms <= after
        assert before <= info.updated_ms <= after
        assert [r.run_id for r in await store.list_runs()] == ["r1"]
        tasks = await store.list_tasks("r1")
        assert [(t.task_id, t.step, t.index, t.status, t.try_no, t.lease_no) for t in tasks] == [
            ("r1/a", "a", -1, "ready", 1, 0),
            ("r1/m/0", "m", 0, "ready", 1, 0),
            ("r1/m/1", "m", 1, "ready", 1, 0),
        ]
        assert all(t.worker_id is None for t in tasks)
        assert await store.next_due_ms() == due
        assert await store.get_outputs("r1", ["lit"]) == {"lit": {"v": 1}}

    async def test_history_is_in_order_with_the_pinned_spec_filled_in(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", {"q": 1})
        await d.commit(d.write("r1", TaskReady("r1/a", 1, 5), SignalReceived("s1", "go", {"p": 1}, 6)))
        await d.commit(d.write("r1", RunFinished("succeeded", 7)))
        await d.start_run("r2", [1, 2])

        history = await store.load_history("r1")
        submitted = event_to_json(RunSubmitted("r1", SPEC, {"q": 1}, 0))
        assert history == [
            submitted,
            event_to_json(TaskReady("r1/a", 1, 5)),
            event_to_json(SignalReceived("s1", "go", {"p": 1}, 6)),
            event_to_json(RunFinished("succeeded", 7)),
        ]
        both = await store.load_histories(["r2", "missing", "r1"])
        assert set(both) == {"r1", "r2"}
        assert both["r1"] == history
        assert [e["type"] for e in both["r2"]] == ["RunSubmitted"]
        assert both["r2"][0]["workflow"] == SPEC
        assert both["r2"][0]["input"] == [1, 2]
        assert await store.load_history("missing") == []
        info = await store.get_run("r1")
        assert info is not None
        assert info.seq == 4

    async def test_wrong_expected_seq_leaves_that_run_out_and_commits_the_others(self, store: Store) -> None:
        # Given two runs, and a write for "b" built from a cached state that another commit made stale.
        d = await Driver.start(store)
        await d.start_run("a", enqueue=[task("a", "s")])
        await d.start_run("b", enqueue=[task("b", "s")])
        await store.append_inbox([inbox_row("ib", "b", SignalReceived("sig-b", "go", None, 0))])
        (row,) = await store.read_inbox(0, 10)
        stale = d.write("b", SignalReceived("sig-b", "go", None, 0))
        await d.commit(d.write("b"))
        now = await store.now_ms()
        stale.enqueue.append(task("b", "t"))
        stale.drop.append("b/s")
        stale.set_timers.append(SetTimer("tb", "b", now - 1, "retry"))
        stale.outputs.append(("s", -1, b'"lost"'))
        stale.consumed.append(row.seq)
        stale.seen.append("sig-b")
        stale.status, stale.finished_ms = "succeeded", now
        good = d.write("a")
        good.enqueue.append(task("a", "t"))
        good.outputs.append(("s", -1, b'"kept"'))

        # When both are committed in one batch,
        result = await d.commit(good, stale)

        # Then "b" is reported and unchanged, and "a" is written.
        assert result.conflicts == {"b"}
        b = await store.get_run("b")
        assert b is not None
        assert (b.status, b.seq, b.finished_ms) == ("running", 2, None)
        assert len(await store.load_history("b")) == 2
        assert [t.task_id for t in await store.list_tasks("b")] == ["b/s"]
        assert await store.get_outputs("b", ["s"]) == {"s": None}
        assert await store.seen(["sig-b"]) == set()
        assert [r.id for r in await store.read_inbox(0, 10)] == ["ib"]
        assert await store.fire_due(10) == 0
        a = await store.get_run("a")
        assert a is not None
        assert a.seq == 2
        assert [t.task_id for t in await store.list_tasks("a")] == ["a/s", "a/t"]
        assert await store.get_outputs("a", ["s"]) == {"s": "kept"}

    async def test_submitting_an_existing_run_again_is_a_conflict(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", {"first": True}, enqueue=[task("r1", "a")])

        result = await d.commit(d.submit("r1", {"first": False}))

        assert result.conflicts == {"r1"}
        info = await store.get_run("r1")
        assert info is not None
        assert info.input == {"first": True}
        assert len(await store.load_history("r1")) == 1

    async def test_a_later_write_for_a_run_that_does_not_exist_is_a_conflict(self, store: Store) -> None:
        d = await Driver.start(store)
        orphan = RunWrite("ghost", expected_seq=0, new_seq=1)
        orphan.events.append(
            (1, "SignalReceived", 0, orjson.dumps(event_to_json(SignalReceived("s", "n", 1, 0))))
        )
        orphan.enqueue.append(task("ghost", "a"))

        result = await d.commit(orphan)

        assert result.conflicts == {"ghost"}
        assert await store.get_run("ghost") is None
        assert await store.load_history("ghost") == []
        assert await store.list_tasks("ghost") == []

    async def test_a_stale_epoch_fails_the_whole_commit(
        self, store: Store, store_factory: StoreFactory
    ) -> None:
        # Given an owner with a run, a ready task and an inbox row,
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a")])
        await store.append_inbox([inbox_row("x", "unknown", SignalReceived("x", "n", None, 0))])
        (row,) = await store.read_inbox(0, 10)
        # when another process takes over,
        async with store_factory() as other:
            newer = await other.begin_epoch()
            assert newer > d.epoch
            # then the old owner's commit writes nothing at all,
            stale = d.write("r1")
            stale.enqueue.append(task("r1", "b"))
            with pytest.raises(Conflict):
                await d.commit(d.submit("r2"), stale, claims=[claim_request()], consumed=[row.seq])
            assert await store.get_run("r2") is None
            info = await store.get_run("r1")
            assert info is not None
            assert info.seq == 1
            assert [(t.task_id, t.status) for t in await store.list_tasks("r1")] == [("r1/a", "ready")]
            assert [r.seq for r in await store.read_inbox(0, 10)] == [row.seq]
            # and the new owner commits under its epoch.
            result = await Driver(other, newer).commit(d.submit("r2"))
            assert result.conflicts == set()
        assert await store.get_run("r2") is not None

    async def test_finishing_a_run_renders_its_output_from_stored_outputs(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", {"q": "why"}, outputs=[("a", -1, {"x": 1, "y": 2})])
        await d.update("r1", outputs=[("m", 1, "one"), ("m", 0, "zero")])
        finish = d.write("r1", RunFinished("succeeded", 9))
        finish.outputs.append(("m", 2, b'"two"'))
        finish.status, finish.finished_ms = "succeeded", 9
        template = {"x": "${steps.a.x}", "m": "${steps.m}", "q": "${input.q}", "text": "got ${steps.a.y}"}
        finish.output_template = orjson.dumps(template)

        result = await d.commit(finish)

        assert result.conflicts == set()
        info = await store.get_run("r1")
        assert info is not None
        assert (info.status, info.finished_ms) == ("succeeded", 9)
        assert info.output == {"x": 1, "m": ["zero", "one", "two"], "q": "why", "text": "got 2"}
        assert [r.run_id for r in await store.list_runs(status="succeeded")] == ["r1"]
        assert await store.list_runs(status="running") == []

    async def test_finishing_a_run_with_its_last_step_renders_its_output_and_only_if_it_commits(
        self, store: Store
    ) -> None:
        # The usual end of a run: the commit that finishes it also writes the output its mapping names.
        d = await Driver.start(store)
        await d.start_run("r1", {"q": 1})

        def finish() -> RunWrite:
            write = d.write("r1", RunFinished("succeeded", 9))
            write.outputs.append(("b", -1, b'{"k": [1, 2]}'))
            write.status, write.finished_ms = "succeeded", 9
            write.output_template = orjson.dumps({"b": "${steps.b.k}", "n": "${length(steps.b.k)}"})
            return write

        stale = finish()
        stale.expected_seq -= 1  # decided on an old state: its sequence check fails
        assert (await d.commit(stale)).conflicts == {"r1"}
        info = await store.get_run("r1")
        assert info is not None
        assert (info.status, info.output) == ("running", None)

        result = await d.commit(finish())

        assert result.conflicts == set()
        info = await store.get_run("r1")
        assert info is not None
        assert (info.status, info.output) == ("succeeded", {"b": [1, 2], "n": 2})

    async def test_an_output_mapping_that_fails_records_the_error_as_output(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", {"q": "text"})
        finish = d.write("r1", RunFinished("succeeded", 9))
        finish.status, finish.finished_ms = "succeeded", 9
        finish.output_template = orjson.dumps({"n": "${abs(input.q)}"})

        await d.commit(finish)

        info = await store.get_run("r1")
        assert info is not None
        assert info.status == "succeeded"
        assert isinstance(info.output, dict)
        assert "abs" in info.output["error"]

    async def test_a_failed_run_keeps_its_error_and_output(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1")
        error = {"step": "a", "kind": "error", "message": "boom"}
        finish = d.write("r1", RunFinished("failed", 9, error))
        finish.status, finish.finished_ms, finish.error = "failed", 9, orjson.dumps(error)
        finish.output = orjson.dumps({"partial": True})

        await d.commit(finish)

        info = await store.get_run("r1")
        assert info is not None
        assert (info.status, info.error, info.output, info.finished_ms) == (
            "failed",
            error,
            {"partial": True},
            9,
        )

    async def test_drops_and_timer_cancels_apply(self, store: Store) -> None:
        d = await Driver.start(store)
        now = await store.now_ms()
        await d.start_run(
            "r1",
            enqueue=[task("r1", "a"), task("r1", "b")],
            timers=[
                SetTimer("t1", "r1", now - 2, "retry", "r1/a", 1),
                SetTimer("t2", "r1", now - 1, "retry"),
            ],
        )

        await d.update("r1", drop=["r1/a"], cancel_timers=["t1"])

        assert [t.task_id for t in await store.list_tasks("r1")] == ["r1/b"]
        assert await store.fire_due(10) == 1
        assert [r.event["timer_id"] for r in await store.read_inbox(0, 10)] == ["t2"]

    async def test_consumed_inbox_rows_are_deleted(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1")
        await store.append_inbox(
            [inbox_row(f"i{n}", "r1", SignalReceived(f"i{n}", "go", n, 0)) for n in range(3)]
            + [inbox_row("u", "unknown", SignalReceived("u", "go", None, 0))]
        )
        rows = {r.id: r.seq for r in await store.read_inbox(0, 10)}
        write = d.write("r1")
        write.consumed.extend([rows["i0"], rows["i2"]])

        await d.commit(write, consumed=[rows["u"]])

        assert [r.id for r in await store.read_inbox(0, 10)] == ["i1"]

    async def test_seen_ids_are_remembered(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1")
        write = d.write("r1", SignalReceived("sig-1", "go", None, 0))
        write.seen.append("sig-1")
        assert await store.seen(["sig-1"]) == set()

        await d.commit(write)

        assert await store.seen(["sig-1", "sig-2"]) == {"sig-1"}
        assert await store.seen([]) == set()
