"""The Context an agent gets: shared state and the logger are built on first use, once."""

from __future__ import annotations

import logging

import pytest

from covey.agents.context import Context
from covey.state.handle import StateHandle


async def _never(*_: object) -> None:
    raise AssertionError("no call expected")


def _context(**extra: object) -> Context:
    return Context(
        run_id="r1", task_id="r1/a", step="a", index=None, try_no=1, lease_no=3, heartbeat=_never, **extra
    )  # type: ignore[arg-type]


def test_state_is_built_on_first_use_and_kept() -> None:
    built: list[Context] = []

    def make_state(ctx: Context) -> StateHandle:
        built.append(ctx)
        return StateHandle(
            namespace=f"run:{ctx.run_id}", fence=(ctx.task_id, ctx.lease_no), get=_never, apply=_never
        )

    ctx = _context(make_state=make_state)
    assert ctx.staged == []  # asking for staged writes builds nothing
    assert built == []

    ctx.state.put("k", 1)

    assert ctx.state is ctx.state
    assert built == [ctx]
    assert [op.key for op in ctx.staged] == ["k"]


def test_a_context_without_state_says_so() -> None:
    with pytest.raises(RuntimeError, match="no shared state"):
        _ = _context().state


def test_the_logger_carries_the_tasks_ids(caplog: pytest.LogCaptureFixture) -> None:
    ctx = _context(logger=logging.getLogger("covey.test.context"))
    with caplog.at_level(logging.INFO, logger="covey.test.context"):
        ctx.log.info("hello")
    (record,) = caplog.records
    assert (record.run_id, record.task_id, record.try_no) == ("r1", "r1/a", 1)  # type: ignore[attr-defined]
    assert ctx.log is ctx.log
