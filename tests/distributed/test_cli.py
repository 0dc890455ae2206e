"""The command line on every shared store: serve with workers, submit, inspect, signal, cancel, state.

The same commands a user runs against the embedded file work against
PostgreSQL and Redis (with their own bus or RabbitMQ), given ``--store`` and
``--bus``; ``covey serve --app`` there starts an engine node and workers.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from covey.testing import wait_for
from tests.distributed.apps.fanout import FANOUT, expected_output
from tests.distributed.conftest import Backend
from tests.distributed.support import APPS as DISTRIBUTED_APPS
from tests.e2e.support import APPS, covey_cli, covey_process


def _cli(backend: Backend, cwd: Path, *args: str) -> tuple[int, str]:
    bus = ["--bus", backend.bus] if backend.bus else []
    result = covey_cli(*args, "--store", backend.store, *bus, cwd=cwd)
    return result.returncode, result.stdout + result.stderr


async def test_commands_against_a_shared_store(backend: Backend, tmp_path: Path) -> None:
    approval = str(APPS / "approval.yaml")
    # Given a run submitted before any engine or worker is up: it waits in the store's inbox.
    code, out = _cli(backend, tmp_path, "submit", approval, "--run-id", "r1")
    assert (code, out.strip()) == (0, "r1")
    bus = ["--bus", backend.bus] if backend.bus else []
    server = covey_process(
        "serve", "--app", str(APPS / "crashy.py"), "--workers", "1", "--store", backend.store, *bus,
        trace=tmp_path, cwd=tmp_path,
    )  # fmt: skip
    try:
        # When an engine node and a worker start, the run goes up to its wait step.
        def waiting() -> bool:
            code, out = _cli(backend, tmp_path, "show", "r1")
            return code == 0 and "approval" in out and "active" in out

        await wait_for(waiting, timeout=30, interval=0.2)
        code, out = _cli(backend, tmp_path, "workers")
        assert code == 0
        assert "step" in out
        assert "engine node" in out
        code, out = _cli(backend, tmp_path, "signal", "r1", "reject")
        assert code == 2
        assert "accepts no signal 'reject'" in out

        # Then a signal completes it (a repeated signal id is a no-op), and a second run is cancelled.
        assert _cli(backend, tmp_path, "signal", "r1", "approve", '{"ok": true}', "--id", "s1")[0] == 0
        assert _cli(backend, tmp_path, "signal", "r1", "approve", '{"ok": false}', "--id", "s1")[0] == 0
        assert _cli(backend, tmp_path, "submit", approval, "--run-id", "r2")[0] == 0

        def statuses() -> dict[str, str]:
            listed = _cli(backend, tmp_path, "ls", "--json")[1].splitlines()
            return {row["run_id"]: row["status"] for row in map(json.loads, listed)}

        await wait_for(lambda: statuses().get("r1") == "succeeded" and "r2" in statuses(), timeout=30)
        assert _cli(backend, tmp_path, "cancel", "r2")[0] == 0
        await wait_for(lambda: statuses() == {"r1": "succeeded", "r2": "cancelled"}, timeout=30)
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0

    code, out = _cli(backend, tmp_path, "show", "r1")
    assert '"n": 43' in out, "draft gave 42, publish added one"
    code, out = _cli(backend, tmp_path, "events", "r1", "--json")
    kinds = [json.loads(line)["type"] for line in out.splitlines()]
    assert kinds[0] == "RunSubmitted"
    assert kinds.count("SignalReceived") == 1
    assert kinds[-1] == "RunFinished"
    assert "step" not in _cli(backend, tmp_path, "workers")[1], "stopped workers unregister"

    # Shared state from the command line, on the shared store.
    assert _cli(backend, tmp_path, "state", "put", "team", "n", "5")[0] == 0
    assert _cli(backend, tmp_path, "state", "update", "team", "n", "add", "2")[0] == 0
    code, out = _cli(backend, tmp_path, "state", "put", "team", "n", "0", "--if-version", "1")
    assert code == 2
    assert "expected version 1, found 2" in out
    assert _cli(backend, tmp_path, "state", "get", "team", "n")[1].split() == ["version", "2", "7"]

    # Finished runs older than the age given are purged from the shared store, with their histories.
    def purged_all() -> bool:
        code, out = _cli(backend, tmp_path, "gc", "--older-than", "1s")
        assert code == 0, out
        return statuses() == {}

    await wait_for(purged_all, timeout=30, interval=0.3)
    code, out = _cli(backend, tmp_path, "show", "r1")
    assert code == 2
    assert "no run 'r1'" in out


def test_timekeeper_on_the_embedded_store_says_what_to_use(tmp_path: Path) -> None:
    result = covey_cli("timekeeper", cwd=tmp_path)
    assert result.returncode == 2
    assert "use 'covey serve'" in result.stdout


def test_run_a_workflow_on_a_shared_store(backend: Backend, tmp_path: Path) -> None:
    spec = tmp_path / "fanout.json"
    spec.write_text(json.dumps(FANOUT))
    code, out = _cli(
        backend, tmp_path, "run", str(spec), "--app", str(DISTRIBUTED_APPS / "fanout.py"), "--input", "n=3"
    )
    assert code == 0, out
    assert out.strip().splitlines()[-1] == str(expected_output(3))
    listed = [json.loads(line) for line in _cli(backend, tmp_path, "ls", "--json")[1].splitlines()]
    assert [(run["workflow"], run["status"]) for run in listed] == [("fanout", "succeeded")]
