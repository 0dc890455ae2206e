"""Reports and claims over the runner's socket: answered once committed, all or nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from covey import Embedded, Registry, agent
from covey.errors import CoveyError
from covey.runtime.protocol import FrameBuffer, FrameWriter, encode_frame, read_frame
from covey.runtime.runner import Runner
from covey.runtime.socket_server import _Connection
from covey.testing import wait_for
from covey.worker.link import PROTOCOL_VERSION, LocalLink, NextClaim
from covey.worker.socket_link import SocketLink, _Answers
from covey.worker.worker import Worker

PAIR = {"name": "pair", "steps": {"a": {"skill": "echo"}, "b": {"skill": "echo"}}}
#: B consumes A's output: a hand-off.
CHAIN = {"name": "chain", "steps": {"a": {"skill": "echo"}, "b": {"skill": "echo", "input": "${steps.a}"}}}


def _done(lease: Any, output: Any) -> dict[str, Any]:
    return {
        "task_id": lease.task_id,
        "run_id": lease.run_id,
        "lease_no": lease.lease_no,
        "ok": True,
        "output": output,
    }


async def test_a_report_of_several_results_is_answered_once_all_are_committed(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db") as runner, SocketLink(runner.socket_path or "") as link:
        run_id = await runner.submit(PAIR)
        leases = await link.claim("w1", frozenset({"echo"}), {}, 10, 0)
        assert len(leases) == 2

        await link.report([_done(lease, lease.step) for lease in leases])

        # The answer came after the commit: the run is decided already, no waiting needed.
        info = await asyncio.wait_for(runner.wait(run_id), 5)
        assert info.output == {"a": "a", "b": "b"}


async def test_an_empty_report_is_answered(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db") as runner, SocketLink(runner.socket_path or "") as link:
        await asyncio.wait_for(link.report([]), 5)


async def test_a_report_with_one_malformed_result_applies_none_of_them(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db") as runner, SocketLink(runner.socket_path or "") as link:
        run_id = await runner.submit(PAIR)
        good, other = await link.claim("w1", frozenset({"echo"}), {}, 10, 0)
        bad = _done(other, 1)
        del bad["run_id"]

        with pytest.raises(CoveyError, match="malformed report"):
            await link.report([_done(good, "fine"), bad])

        statuses = {task.step: task.status for task in await runner.store.list_tasks(run_id)}
        assert statuses == {"a": "leased", "b": "leased"}
        assert len(await runner.store.load_history(run_id)) == 3  # submitted, and a and b made ready


async def test_a_malformed_claim_gets_an_error_and_the_connection_goes_on(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db") as runner, SocketLink(runner.socket_path or "") as link:
        with pytest.raises(CoveyError, match="malformed claim"):
            await link.call("claim", worker_id="w1", targets=["echo"], limit="many")

        await runner.submit(PAIR)
        assert len(await link.claim("w1", frozenset({"echo"}), {}, 10, 0)) == 2


async def _closed_by_runner(reader: asyncio.StreamReader) -> bool:
    """Whether the runner closed the connection: the read ends (EOF) before the deadline."""
    return await asyncio.wait_for(reader.read(), 5) == b""


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xff\xff\xff", b"\x00\x00\x00\x05hello", b"\x00\x00\x00\x02[]"],
    ids=["huge", "text", "list"],
)
async def test_a_bad_frame_closes_its_connection_and_the_runner_serves_on(
    tmp_path: Path, garbage: bytes
) -> None:
    async with Runner(tmp_path / "covey.db") as runner:
        reader, writer = await asyncio.open_unix_connection(str(runner.socket_path))
        writer.write(garbage)
        assert await _closed_by_runner(reader)
        writer.close()

        async with SocketLink(runner.socket_path or "") as link:
            await runner.submit(PAIR)
            assert len(await link.claim("w1", frozenset({"echo"}), {}, 10, 0)) == 2


async def test_a_frame_arriving_a_byte_at_a_time_is_answered(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db") as runner:
        reader, writer = await asyncio.open_unix_connection(str(runner.socket_path))
        frame = encode_frame({"id": 1, "op": "hello", "protocol": PROTOCOL_VERSION})
        for byte in frame:
            writer.write(bytes([byte]))
            await writer.drain()
        answer = await asyncio.wait_for(read_frame(reader), 5)
        assert answer is not None
        assert answer["id"] == 1
        assert answer["ok"]["protocol"] == PROTOCOL_VERSION
        writer.close()


async def test_answers_to_a_client_that_stops_reading_all_arrive_once_it_reads(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db") as runner:
        reader, writer = await asyncio.open_unix_connection(str(runner.socket_path))
        count = 20_000  # about 1.5 MB of answers: more than the socket and the transport buffer
        writer.write(
            b"".join(
                encode_frame({"id": i, "op": "hello", "protocol": PROTOCOL_VERSION}) for i in range(count)
            )
        )
        await wait_for(lambda: len(runner.connections) == 1, 5, message="the runner to take the connection")
        (connection,) = runner.connections
        await wait_for(
            lambda: getattr(connection, "is_paused", False),
            10,
            message="the runner to stop writing to a full socket",
        )

        ids = [
            frame["id"]
            for frame in [await asyncio.wait_for(read_frame(reader), 5) for _ in range(count)]
            if frame
        ]

        assert sorted(ids) == list(range(count))
        writer.close()


async def test_a_paused_connection_holds_its_writers_until_the_transport_resumes(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db") as runner:
        connection = _Connection(runner)
        connection.pause_writing()
        waiting = [asyncio.create_task(connection.drain()) for _ in range(2)]
        for _ in range(3):
            await asyncio.sleep(0)  # turns of the loop, not a wait for a condition
        assert not any(task.done() for task in waiting)

        connection.resume_writing()
        await asyncio.wait_for(asyncio.gather(*waiting), 5)
        await asyncio.wait_for(connection.drain(), 5)  # not paused: returns at once


PIDS_APP = str(Path(__file__).parent / "apps" / "pids.py")


async def test_a_hand_off_stays_on_the_worker_process_that_reported(tmp_path: Path) -> None:
    # A no-op try ends before its worker's next claim is out: the report waits for that claim,
    # both reach the runner in one write, and the next step is leased to the reporting worker,
    # which is awake, rather than to the other one's waiting claim.
    chain = {
        "name": "chain",
        "steps": {"a": {"skill": "pid_a"}, "b": {"skill": "pid_b", "input": "${steps.a}"}},
    }
    async with Embedded(tmp_path / "covey.db", app=PIDS_APP, workers=2, processes=True) as covey:
        outputs = [(await covey.wait(await covey.submit(chain, i))).output for i in range(10)]
    assert all(output["b"]["a"] == output["b"]["b"] for output in outputs), outputs


async def test_a_claims_leases_reach_take_in_the_callback_that_read_them(tmp_path: Path) -> None:
    """``take`` runs in the read's callback, not in the claiming task: a worker's tries start without a loop turn."""
    async with Runner(tmp_path / "covey.db") as runner, SocketLink(runner.socket_path or "") as link:
        await runner.submit(PAIR)
        taken: list[Any] = []
        calling_tasks: list[asyncio.Task[Any] | None] = []

        def take(leases: list[Any]) -> None:
            calling_tasks.append(asyncio.current_task())
            taken.extend(leases)

        leases = await link.claim("w1", frozenset({"echo"}), {}, 10, 0, take=take)

        assert leases == taken
        assert len(leases) == 2
        assert calling_tasks == [None]


async def test_a_malformed_claim_answer_fails_that_claim_only(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db") as runner, SocketLink(runner.socket_path or "") as link:
        await runner.submit(PAIR)

        def refuse(leases: list[Any]) -> None:
            raise ValueError("take refused the leases")

        with pytest.raises(ValueError, match="take refused"):
            await link.claim("w1", frozenset({"echo"}), {}, 1, 0, take=refuse)
        # The connection goes on: the other task is still there to claim.
        assert len(await link.claim("w1", frozenset({"echo"}), {}, 10, 0)) == 1


async def test_a_report_carries_the_next_claim_and_its_answer_the_next_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-off is one frame each way: A's report claims, and B's lease comes back in the report's answer."""
    sent: list[dict[str, Any]] = []
    answers: dict[int, dict[str, Any]] = {}
    watched: list[FrameWriter] = []
    original_flush = FrameWriter.flush
    original_received = _Answers.frames_received

    def spy_flush(self: FrameWriter) -> None:  # records each frame the worker's link writes
        if self in watched:
            sent.extend(FrameBuffer().feed(b"".join(self._frames)))
        original_flush(self)

    def spy_received(self: _Answers, messages: list[dict[str, Any]]) -> None:  # and each answer it reads
        answers.update({int(message["id"]): message for message in messages})
        original_received(self, messages)

    monkeypatch.setattr(FrameWriter, "flush", spy_flush)
    monkeypatch.setattr(_Answers, "frames_received", spy_received)
    registry = Registry()

    @agent(skills=["echo"], registry=registry)
    async def echo(value: Any) -> Any:
        return value

    async with Runner(tmp_path / "covey.db") as runner, SocketLink(runner.socket_path or "") as link:
        assert link._connection is not None
        watched.append(link._connection.outbox)
        worker = Worker(registry, link, worker_id="w1")
        serving = asyncio.create_task(worker.run())
        for i in range(5):
            assert (
                await asyncio.wait_for(runner.wait(await runner.submit(CHAIN, i)), 10)
            ).status == "succeeded"
        worker.stop()
        await asyncio.wait_for(serving, 10)

    reports = [frame for frame in sent if frame.get("op") == "report"]
    of_a = [report for report in reports if report["results"][0]["task_id"].endswith("/a")]
    assert len(of_a) == 5
    # A's try ends before the worker's claimer is back: its report claims the worker's one slot...
    assert [report["claim"]["limit"] for report in of_a] == [1] * 5
    # ...and the answer brings B, the step A's result made ready.
    handed_off = [lease["step"] for report in of_a for lease in answers[report["id"]]["ok"]["leases"]]
    assert handed_off == ["b"] * 5


