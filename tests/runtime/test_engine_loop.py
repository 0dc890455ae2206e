"""The engine loop's commit discipline: answers follow commits, a failed commit changes nothing.

These tests use a store that fails on purpose (a real SQLite store whose
commit can be held and made to fail), to see what callers get and what is
left behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from pathlib import Path

import pytest

from covey.engine.events import SignalReceived, TaskSucceeded, event_to_json
from covey.errors import BackendError
from covey.runtime.answer import Reply
from covey.runtime.loop import PIPELINE_FROM, EngineLoop
from covey.runtime.submit import prepare_submission
from covey.store.base import ClaimRequest, CommitBatch, CommitResult, InboxRow, Lease
from covey.store.sqlite import SQLiteStore
from covey.testing import wait_for

WORKFLOW = {"name": "w", "steps": {"a": {"skill": "s"}}}


class FailingCommitStore(SQLiteStore):
    """SQLite, except that a commit can be held at a gate and then made to fail, on purpose."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate: asyncio.Event | None = None
        self.fail = False
        self.commits_started = 0
        self.claimers: list[list[str]] = []
        self.inbox_reads: list[int] = []

    async def commit(self, batch: CommitBatch) -> CommitResult:
        self.commits_started += 1
        self.claimers.append([claim.worker_id for claim in batch.claims])
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise BackendError("disk on fire (on purpose)")
        return await super().commit(batch)

    def commit_now(self, batch: CommitBatch) -> CommitResult | None:
        if self.gate is not None:
            return None  # a commit held at the gate has to wait: take the awaited path
        self.commits_started += 1
        self.claimers.append([claim.worker_id for claim in batch.claims])
        if self.fail:
            raise BackendError("disk on fire (on purpose)")
        return super().commit_now(batch)

    async def read_inbox(
        self, after_seq: int, limit: int, shards: Collection[int] | None = None
    ) -> list[InboxRow]:
        self.inbox_reads.append(after_seq)
        return await super().read_inbox(after_seq, limit, shards)


@pytest.fixture
async def loop_and_store(tmp_path: Path) -> AsyncIterator[tuple[EngineLoop, FailingCommitStore]]:
    async with FailingCommitStore(tmp_path / "covey.db") as store:
        loop = EngineLoop(store, epoch=await store.begin_epoch())
        task = asyncio.create_task(loop.run())
        yield loop, store
        task.cancel()
        await loop.drain()


async def _submit(loop: EngineLoop, run_id: str) -> bool:
    return await loop.submit(prepare_submission(WORKFLOW, None, run_id=run_id), 1_000)


async def test_failing_commit_answers_with_the_error_and_writes_nothing(
    loop_and_store: tuple[EngineLoop, FailingCommitStore],
) -> None:
    loop, store = loop_and_store
    store.fail = True
    with pytest.raises(BackendError, match="on purpose"):
        await _submit(loop, "r1")
    assert await store.get_run("r1") is None
    assert "r1" not in loop.runs, "the cached state of a failed commit is discarded"

    store.fail = False
    assert await _submit(loop, "r1") is True
    assert await store.get_run("r1") is not None


async def test_failing_commit_abandons_the_batch_decided_on_top_of_it(
    loop_and_store: tuple[EngineLoop, FailingCommitStore],
) -> None:
    loop, store = loop_and_store
    store.gate = asyncio.Event()
    store.fail = True
    first = [asyncio.create_task(_submit(loop, f"big-{i}")) for i in range(PIPELINE_FROM)]
    await wait_for(lambda: store.commits_started == 1, message="the first batch holds at its commit")
    second = asyncio.create_task(_submit(loop, "late"))
    await wait_for(lambda: "late" in loop.runs, message="the second batch is decided on top of the first")

    store.gate.set()
    results = await asyncio.gather(*first, second, return_exceptions=True)

    assert all(isinstance(result, BackendError) for result in results), results
    assert store.commits_started == 1, "the second batch never reached the store"
    assert await store.list_runs() == []
    assert not loop.runs


async def test_an_inbox_row_handed_over_twice_or_after_its_commit_is_decided_once(
    loop_and_store: tuple[EngineLoop, FailingCommitStore],
) -> None:
    # A store that pushes rows (Redis) may hand a row over while the loop also reads it from
    # the inbox, or after a commit consumed it: each row is decided once.
    loop, store = loop_and_store
    await _submit(loop, "r1")
    await wait_for(lambda: store.get_run("r1"), 5.0, 0.01, message="the run")
    signal = SignalReceived("go", "go", None, 0)
    await store.append_inbox([InboxRow("sig-1", "r1", event_to_json(signal))])
    (row,) = await store.read_inbox(0, 10)

    loop.offer_inbox([row, row])

    async def consumed() -> bool:
        return not await store.read_inbox(0, 10)

    await wait_for(consumed, 5.0, 0.01, message="the row to be consumed")
    loop.offer_inbox([row])  # a late copy
    await _submit(loop, "r2")  # one more commit after it, to be sure it was looked at
    await wait_for(lambda: store.get_run("r2"), 5.0, 0.01, message="the next run")
    history = await store.load_history("r1")
    assert [event["type"] for event in history].count("SignalReceived") == 1


