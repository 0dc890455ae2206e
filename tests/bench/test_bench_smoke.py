"""``covey bench --quick`` end to end: it runs and prints well-formed JSON lines (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

KEYS = {"workload", "system", "store", "metric", "value"}


def test_quick_bench_prints_json_lines(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "covey", "--store", f"sqlite:///{tmp_path}/covey.db"]
    command += ["bench", "--quick", "--only", "W1,W2", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=110, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr

    lines = [json.loads(line) for line in done.stdout.splitlines()]

    assert lines, done.stderr
    for line in lines:
        assert set(line) >= KEYS
        assert isinstance(line["value"], int | float)
        assert line["store"] == "sqlite"
    covey = {(line["workload"], line["metric"]) for line in lines if line["system"] == "covey"}
    assert covey == {("W1", "runs/s"), ("W2", "p50 µs"), ("W2", "p99 µs")}
    # With W2 measured, its bounds are too: one commit, and the hand-off with no engine.
    assert {line["workload"] for line in lines} == {"commit", "hand-off floor", "W1", "W2"}
    assert any(line["system"] == "sqlite" for line in lines)
    assert not list(tmp_path.glob(".covey-bench-*")), "the bench leaves no files behind"


def test_unknown_backends_are_refused_clearly(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "covey", "bench", "--backends", "mongodb", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)

    assert done.returncode == 2
    message = " ".join((done.stdout + done.stderr).split())
    assert "mongodb" in message
    assert "redis+amqp" in message
