"""Reports and claims over the runner's socket: answered once committed, all or nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from covey.errors import CoveyError
from covey.runtime.runner import Runner
from covey.worker.socket_link import SocketLink

PAIR = {"name": "pair", "steps": {"a": {"skill": "echo"}, "b": {"skill": "echo"}}}


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