async def test_the_inbox_is_read_on_from_the_last_row_read_and_from_the_start_after_a_failed_commit(
    loop_and_store: tuple[EngineLoop, FailingCommitStore],
) -> None:
    # SQLite assigns inbox seqs as rows commit: a read may go on from the last row read instead of
    # reading (and skipping) every unconsumed row again. A failed commit leaves its rows behind.
    loop, store = loop_and_store
    await _submit(loop, "r1")
    await wait_for(lambda: store.get_run("r1"), 5.0, 0.01, message="the run")

    async def signal(n: int) -> int:
        await store.append_inbox(
            [InboxRow(f"sig-{n}", "r1", event_to_json(SignalReceived(f"s{n}", "go", n, 0)))]
        )
        (row,) = await SQLiteStore.read_inbox(store, 0, 10)  # not recorded: only the loop's reads are
        loop.poke_inbox()
        return row.seq

    async def consumed() -> bool:
        return not await SQLiteStore.read_inbox(store, 0, 10)

    first = await signal(1)
    await wait_for(consumed, 5.0, 0.01, message="the first row to be consumed")
    await signal(2)
    await wait_for(consumed, 5.0, 0.01, message="the second row to be consumed")
    assert store.inbox_reads[-1] == first

    store.fail = True
    commits = store.commits_started
    await signal(3)
    await wait_for(lambda: store.commits_started > commits, message="the failing commit")
    store.fail = False
    await wait_for(consumed, 5.0, 0.01, message="the third row, read again and consumed")
    assert store.inbox_reads[-1] == 0
    history = await store.load_history("r1")
    assert [e["signal_id"] for e in history if e["type"] == "SignalReceived"] == ["s1", "s2", "s3"]


CHAIN = {"name": "chain", "steps": {"a": {"skill": "s"}, "b": {"skill": "s", "input": "${steps.a}"}}}


def _claim(worker_id: str) -> ClaimRequest:
    return ClaimRequest(worker_id, frozenset({"s"}), {}, 1, 30_000)


async def test_a_claim_that_comes_with_a_report_takes_the_task_the_report_makes_ready(
    loop_and_store: tuple[EngineLoop, FailingCommitStore],
) -> None:
    # A worker sends its next claim right after a report; read together, both join one batch,
    # and the hand-off stays on the reporting worker. Another worker's parked claim is not woken.
    loop, store = loop_and_store
    await loop.submit(prepare_submission(CHAIN, None, run_id="r1"), 1_000)
    (a,) = await loop.claim(_claim("reporter"))
    commits = loop.commits
    other = loop.claim_nowait(_claim("other"), wait_s=30.0)
    await wait_for(lambda: loop.commits > commits, 5.0, 0.01, message="the other claim to park")

    reported: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    loop.deliver_to(
        reported, TaskSucceeded(a.task_id, a.lease_no, 2_000), "r1", output={"x": 1}, worker_id="reporter"
    )
    mine = loop.claim_nowait(_claim("reporter"), wait_s=30.0)

    assert await reported is True
    (b,) = await mine
    assert (b.step, b.input) == ("b", {"x": 1})
    assert store.claimers[-1] == ["reporter"]  # the parked claim was not woken for nothing
    assert not other.done()


def _recording() -> tuple[list[object], Reply[object]]:
    """A reply that records what it was given, and the list it records into."""
    given: list[object] = []
    return given, Reply(lambda result, error: given.append(error if error is not None else result))


async def _handed_a(loop: EngineLoop, run_id: str) -> Lease:
    await loop.submit(prepare_submission(CHAIN, None, run_id=run_id), 1_000)
    (a,) = await loop.claim(_claim("reporter"))
    return a


def _report(loop: EngineLoop, lease: Lease, worker_id: str | None = None) -> list[object]:
    """Queue the report that ``lease``'s try returned 7; what its reply is given lands in the list."""
    reported, reply = _recording()
    event = TaskSucceeded(lease.task_id, lease.lease_no, 2_000)
    loop.deliver_to(reply, event, lease.run_id, output=7, worker_id=worker_id)
    return reported