def _claim_of(worker_id: str, limit: int, taken: list[list[Any]]) -> NextClaim:
    return NextClaim(worker_id, frozenset({"echo"}), {}, limit, taken.append)


@asynccontextmanager
async def _link_of(kind: str, runner: Runner) -> AsyncIterator[SocketLink | LocalLink]:
    """A worker link to ``runner``: over its socket, or in its process."""
    if kind == "socket":
        async with SocketLink(runner.socket_path or "") as link:
            yield link
    else:
        yield LocalLink(runner.engine, runner.store, lease_ms=runner.lease_ms)


@pytest.mark.parametrize("kind", ["socket", "in-process"])
async def test_a_claim_in_a_report_takes_the_task_the_report_makes_ready(tmp_path: Path, kind: str) -> None:
    async with Runner(tmp_path / "covey.db") as runner, _link_of(kind, runner) as link:
        await runner.submit(CHAIN, 7)
        (lease_a,) = await link.claim("w1", frozenset({"echo"}), {}, 10, 0)
        taken: list[list[Any]] = []

        await link.report([_done(lease_a, 8)], claim=_claim_of("w1", 3, taken))

        ((lease_b,),) = taken
        assert (lease_b.step, lease_b.input) == ("b", 8)
        # Leased for the runner's lease length (the claim carries none of its own).
        assert lease_b.lease_until_ms >= await runner.store.now_ms() + runner.lease_ms - 5_000


