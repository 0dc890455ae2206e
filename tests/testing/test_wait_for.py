"""covey.testing.wait_for: polls sync and async conditions against a deadline."""

from __future__ import annotations

import asyncio

import pytest

from covey.testing import wait_for

pytestmark = pytest.mark.asyncio


async def test_returns_the_first_truthy_value_of_a_plain_predicate() -> None:
    calls: list[int] = []

    def third_time() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert await wait_for(third_time, timeout=5, interval=0.001) == 3
    assert len(calls) == 3


async def test_awaits_an_async_predicate() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_later(0.02, event.set)

    async def is_set() -> str:
        await asyncio.sleep(0)
        return "set" if event.is_set() else ""

    assert await wait_for(is_set, timeout=5) == "set"


async def test_times_out_with_a_message_naming_the_condition() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()

    with pytest.raises(
        AssertionError, match=r"timed out after 0.05s waiting for the queue to fill \(last value: \[\]\)"
    ):
        await wait_for(list, timeout=0.05, message="the queue to fill")

    assert 0.05 <= loop.time() - start < 2


async def test_the_default_message_names_the_predicate() -> None:
    def never() -> bool:
        return False

    with pytest.raises(AssertionError, match="never"):
        await wait_for(never, timeout=0.01)


async def test_errors_of_the_predicate_propagate() -> None:
    def broken() -> bool:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        await wait_for(broken)
