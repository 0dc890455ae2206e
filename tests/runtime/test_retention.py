"""Retention: the engine purges finished runs past their time; a purged run's id starts a new run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from covey import Embedded, Registry, agent
from covey.client import LocalClient
from covey.engine.events import RunSubmitted, event_to_json
from covey.errors import ConfigError, NotFound
from covey.runtime.retention import DEFAULT_RETENTION_MS, parse_retention
from covey.store.base import InboxRow
from covey.store.sqlite import SQLiteStore
from covey.testing.conformance.driver import wait_past
from tests.e2e.support import covey_cli

agents = Registry()


@agent(skills=["echo"], registry=agents)
def echo(value: Any) -> Any:
    return value


WORKFLOW = {"name": "echo", "steps": {"a": {"skill": "echo", "input": "${input}"}}}


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("7d", DEFAULT_RETENTION_MS),
        ("12h", 43_200_000),
        ("30m", 1_800_000),
        (" 90S ", 90_000),
        ("forever", None),
    ],
)
def test_retention_is_a_duration_or_forever(text: str, ms: int | None) -> None:
    assert parse_retention(text) == ms


@pytest.mark.parametrize("text", ["7", "7w", "-1d", "0d", "1.5h", "", "never"])
def test_a_retention_that_is_not_a_duration_is_refused_by_name(text: str) -> None:
    with pytest.raises(ConfigError, match=f"retention {text!r} is not a duration"):
        parse_retention(text)


async def _past_its_retention(covey: Embedded, run_id: str) -> int:
    """Run ``WORKFLOW`` as ``run_id`` to its end, then wait until it finished over 1 ms ago; the clock then."""
    info = await covey.wait(await covey.submit(WORKFLOW, "first", run_id=run_id))
    assert info.finished_ms is not None
    return await wait_past(covey.runner.store, info.finished_ms + 1)


async def test_a_finished_run_is_purged_after_its_retention_and_its_id_runs_again(tmp_path: Path) -> None:
    async with Embedded(tmp_path / "covey.db", agents=list(agents), retention_ms=1) as covey:
        store, engine, keeper = covey.runner.store, covey.runner.engine, covey.runner.retention
        assert keeper is not None
        await _past_its_retention(covey, "r1")

        assert await keeper.sweep() == 1

        assert await store.get_run("r1") is None
        assert await store.load_history("r1") == []
        assert "r1" not in engine.runs
        again = await covey.wait(await covey.submit(WORKFLOW, "second", run_id="r1"))
        assert (again.status, again.output) == ("succeeded", {"a": "second"})
        stored = await store.get_run("r1")
        assert stored is not None
        assert stored.output == {"a": "second"}


async def test_a_run_another_engine_purged_is_forgotten_at_the_next_sweep(tmp_path: Path) -> None:
    async with Embedded(tmp_path / "covey.db", agents=list(agents), retention_ms=1) as covey:
        store, engine, keeper = covey.runner.store, covey.runner.engine, covey.runner.retention
        assert keeper is not None
        cutoff = await _past_its_retention(covey, "r1")
        # Another engine node's sweep (on a shared store) purges it: this engine hears nothing.
        assert await store.purge_finished(cutoff, 10) == ["r1"]
        assert "r1" in engine.runs

        assert await keeper.sweep() == 0

        assert "r1" not in engine.runs
        again = await covey.wait(await covey.submit(WORKFLOW, "second", run_id="r1"))
        assert (again.status, again.output) == ("succeeded", {"a": "second"})


async def test_a_purge_on_demand_goes_through_the_runner_or_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    client = LocalClient(path)
    async with Embedded(path, agents=list(agents), retention_ms=None) as covey:
        store, engine = covey.runner.store, covey.runner.engine
        first = await covey.wait(await covey.submit(WORKFLOW, 1, run_id="r1"))
        assert first.finished_ms is not None
        await wait_past(store, first.finished_ms + 1)

        assert await client.purge_finished(DEFAULT_RETENTION_MS) == 0  # finished a moment ago
        assert await client.purge_finished(1) == 1  # through the runner: its engine forgets r1 at once

        assert "r1" not in engine.runs
        assert await store.get_run("r1") is None
        second = await covey.wait(await covey.submit(WORKFLOW, 2, run_id="r2"))
        assert second.finished_ms is not None
        await wait_past(store, second.finished_ms + 1)

    # With no runner up, the command writes the file itself.
    assert await client.purge_finished(1) == 1
    async with client.reader() as store:
        assert await store.list_runs() == []


def test_gc_refuses_to_purge_with_a_retention_of_forever_unless_given_an_age(tmp_path: Path) -> None:
    forever = covey_cli("--retention", "forever", "gc", cwd=tmp_path)
    assert forever.returncode == 2
    assert "--older-than" in forever.stdout

    nothing = covey_cli("gc", "--older-than", "1h", cwd=tmp_path)
    assert nothing.returncode == 0, nothing.stdout + nothing.stderr
    assert "purged 0 finished runs" in nothing.stdout


async def test_waiting_on_a_purged_run_is_a_clear_error_not_a_wait_forever(tmp_path: Path) -> None:
    async with Embedded(tmp_path / "covey.db", agents=list(agents), retention_ms=1) as covey:
        keeper = covey.runner.retention
        assert keeper is not None
        await _past_its_retention(covey, "r1")
        assert await keeper.sweep() == 1

        async with asyncio.timeout(5):
            with pytest.raises(NotFound, match="no run 'r1'"):
                await covey.wait("r1")
            with pytest.raises(NotFound, match="no run 'r1'"):
                await covey.runner.engine.wait_finished("r1")


async def test_a_client_with_no_runner_waits_for_a_pending_submit_but_not_for_a_purged_run(
    tmp_path: Path,
) -> None:
    path = tmp_path / "covey.db"
    async with Embedded(path, agents=list(agents), retention_ms=1) as covey:
        keeper = covey.runner.retention
        assert keeper is not None
        await _past_its_retention(covey, "gone")
        assert await keeper.sweep() == 1
    client = LocalClient(path)
    pending = await client.submit(WORKFLOW, 1, run_id="pending")  # no runner: it waits in the inbox

    with pytest.raises(NotFound, match="no run 'gone'"):
        await client.wait("gone")
    with pytest.raises(NotFound, match="no run 'never'"):
        await client.wait("never")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await client.wait(pending, poll_s=0.05)


async def test_forever_keeps_finished_runs(tmp_path: Path) -> None:
    async with Embedded(tmp_path / "covey.db", agents=list(agents), retention_ms=None) as covey:
        assert covey.runner.retention is None
        info = await covey.wait(await covey.submit(WORKFLOW, 1))
        assert (await covey.runner.store.get_run(info.run_id)) is not None


def test_the_command_line_refuses_a_bad_retention_and_names_it(tmp_path: Path) -> None:
    result = covey_cli("--retention", "7w", "ls", cwd=tmp_path)

    assert result.returncode == 2
    assert "7w" in result.stdout + result.stderr
    assert "COVEY_RETENTION" in result.stdout + result.stderr


class InboxHeldStore(SQLiteStore):
    """Holds the engine's reads of the whole inbox until released, on purpose: a wait then comes first."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.released = asyncio.Event()

    async def read_inbox(self, after_seq: int, limit: int, shards: Any = None) -> list[InboxRow]:
        if shards is None:  # the engine's read (it owns every shard); a look at one run's shard passes
            await self.released.wait()
        return await super().read_inbox(after_seq, limit, shards)


