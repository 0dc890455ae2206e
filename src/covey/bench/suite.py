"""One bench invocation: the SQLite bound, then each workload on covey and on LangGraph."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from covey.bench import peers
from covey.bench.baselines import SQLITE_PERSISTS, sqlite_commit
from covey.bench.config import WORKLOADS, Env
from covey.bench.figures import Figure
from covey.bench.workloads import COVEY_PERSISTS, COVEY_WORKLOADS
from covey.errors import ConfigError
from covey.runtime.eventloop import run_async

__all__ = ["parse_only", "persists", "run_suite"]


def parse_only(text: str | None) -> list[str]:
    """The workloads named by ``--only W1,W2`` (any case), in run order; all when None.

    Raises:
        ConfigError: for a name that is not a workload.
    """
    if not text:
        return list(WORKLOADS)
    by_key = {name.lower(): name for name in WORKLOADS}
    wanted = set()
    for part in text.split(","):
        key = part.strip().lower()
        if not key:
            continue
        if key not in by_key:
            raise ConfigError(f"--only: no workload {part.strip()!r}; choose from {', '.join(WORKLOADS)}")
        wanted.add(by_key[key])
    return [name for name in WORKLOADS if name in wanted]


def persists(env: Env, *, with_peers: bool) -> list[str]:
    """One line per system saying what it writes durably, and how."""
    lines = [COVEY_PERSISTS, SQLITE_PERSISTS]
    if with_peers and peers.available():
        lines.append(peers.langgraph_persists(env))
    return lines


def run_suite(env: Env, workloads: Iterable[str], *, with_peers: bool = True) -> Iterator[Figure]:
    """Measure, yielding figures as they come: the commit bound, then covey and LangGraph per workload."""
    yield from sqlite_commit(env)
    langgraph = with_peers and peers.available() is not None
    for name in workloads:
        yield from run_async(COVEY_WORKLOADS[name](env))
        if langgraph and name in peers.LANGGRAPH_WORKLOADS:
            yield from peers.LANGGRAPH_WORKLOADS[name](env)
