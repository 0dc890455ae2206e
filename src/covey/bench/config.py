"""What a bench invocation measures: the sizes of each workload and where it writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from covey.bench.backends import Backend, Servers, backend_named
from covey.errors import CoveyError

__all__ = ["FULL", "QUICK", "WORKLOADS", "BenchError", "Env", "Sizes"]

#: Every workload, in the order they run and print.
WORKLOADS = ("W1", "W1b", "W2", "W3", "W4", "BCAST")


class BenchError(CoveyError):
    """A workload could not be measured (a run failed, a worker died, a peer broke)."""


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each workload is."""

    w1_runs: int = 5_000
    """W1: one-step no-op runs submitted at once."""
    w1b_items: int = 5_000
    """W1b: items one map step runs a no-op over."""
    w2_chains: int = 500
    """W2: two-step chains run one after another (hand-off latency)."""
    w3_repeats: int = 20
    """W3: fan-out runs, one after another (median wall time)."""
    w3_width: int = 100
    """W3: parallel steps per fan-out."""
    w4_runs: int = 100
    """W4: sequential workflows submitted at once."""
    w4_steps: int = 10
    """W4: steps per sequential workflow."""
    commits: int = 2_000
    """The SQLite baseline: durable commits, one after another."""
    langgraph_threads: int = 4
    """LangGraph W1: threads invoking the graph concurrently."""
    bcast_listeners: tuple[int, ...] = (10, 100, 1_000)
    """BCAST: listener counts (agents watching one namespace over 4 worker processes)."""
    bcast_updates: int = 20
    """BCAST: updates the writer commits per listener count."""
    throughput_runs: int = 3
    """W1, W1b, W4: times each system runs the workload; its best rate counts (see :mod:`.suite`)."""


#: The sizes the issue specifies.
FULL = Sizes()
#: A smoke run: every code path, a few seconds.
QUICK = Sizes(
    w1_runs=500,
    w1b_items=500,
    w2_chains=50,
    w3_repeats=5,
    w4_runs=20,
    commits=300,
    langgraph_threads=4,
    bcast_listeners=(10,),
    bcast_updates=5,
    throughput_runs=1,
)


def _silent(_text: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Env:
    """Where and how a bench runs.

    Args:
        directory: where every database file goes (one fresh file per workload
            and system); it should be on the disk being measured, not a tmpfs.
        workers: covey worker processes.
        sizes: how big each workload is.
        backend: the store (and bus) covey's workloads run on.
        servers: the shared servers, for the baselines and the peers.
        say: progress callback (one short line of text).
    """

    directory: Path
    workers: int = 2
    sizes: Sizes = FULL
    backend: Backend = field(default_factory=lambda: backend_named("sqlite", Servers()))
    servers: Servers = field(default_factory=Servers)
    say: Callable[[str], None] = field(default=_silent)

    @property
    def store(self) -> str:
        """The label printed with each covey figure: the backend's name (``sqlite``, ``redis+amqp``, ...)."""
        return self.backend.name

    def db(self, name: str) -> Path:
        """A fresh database path in the bench directory (any old file of that name is removed)."""
        path = self.directory / f"{name}.db"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return path
