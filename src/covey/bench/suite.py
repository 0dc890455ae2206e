"""One bench invocation: the bounds, each workload on each backend, then the peers on the same servers.

Which baselines and peers run follows the backends chosen: the SQLite commit
and LangGraph with ``sqlite``; a Redis round trip, Celery (Redis broker) and
Dramatiq with a Redis store; Celery with a RabbitMQ broker with a ``+amqp``
bus; a PostgreSQL commit and DBOS with a PostgreSQL store. Peers run only
when the ``bench`` extra is installed and ``with_peers`` is set.

The throughput workloads (W1, W1b, W4) run ``sizes.throughput_runs`` times
for covey and for each peer alike, and the best rate counts, as ``timeit``
takes the best of its repeats: on a shared machine noise only ever slows a
run down, and one slowed run of one system would otherwise decide a ratio.
The repeats go in rounds, each system once per round (:func:`in_rounds`), so
the systems compared meet the same slow and fast spells of the machine
instead of one system's repeats all falling in one spell. Each figure's note
lists every rate measured. The latency workloads (W2, W3) already summarize
hundreds of hand-offs or twenty runs; they run once each, before the rounds.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from covey.bench import celery_peer, dbos_peer, dramatiq_peer, peers
from covey.bench.backends import Backend
from covey.bench.baselines import (
    POSTGRES_PERSISTS,
    REDIS_PERSISTS,
    SQLITE_PERSISTS,
    postgres_commit,
    redis_ping,
    sqlite_commit,
)
from covey.bench.config import WORKLOADS, Env
from covey.bench.figures import Figure
from covey.bench.floor import FLOOR_PERSISTS, handoff_floor
from covey.bench.workloads import COVEY_WORKLOADS, covey_persists
from covey.errors import ConfigError
from covey.runtime.eventloop import run_async

__all__ = [
    "THROUGHPUT",
    "Job",
    "Peer",
    "in_rounds",
    "parse_only",
    "persists",
    "run_suite",
    "wanted_peers",
]


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


@dataclass(frozen=True, slots=True)
class Peer:
    """A peer system on one server: how to tell it is installed, what it persists, its workloads."""

    label: str
    available: Callable[[], str | None]
    persists: Callable[[Env], str]
    workloads: Callable[[], dict[str, Callable[[Env], list[Figure]]]]


def _bind(
    table: Callable[[], dict[str, Callable[[Env, str], list[Figure]]]], store: str
) -> Callable[[], dict[str, Callable[[Env], list[Figure]]]]:
    def bound() -> dict[str, Callable[[Env], list[Figure]]]:
        return {name: _on(fn, store) for name, fn in table().items()}

    return bound


def _on(fn: Callable[[Env, str], list[Figure]], store: str) -> Callable[[Env], list[Figure]]:
    def measure(env: Env) -> list[Figure]:
        return fn(env, store)

    return measure


LANGGRAPH = Peer(
    "langgraph", peers.available, peers.langgraph_persists, lambda: dict(peers.LANGGRAPH_WORKLOADS)
)
CELERY_REDIS = Peer(
    "celery redis",
    celery_peer.available,
    lambda env: celery_peer.celery_persists(),
    _bind(celery_peer.celery_workloads, "redis"),
)
CELERY_RABBITMQ = Peer(
    "celery rabbitmq",
    celery_peer.available,
    lambda env: celery_peer.celery_persists(),
    _bind(celery_peer.celery_workloads, "rabbitmq"),
)
DRAMATIQ = Peer(
    "dramatiq",
    dramatiq_peer.available,
    lambda env: dramatiq_peer.dramatiq_persists(),
    _bind(dramatiq_peer.dramatiq_workloads, "redis"),
)
DBOS = Peer(
    "dbos",
    dbos_peer.available,
    lambda env: dbos_peer.dbos_persists(),
    _bind(dbos_peer.dbos_workloads, "postgres"),
)


def wanted_peers(backends: Sequence[Backend]) -> list[Peer]:
    """The peers a user of these backends would pick instead (installed or not)."""
    kinds = {backend.kind for backend in backends}
    amqp = any(backend.bus for backend in backends)
    out = []
    if "sqlite" in kinds:
        out.append(LANGGRAPH)
    if "redis" in kinds:
        out += [CELERY_REDIS, DRAMATIQ]
    if amqp:
        out.append(CELERY_RABBITMQ)
    if "postgres" in kinds:
        out.append(DBOS)
    return out


def persists(
    env: Env, backends: Sequence[Backend], *, with_peers: bool, workloads: Iterable[str]
) -> list[str]:
    """One line per system (and bound) measuring ``workloads`` on ``backends``: what it writes durably, and how."""
    kinds = {backend.kind for backend in backends}
    lines = [covey_persists(kind) for kind in ("sqlite", "postgres", "redis") if kind in kinds]
    lines += [line for kind, line in _BASELINE_LINES if kind in kinds]
    if _measures_floor(kinds, workloads):
        lines.append(FLOOR_PERSISTS)
    if with_peers:
        seen = set()
        for peer in wanted_peers(backends):
            if peer.available() and peer.persists not in seen:
                seen.add(peer.persists)
                line = peer.persists(env)
                if line not in lines:
                    lines.append(line)
    return lines


_BASELINE_LINES = (("sqlite", SQLITE_PERSISTS), ("redis", REDIS_PERSISTS), ("postgres", POSTGRES_PERSISTS))


def run_suite(
    env: Env, workloads: Iterable[str], backends: Sequence[Backend] | None = None, *, with_peers: bool = True
) -> Iterator[Figure]:
    """Measure, yielding figures as they come: the bounds, covey per backend and workload, then the peers."""
    backends = list(backends or [env.backend])
    workloads = list(workloads)
    kinds = {backend.kind for backend in backends}
    if "sqlite" in kinds:
        yield from sqlite_commit(env)
    if _measures_floor(kinds, workloads):
        yield from handoff_floor(env)
    if "redis" in kinds:
        yield from run_async(redis_ping(env))
    if "postgres" in kinds:
        yield from run_async(postgres_commit(env))
    jobs: list[Job] = []
    for backend in backends:
        on = dataclasses.replace(env, backend=backend)
        for name in workloads:
            jobs.append(Job(name, functools.partial(_covey_workload, name, on)))
    if with_peers:
        for peer in wanted_peers(backends):
            if peer.available() is None:
                continue
            table = peer.workloads()
            for name in workloads:
                if name in table:
                    jobs.append(Job(name, functools.partial(table[name], env)))
    yield from in_rounds(env, jobs)


def _measures_floor(kinds: set[str], workloads: Iterable[str]) -> bool:
    """Whether the run includes the hand-off floor: the embedded store's W2 is measured against it."""
    return "sqlite" in kinds and "W2" in workloads