async def test_iterate_now_decides_commits_and_answers_a_hand_off_within_the_callers_turn(
    loop_and_store: tuple[EngineLoop, FailingCommitStore],
) -> None:
    loop, store = loop_and_store
    a = await _handed_a(loop, "r1")
    reported = _report(loop, a, "reporter")
    leased, claim_reply = _recording()
    loop.claim_to(claim_reply, _claim("reporter"), wait_s=30.0)

    assert loop.iterate_now() is True

    # No await since the report was queued: the engine loop's own task never ran.
    assert reported == [True]
    ((b,),) = leased
    assert isinstance(b, Lease)
    assert (b.step, b.input) == ("b", 7)
    assert {task.step: task.status for task in await store.list_tasks("r1")} == {"b": "leased"}
    assert loop.iterate_now() is False  # nothing left


async def test_iterate_now_leaves_a_run_it_would_have_to_load_to_the_engine_loop(
    loop_and_store: tuple[EngineLoop, FailingCommitStore],
) -> None:
    loop, _ = loop_and_store
    a = await _handed_a(loop, "r1")
    del loop.runs["r1"]  # as after a restart: the run is only in the store
    reported = _report(loop, a)

    assert loop.iterate_now() is False
    assert reported == []
    await wait_for(lambda: reported == [True], message="the engine loop decides the report")


async def test_iterate_now_waits_for_the_iteration_in_progress(
    loop_and_store: tuple[EngineLoop, FailingCommitStore],
) -> None:
    loop, store = loop_and_store
    a = await _handed_a(loop, "r1")
    store.gate = asyncio.Event()
    held = asyncio.create_task(_submit(loop, "r2"))
    await wait_for(lambda: store.commits_started > 0 and "r2" in loop.runs, message="a commit to hold")
    reported = _report(loop, a)

    assert loop.iterate_now() is False  # the engine loop is inside an iteration: it takes the report next
    store.gate.set()
    assert await held is True
    await wait_for(lambda: reported == [True], message="the engine loop decides the report")


async def test_a_failed_inline_commit_answers_with_the_error_and_drops_the_cached_state(
    loop_and_store: tuple[EngineLoop, FailingCommitStore],
) -> None:
    loop, store = loop_and_store
    a = await _handed_a(loop, "r1")
    store.fail = True
    reported = _report(loop, a)

    assert loop.iterate_now() is True

    (error,) = reported
    assert isinstance(error, BackendError)
    assert "r1" not in loop.runs
    assert {task.step: task.status for task in await store.list_tasks("r1")} == {"a": "leased"}


async def test_inputs_decided_inline_under_a_held_wake_leave_run_asleep(
    loop_and_store: tuple[EngineLoop, FailingCommitStore],
) -> None:
    """The socket's path: a report and its worker's claim queued, decided inline; run has nothing to wake for."""
    loop, _ = loop_and_store
    a = await _handed_a(loop, "r1")
    loop.hold_wake()
    reported = _report(loop, a, "reporter")
    leased, claim_reply = _recording()
    loop.claim_to(claim_reply, _claim("reporter"), wait_s=30.0)

    loop.release_wake(iterate=True)

    assert reported == [True]
    assert len(leased) == 1
    assert not loop._wake.is_set()  # no empty iteration of run follows


async def test_a_claim_parked_inline_is_still_answered_at_its_deadline(
    loop_and_store: tuple[EngineLoop, FailingCommitStore],
) -> None:
    loop, _ = loop_and_store
    await asyncio.sleep(0)  # run is asleep, with no parked claim: it waits without a deadline
    leased, claim_reply = _recording()
    loop.hold_wake()
    loop.claim_to(claim_reply, _claim("idle"), wait_s=0.05)
    loop.release_wake(iterate=True)

    assert leased == []  # nothing ready: parked
    await wait_for(lambda: leased == [[]], 5.0, message="run answers the parked claim at its deadline")


async def test_work_declined_inline_under_a_held_wake_goes_to_run(
    loop_and_store: tuple[EngineLoop, FailingCommitStore],
) -> None:
    loop, _ = loop_and_store
    a = await _handed_a(loop, "r1")
    del loop.runs["r1"]  # to be loaded first: iterate_now declines it
    loop.hold_wake()
    reported = _report(loop, a)
    loop.release_wake(iterate=True)

    assert reported == []
    await wait_for(lambda: reported == [True], message="run decides the report")


async def test_a_held_wake_released_without_iterating_wakes_run(
    loop_and_store: tuple[EngineLoop, FailingCommitStore],
) -> None:
    """The rest of a frame is still on its way: the socket releases without deciding, run takes over."""
    loop, _ = loop_and_store
    a = await _handed_a(loop, "r1")
    loop.hold_wake()
    reported = _report(loop, a)
    loop.release_wake(iterate=False)

    assert reported == []
    await wait_for(lambda: reported == [True], message="run decides the report")
