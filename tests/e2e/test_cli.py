"""The command line, through real processes, on one SQLite file."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from covey.runtime.lockfile import find_runner_socket
from covey.state.model import StateOp
from covey.store.sqlite import SQLiteStore
from covey.testing import wait_for
from tests.e2e.support import APPS, covey_cli, covey_process

ROOT = Path(__file__).parent.parent.parent


@pytest.mark.slow
def test_demo_runs_and_prints_its_report(tmp_path: Path) -> None:
    result = covey_cli("run", str(ROOT / "examples" / "triage" / "app.py"), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"tickets": 30' in result.stdout
    assert "escalation_status" in result.stdout
    listed = covey_cli("ls", "--json", cwd=tmp_path)
    runs = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["workflow"], r["status"]) for r in runs] == [("support-triage", "succeeded")]


def test_malformed_spec_is_refused_with_its_field(tmp_path: Path) -> None:
    result = covey_cli("submit", str(APPS / "broken.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "step 'a'" in result.stdout
    assert "retry.attempts" in result.stdout
    assert not (tmp_path / "covey.db").exists()


def test_unknown_run_is_a_clear_error(tmp_path: Path) -> None:
    covey_cli("submit", str(APPS / "approval.yaml"), cwd=tmp_path)
    result = covey_cli("show", "no-such-run", cwd=tmp_path)
    assert result.returncode == 2
    assert "no run 'no-such-run'" in result.stdout


async def test_submit_offline_then_serve_signal_and_inspect(tmp_path: Path) -> None:
    # Given a run submitted while no runner is up, it waits in the store's inbox.
    submitted = covey_cli("submit", str(APPS / "approval.yaml"), "--run-id", "r1", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout
    assert submitted.stdout.strip() == "r1"

    # When a runner starts, it runs the run up to its wait step.
    server = covey_process(
        "serve", "--app", str(APPS / "crashy.py"), "--workers", "1", trace=tmp_path, cwd=tmp_path
    )
    try:
        await wait_for(lambda: find_runner_socket(tmp_path / "covey.db") is not None, timeout=20)

        def waiting() -> bool:
            shown = covey_cli("show", "r1", cwd=tmp_path)
            return "approval" in shown.stdout and "active" in shown.stdout

        await wait_for(waiting, timeout=20, interval=0.2)
        workers = covey_cli("workers", cwd=tmp_path)
        assert workers.returncode == 0
        assert "step" in workers.stdout
        assert "running" in workers.stdout
        refused = covey_cli("signal", "r1", "reject", cwd=tmp_path)
        assert refused.returncode == 2
        assert "accepts no signal 'reject'" in refused.stdout

        # Then a signal completes the wait, and the run finishes with the payload steering it.
        sent = covey_cli("signal", "r1", "approve", '{"ok": true}', "--id", "s1", cwd=tmp_path)
        assert sent.returncode == 0, sent.stdout
        again = covey_cli("signal", "r1", "approve", '{"ok": false}', "--id", "s1", cwd=tmp_path)
        assert again.returncode == 0

        def finished() -> bool:
            listed = covey_cli("ls", "--json", cwd=tmp_path).stdout.splitlines()
            return [json.loads(line)["status"] for line in listed] == ["succeeded"]

        await wait_for(finished, timeout=20, interval=0.2)
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(20) == 0

    assert "step" not in covey_cli("workers", cwd=tmp_path).stdout, "stopped workers unregister"
    shown = covey_cli("show", "r1", cwd=tmp_path)
    assert "succeeded" in shown.stdout
    assert '"n": 43' in shown.stdout, "draft gave 42, publish added one"
    events = covey_cli("events", "r1", "--json", cwd=tmp_path)
    kinds = [json.loads(line)["type"] for line in events.stdout.splitlines()]
    assert kinds[0] == "RunSubmitted"
    assert kinds.count("SignalReceived") == 1, "the repeated signal id is a no-op"
    assert kinds[-1] == "RunFinished"


def test_cancel_through_the_store_when_no_runner(tmp_path: Path) -> None:
    covey_cli("submit", str(APPS / "approval.yaml"), "--run-id", "r2", cwd=tmp_path)
    result = covey_cli("cancel", "r2", cwd=tmp_path)
    assert result.returncode == 2, "a run still in the inbox is not known yet"
    assert "no run 'r2'" in result.stdout


def test_state_from_the_command_line(tmp_path: Path) -> None:
    assert covey_cli("state", "put", "team", "n", "5", cwd=tmp_path).returncode == 0
    assert covey_cli("state", "update", "team", "n", "add", "2", cwd=tmp_path).returncode == 0
    conflict = covey_cli("state", "put", "team", "n", "0", "--if-version", "1", cwd=tmp_path)
    assert conflict.returncode == 2
    assert "expected version 1, found 2" in conflict.stdout
    shown = covey_cli("state", "get", "team", "n", cwd=tmp_path)
    assert shown.stdout.split() == ["version", "2", "7"]
    bad = covey_cli("state", "update", "team", "n", "append", '"x"', cwd=tmp_path)
    assert bad.returncode == 2
    assert "append needs a list" in bad.stdout
    listed = covey_cli("state", "ls", "team", cwd=tmp_path)
    assert "n" in listed.stdout


def test_state_watch_resumes_from_its_cursor(tmp_path: Path) -> None:
    covey_cli("state", "put", "feed", "a", "1", cwd=tmp_path)
    watcher = covey_process("state", "watch", "feed", "--count", "3", trace=tmp_path, cwd=tmp_path)
    try:
        covey_cli("state", "update", "feed", "a", "add", "1", cwd=tmp_path)
        covey_cli("state", "delete", "feed", "a", cwd=tmp_path)
        assert watcher.wait(20) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
    log = next(tmp_path.glob("covey-state-*.log")).read_text()
    changes = [json.loads(line) for line in log.splitlines()]
    assert [(c["seq"], c["version"], c["value"], c["deleted"]) for c in changes] == [
        (1, 1, 1, False),
        (2, 2, 2, False),
        (3, 3, None, True),
    ]
    resumed = covey_cli("state", "watch", "feed", "--after", "2", "--count", "1", cwd=tmp_path)
    assert [json.loads(line)["seq"] for line in resumed.stdout.splitlines()] == [3]


def test_state_watch_from_a_trimmed_cursor_says_how_to_resync(tmp_path: Path) -> None:
    async def write() -> None:
        async with SQLiteStore(tmp_path / "covey.db") as store:
            store.feed_keep = 3
            for i in range(10):
                await store.state_apply([StateOp("put", "feed", "k", i)])

    asyncio.run(write())

    result = covey_cli("state", "watch", "feed", "--count", "1", cwd=tmp_path)

    assert result.returncode == 2
    assert "the changes after 0 are no longer all kept (the oldest is 8)" in result.stdout
    assert "then watch from 10" in result.stdout
    resumed = covey_cli("state", "watch", "feed", "--after", "7", "--count", "3", cwd=tmp_path)
    assert [json.loads(line)["value"] for line in resumed.stdout.splitlines()] == [7, 8, 9]


def test_state_watch_resync_prints_a_snapshot_then_the_changes_after_it(tmp_path: Path) -> None:
    async def write() -> None:
        async with SQLiteStore(tmp_path / "covey.db") as store:
            store.feed_keep = 3
            for i in range(10):
                await store.state_apply([StateOp("put", "feed", f"k{i % 2}", i)])

    asyncio.run(write())
    watcher = covey_process(
        "state", "watch", "feed", "--resync", "--count", "1", trace=tmp_path, cwd=tmp_path
    )
    try:
        log = next(iter(tmp_path.glob("covey-state-*.log")))
        asyncio.run(
            wait_for(lambda: "snapshot" in log.read_text(), timeout=20, message="the snapshot is printed")
        )
        covey_cli("state", "put", "feed", "k0", "100", cwd=tmp_path)
        assert watcher.wait(20) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
    snapshot, change = [json.loads(line) for line in log.read_text().splitlines()]
    assert snapshot["snapshot"]["cursor"] == 10
    assert {e["key"]: e["value"] for e in snapshot["snapshot"]["entries"]} == {"k0": 8, "k1": 9}
    assert (change["seq"], change["key"], change["value"]) == (11, "k0", 100)


def test_a_submit_refused_for_a_full_backlog_exits_75(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COVEY_MAX_BACKLOG", "1")
    assert covey_cli("submit", str(APPS / "approval.yaml"), cwd=tmp_path).returncode == 0

    refused = covey_cli("submit", str(APPS / "approval.yaml"), cwd=tmp_path)

    assert refused.returncode == 75, refused.stdout + refused.stderr
    assert "covey is too busy: 1 unfinished run, and the limit is 1 (COVEY_MAX_BACKLOG)" in refused.stdout