def _covey_workload(name: str, env: Env) -> list[Figure]:
    return run_async(COVEY_WORKLOADS[name](env))


@dataclass(frozen=True, slots=True)
class Job:
    """One system's measurement of one workload."""

    workload: str
    measure: Callable[[], Iterable[Figure]]


def in_rounds(env: Env, jobs: Sequence[Job]) -> Iterator[Figure]:
    """Every job's figures: each one that runs once in the order given, then each throughput workload
    in ``throughput_runs`` rounds of all its jobs, the best of each job's runs kept."""
    rounds = env.sizes.throughput_runs
    once = [job for job in jobs if job.workload not in THROUGHPUT or rounds <= 1]
    repeated = [job for job in jobs if job.workload in THROUGHPUT and rounds > 1]
    for job in once:
        yield from job.measure()
    for name in dict.fromkeys(job.workload for job in repeated):
        mine = [job for job in repeated if job.workload == name]
        runs: list[list[Figure]] = [[] for _ in mine]
        for _ in range(rounds):
            for job, figures in zip(mine, runs, strict=True):
                figures.extend(job.measure())
        for figures in runs:
            yield from _best(figures)


#: The workloads that measure a rate, run ``throughput_runs`` times.
THROUGHPUT = frozenset({"W1", "W1b", "W4"})


def _best(figures: Iterable[Figure]) -> list[Figure]:
    """The best of each kind of figure (a rate's highest, a time's lowest), its note listing them all."""
    samples: dict[tuple[str, str, str, str], list[Figure]] = {}
    for figure in figures:
        samples.setdefault((figure.workload, figure.system, figure.store, figure.metric), []).append(figure)
    best = []
    for (_, _, _, metric), figures in samples.items():
        pick = max if metric.endswith("/s") else min  # a rate, or a time
        top = pick(figures, key=lambda figure: figure.value)
        values = ", ".join(f"{figure.value:,.0f}" for figure in figures)
        best.append(dataclasses.replace(top, note=f"best of {len(figures)}: {values}"))
    return best
