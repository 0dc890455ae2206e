"""What the peers share: their task bodies, their worker processes (started and always stopped), W2's bookkeeping."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Self

from covey.bench.config import BenchError
from covey.bench.figures import Figure, percentile

__all__ = [
    "PeerProcess",
    "chain_latencies",
    "fan",
    "latency_figures",
    "noop",
    "peer_available",
    "stamp_a",
    "stamp_b",
    "whoami",
]

#: Seconds a peer's worker gets to stop on SIGTERM before it is killed.
STOP_GRACE_S = 15.0
#: W2 chains run before the measured ones (caches, connections).
WARM_CHAINS = 5


# The peers' task bodies: the same plain functions, wrapped by each peer as its tasks or actors.


def noop(value: object) -> object:
    """W1, W4 and the fan-out's elements: return the input."""
    return value


def stamp_a(value: object) -> int:
    """W2's first task: the wall clock at return, in ns."""
    return time.time_ns()


def stamp_b(t: int) -> int:
    """W2's second task: ns from the first one's return to this start."""
    started = time.time_ns()
    return started - int(t)


def fan(n: int) -> list[int]:
    """W3's first task: ``n`` items to fan out over."""
    return list(range(n))


def whoami(value: object) -> int:
    """Which worker process runs a task (to check every process serves), slow enough to spread."""
    time.sleep(0.02)
    return os.getpid()


def peer_available(module: str, distribution: str | None = None) -> str | None:
    """The installed version of a peer, or None when the ``bench`` extra is missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        return None
    return metadata.version(distribution or module)


class PeerProcess:
    """``python ARGS`` with extra environment, output to ``log``; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, args: list[str], extra_env: dict[str, str], log: Path) -> None:
        self.args = [sys.executable, *args]
        self.env = {**os.environ, **extra_env}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        return self

    def check(self, deadline: float | None = None) -> None:
        """Raise BenchError if the process exited or the deadline passed."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"{' '.join(self.args[1:4])} exited with {self.proc.returncode}:\n{tail}")
        if deadline is not None and time.monotonic() > deadline:
            raise BenchError(f"{' '.join(self.args[1:4])} did not get ready in time")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # its own session: the worker and the children it forked
            proc.wait()


def chain_latencies(one: Callable[[int], float], n: int) -> list[float]:
    """Run ``one(i)`` (a chain returning B's latency in ns) ``n`` times after a few warm-ups; µs each."""
    return [one(i) / 1_000 for i in range(n + WARM_CHAINS)][WARM_CHAINS:]


def latency_figures(system: str, store: str, latencies: list[float]) -> list[Figure]:
    """W2's p50 and p99 in µs."""
    n = len(latencies)
    return [
        Figure("W2", system, store, "p50 µs", percentile(latencies, 50), n),
        Figure("W2", system, store, "p99 µs", percentile(latencies, 99), n),
    ]
