"""Helpers for tests that run real covey processes."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

APPS = Path(__file__).parent / "apps"
_counter = itertools.count(1)


def covey_process(
    *args: str, trace: Path, cwd: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``covey ARGS`` in a child process with the trace folder in its environment."""
    env = {**os.environ, "COVEY_TEST_TRACE": str(trace), **(extra_env or {})}
    log = trace / f"covey-{args[0]}-{next(_counter)}.log"
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "covey", *args], cwd=cwd, env=env, stdout=out, stderr=out
        )


def covey_cli(
    *args: str, cwd: Path, trace: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``covey ARGS`` to completion and capture its output."""
    env = {**os.environ, "COVEY_TEST_TRACE": str(trace or cwd), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "covey", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def log_lines(path: Path) -> list[list[str]]:
    """The executions log as split lines (missing file: none)."""
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]
