"""Polling before sleeping: the window adapts to when expected messages come, and the socket sides use it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from covey.errors import ConfigError
from covey.runtime.busy_poll import BUSY_POLL_VARIABLE, DEFAULT_BUSY_POLL_US, BusyPoll, busy_poll_us
from covey.runtime.runner import Runner
from covey.testing import wait_for
from covey.worker.link import NextClaim
from covey.worker.socket_link import SocketLink

US = 1_000  # ns


class Clock:
    """A clock the test moves by hand (ns)."""

    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now

    def advance_us(self, us: int) -> None:
        self.now += us * US


def _poll(limit_us: int = 500) -> tuple[BusyPoll, Clock]:
    clock = Clock()
    return BusyPoll(limit_us, clock=clock), clock


def _message_after(poll: BusyPoll, clock: Clock, us: int) -> None:
    poll.expect(asyncio.get_running_loop())
    clock.advance_us(us)
    poll.arrived()


async def test_a_message_within_the_window_keeps_it() -> None:
    poll, clock = _poll(500)
    _message_after(poll, clock, 120)
    assert (poll.caught, poll.missed) == (1, 0)
    assert poll.window_ns == 500 * US


async def test_messages_later_than_the_longest_window_halve_it_until_it_closes() -> None:
    poll, clock = _poll(500)
    _message_after(poll, clock, 5_000)
    assert poll.window_ns == 250 * US
    for _ in range(10):
        _message_after(poll, clock, 5_000)
    assert poll.window_ns == 0
    assert poll.missed == 11
    await wait_for(lambda: not poll.polling, timeout=5)  # the polling the first expect started ended

    poll.expect(asyncio.get_running_loop())
    assert not poll.polling  # a closed window never keeps the loop busy


async def test_a_message_after_the_window_but_within_the_longest_widens_it() -> None:
    poll, clock = _poll(500)
    _message_after(poll, clock, 5_000)  # 250 µs now
    _message_after(poll, clock, 300)
    assert poll.window_ns == 500 * US


async def test_a_closed_window_reopens_when_messages_come_soon_again() -> None:
    poll, clock = _poll(800)
    while poll.window_ns:
        _message_after(poll, clock, 10_000)
    _message_after(poll, clock, 50)
    assert poll.window_ns == 100 * US  # an eighth of the longest
    _message_after(poll, clock, 150)
    assert poll.window_ns == 200 * US


async def test_a_read_with_no_message_expected_changes_nothing() -> None:
    poll, _ = _poll(500)
    poll.arrived()
    assert (poll.caught, poll.missed, poll.window_ns) == (0, 0, 500 * US)


async def test_the_loop_polls_until_a_message_comes_and_serves_other_work_meanwhile() -> None:
    poll = BusyPoll(2_000_000)  # 2 s: only the message can end it here
    poll.expect()
    assert poll.polling
    done = await asyncio.wait_for(asyncio.sleep(0.01, result="served"), 5)
    assert done == "served"
    assert poll.polling

    poll.arrived()
    await wait_for(lambda: not poll.polling, timeout=5)
    assert poll.caught == 1


async def test_the_loop_stops_polling_at_the_end_of_the_window() -> None:
    poll = BusyPoll(1_000)  # 1 ms, real clock
    poll.expect()
    assert poll.polling
    await wait_for(lambda: not poll.polling, timeout=5)
    assert (poll.caught, poll.missed) == (0, 0)  # nothing came: nothing to learn yet


async def test_off_never_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BUSY_POLL_VARIABLE, "off")
    poll = BusyPoll()
    poll.expect()
    assert not poll.polling
    poll.arrived()
    assert (poll.caught, poll.missed) == (0, 0)


@pytest.mark.parametrize(("text", "expected"), [("", DEFAULT_BUSY_POLL_US), ("250", 250), ("OFF", 0)])
def test_the_longest_window_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: int
) -> None:
    monkeypatch.setenv(BUSY_POLL_VARIABLE, text)
    assert busy_poll_us() == expected


@pytest.mark.parametrize("text", ["0", "-5", "soon", "1.5"])
def test_a_bad_window_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(BUSY_POLL_VARIABLE, text)
    with pytest.raises(ConfigError, match=BUSY_POLL_VARIABLE):
        BusyPoll()


CHAIN = {"name": "chain", "steps": {"a": {"skill": "echo"}, "b": {"skill": "echo", "input": "${steps.a}"}}}


async def test_a_socket_hand_off_polls_on_both_sides(tmp_path: Path) -> None:
    """The worker polls for its report's answer, the runner for the report of the task it leased."""
    async with Runner(tmp_path / "covey.db") as runner, SocketLink(runner.socket_path or "") as link:
        run_id = await runner.submit(CHAIN, {"x": 1})
        (a,) = await link.claim("w1", frozenset({"echo"}), {}, 1, 0)
        leased_b: list[Any] = []
        claim = NextClaim("w1", frozenset({"echo"}), {}, 1, leased_b.extend)
        done = {
            "task_id": a.task_id,
            "run_id": run_id,
            "lease_no": a.lease_no,
            "ok": True,
            "output": {"y": 2},
        }

        await link.report([done], claim=claim)

        (b,) = leased_b
        assert b.step == "b"
        assert b.input == {"y": 2}
        assert link.poll.caught + link.poll.missed == 1  # the answer it polled for was read
        assert runner.busy_poll.caught + runner.busy_poll.missed == 1  # the report after A's lease


async def test_off_a_socket_hand_off_still_works_and_nothing_polls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BUSY_POLL_VARIABLE, "off")
    async with Runner(tmp_path / "covey.db") as runner, SocketLink(runner.socket_path or "") as link:
        run_id = await runner.submit(CHAIN, {"x": 1})
        (a,) = await link.claim("w1", frozenset({"echo"}), {}, 1, 0)
        leased_b: list[Any] = []
        claim = NextClaim("w1", frozenset({"echo"}), {}, 1, leased_b.extend)
        done = {"task_id": a.task_id, "run_id": run_id, "lease_no": a.lease_no, "ok": True, "output": 7}

        await link.report([done], claim=claim)

        assert [lease.step for lease in leased_b] == ["b"]
        assert not link.poll.polling
        assert not runner.busy_poll.polling
        assert link.poll.caught + link.poll.missed == 0
