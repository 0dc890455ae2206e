"""Admission control: a full backlog refuses new runs with TooBusy, stores nothing, and makes room again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from covey.client import LocalClient
from covey.errors import ConfigError, TooBusy
from covey.runtime.admission import (
    DEFAULT_MAX_BACKLOG,
    MAX_BACKLOG_VARIABLE,
    RECOUNT_S,
    Admission,
    configured_max_backlog,
    max_backlog_of,
)
from covey.runtime.runner import Runner
from covey.store.sqlite import SQLiteStore
from covey.testing import wait_for

#: Runs of this workflow stay unfinished until they get the signal ``go``: no agent is needed.
WAITING: dict[str, Any] = {
    "name": "waiting",
    "signals": ["go"],
    "steps": {"hold": {"wait": {"signal": "go"}}},
}


async def admitted_within(submit: Callable[[], Awaitable[str]], timeout_s: float) -> str:
    """Submit again and again while refused with TooBusy, until admitted or ``timeout_s`` passes."""

    async def admitted() -> str | None:
        try:
            return await submit()
        except TooBusy:
            return None

    return await wait_for(admitted, timeout_s, 0.02, message="a submit admitted once a run finished")


# -- the limit, from the environment or the caller ------------------------------------------------


def test_the_limit_defaults_when_the_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_BACKLOG_VARIABLE, raising=False)
    assert configured_max_backlog() == DEFAULT_MAX_BACKLOG


@pytest.mark.parametrize(
    ("text", "limit"), [("250", 250), (" 7 ", 7), ("unlimited", None), ("UNLIMITED", None)]
)
def test_the_limit_comes_from_the_variable(
    monkeypatch: pytest.MonkeyPatch, text: str, limit: int | None
) -> None:
    monkeypatch.setenv(MAX_BACKLOG_VARIABLE, text)
    assert configured_max_backlog() == limit


@pytest.mark.parametrize("text", ["0", "-3", "lots", "1.5"])
def test_a_bad_variable_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(MAX_BACKLOG_VARIABLE, text)
    with pytest.raises(
        ConfigError,
        match=f"{MAX_BACKLOG_VARIABLE} must be a whole number of at least 1 or 'unlimited'; got '{text}'",
    ):
        configured_max_backlog()


@pytest.mark.parametrize("value", [0, -1, True, "lots", 2.5])
def test_a_bad_max_backlog_argument_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError, match="max_backlog="):
        max_backlog_of(value)


def test_a_runner_with_a_bad_variable_does_not_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MAX_BACKLOG_VARIABLE, "none")
    with pytest.raises(ConfigError, match=MAX_BACKLOG_VARIABLE):
        Runner(tmp_path / "covey.db", serve_socket=False)


# -- the embedded runner --------------------------------------------------------------------------


async def test_a_full_backlog_refuses_a_submit_and_stores_nothing(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db", serve_socket=False, max_backlog=2) as runner:
        await runner.submit(WAITING, run_id="r1")
        await runner.submit(WAITING, run_id="r2")

        with pytest.raises(TooBusy) as refused:
            await runner.submit(WAITING, run_id="r3")

        assert (refused.value.backlog, refused.value.limit, refused.value.retry_after_s) == (2, 2, 1.0)
        assert (
            "covey is too busy: 2 unfinished runs, and the limit is 2 (COVEY_MAX_BACKLOG); retry after 1 s"
            in str(refused.value)
        )
        assert await runner.store.get_run("r3") is None
        assert sorted(r.run_id for r in await runner.store.list_runs()) == ["r1", "r2"]


async def test_a_repeated_run_id_is_answered_even_when_the_backlog_is_full(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db", serve_socket=False, max_backlog=1) as runner:
        assert await runner.submit(WAITING, run_id="r1") == "r1"

        assert await runner.submit(WAITING, run_id="r1") == "r1"
        with pytest.raises(TooBusy):
            await runner.submit(WAITING)


async def test_a_batch_that_does_not_fit_is_refused_whole(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db", serve_socket=False, max_backlog=3) as runner:
        await runner.submit(WAITING)

        with pytest.raises(TooBusy):
            await runner.submit_many([(WAITING, n) for n in range(3)])

        assert len(await runner.store.list_runs()) == 1
        assert len(await runner.submit_many([(WAITING, n) for n in range(2)])) == 2


async def test_a_finished_run_makes_room(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db", serve_socket=False, max_backlog=1) as runner:
        await runner.submit(WAITING, run_id="r1")
        with pytest.raises(TooBusy):
            await runner.submit(WAITING, run_id="r2")

        await runner.signal("r1", "go")
        await runner.wait("r1")

        assert await admitted_within(lambda: runner.submit(WAITING, run_id="r2"), 5.0) == "r2"


async def test_unlimited_admits_everything(tmp_path: Path) -> None:
    async with Runner(tmp_path / "covey.db", serve_socket=False, max_backlog="unlimited") as runner:
        assert len(await runner.submit_many([(WAITING, n) for n in range(50)])) == 50


# -- reading the count ----------------------------------------------------------------------------


class BacklogCountingSQLiteStore(SQLiteStore):
    """A real SQLite store that counts how often the backlog is read."""

    reads = 0

    async def backlog(self) -> int:
        self.reads += 1
        return await super().backlog()


async def test_the_count_is_read_once_a_second_below_the_limit_and_again_at_it(tmp_path: Path) -> None:
    now = [100.0]
    admission = Admission(3, clock=lambda: now[0])
    async with BacklogCountingSQLiteStore(tmp_path / "covey.db") as store:
        await admission.admit(store)
        await admission.admit(store)
        assert store.reads == 1, "below the limit, one reading serves a second"

        await admission.admit(store)
        with pytest.raises(TooBusy):
            await admission.admit(store)
        assert store.reads == 1, "a reading this fresh is trusted at the limit too"

        now[0] += 0.2  # the store still holds nothing: the three admitted were never submitted
        await admission.admit(store)
        assert store.reads == 2, "at the limit, a reading older than 0.1 s is taken again"

        now[0] += RECOUNT_S
        await admission.admit(store)
        assert store.reads == 3


# -- clients --------------------------------------------------------------------------------------


async def test_the_runner_refusal_reaches_a_client_on_its_socket(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with Runner(path, max_backlog=1):
        client = LocalClient(path)
        await client.submit(WAITING, run_id="r1")

        with pytest.raises(TooBusy) as refused:
            await client.submit(WAITING, run_id="r2")

        assert (refused.value.backlog, refused.value.limit, refused.value.retry_after_s) == (1, 1, 1.0)


async def test_submits_waiting_in_the_inbox_count_when_no_runner_is_up(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    client = LocalClient(path, max_backlog=2)
    await client.submit(WAITING, run_id="r1")
    await client.submit(WAITING, run_id="r2")

    with pytest.raises(TooBusy):
        await client.submit(WAITING, run_id="r3")
    assert await client.submit(WAITING, run_id="r1") == "r1", "a repeated run id is still answered"

    async with SQLiteStore(path) as store:
        assert sorted(row.run_id for row in await store.read_inbox(0, 10)) == ["r1", "r2"]