async def test_a_claim_in_a_report_that_finds_nothing_is_handed_no_leases(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db") as runner, SocketLink(runner.socket_path or "") as link:
        run_id = await runner.submit({"name": "one", "steps": {"a": {"skill": "echo"}}})
        (lease,) = await link.claim("w1", frozenset({"echo"}), {}, 10, 0)
        taken: list[list[Any]] = []

        await link.report([_done(lease, 1)], claim=_claim_of("w1", 3, taken))

        assert taken == [[]]
        assert (await asyncio.wait_for(runner.wait(run_id), 5)).status == "succeeded"


async def test_a_report_with_a_malformed_claim_is_refused_whole(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db") as runner:
        reader, writer = await asyncio.open_unix_connection(str(runner.socket_path))
        run_id = await runner.submit(CHAIN, 1)
        async with SocketLink(runner.socket_path or "") as link:
            (lease,) = await link.claim("w1", frozenset({"echo"}), {}, 10, 0)
        report = {"id": 1, "op": "report", "results": [_done(lease, 2)], "claim": {"targets": ["echo"]}}

        writer.write(encode_frame(report))
        answer = await asyncio.wait_for(read_frame(reader), 5)

        assert answer is not None
        assert "malformed report" in answer["error"]["message"]
        assert "worker_id" in answer["error"]["message"]
        assert "TaskSucceeded" not in [event["type"] for event in await runner.store.load_history(run_id)]
        writer.close()


async def test_a_worker_never_holds_more_leases_than_its_slots(tmp_path: Path) -> None:
    """Claims in flight count against the slots: the parked one, and one a report carries."""
    registry = Registry()
    held: list[int] = []

    @agent(skills=["echo"], registry=registry)
    async def echo(value: Any) -> Any:
        held.append(len(worker.running))  # leases the worker holds as this try starts
        return value

    async with Runner(tmp_path / "covey.db") as runner, SocketLink(runner.socket_path or "") as link:
        worker = Worker(registry, link, worker_id="w1", concurrency=2)
        serving = asyncio.create_task(worker.run())
        runs = [await runner.submit(CHAIN, i) for i in range(40)]
        for run_id in runs:
            assert (await asyncio.wait_for(runner.wait(run_id), 20)).status == "succeeded"
        worker.stop()
        await asyncio.wait_for(serving, 10)

    assert len(held) == 80
    assert max(held) == 2, "two slots: never more than two leases, and both used"