async def test_a_wait_through_the_runner_before_it_reads_an_offline_submit_waits_for_the_run(
    tmp_path: Path,
) -> None:
    path = tmp_path / "covey.db"
    await LocalClient(path).submit(WORKFLOW, 7, run_id="early")  # no runner: the submit waits in the inbox
    covey = Embedded(path, agents=list(agents))
    held = covey.runner.store = InboxHeldStore(path)
    async with covey:
        waiting = asyncio.create_task(covey.wait("early"))
        with pytest.raises(NotFound, match="no run 'never'"):
            await covey.wait("never")
        await asyncio.sleep(0)
        assert not waiting.done(), "the run is not stored yet, and its wait is not refused"

        held.released.set()
        async with asyncio.timeout(20):
            info = await waiting
    assert (info.status, info.output) == ("succeeded", {"a": 7})


async def test_a_wait_for_an_offline_submit_the_engine_drops_ends_with_not_found(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    bad = RunSubmitted("doomed", {"name": "bad", "steps": {"a": {"skill": "echo", "input": "${"}}}, 1, 0)
    async with SQLiteStore(path) as store:  # appended as no covey command would: its spec does not compile
        await store.append_inbox([InboxRow("submit:doomed", "doomed", event_to_json(bad))])
    covey = Embedded(path, agents=list(agents))
    held = covey.runner.store = InboxHeldStore(path)
    async with covey:
        waiting = asyncio.create_task(covey.wait("doomed"))
        await asyncio.sleep(0)
        held.released.set()
        async with asyncio.timeout(20):
            with pytest.raises(NotFound, match="no run 'doomed': its submit was dropped"):
                await waiting
