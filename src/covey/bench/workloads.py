"""The workloads, driven against covey's embedded runtime.

Each workload gets a fresh SQLite file, a runner in this process and
``env.workers`` worker processes (``covey worker covey.bench.agents``), with
``durable=True``: every commit, so every completed step, is fsync'd
(``synchronous=FULL``) before the step after it can start. Clocks start only
once every worker process is connected and has run a task.

* **W1** ``w1_runs`` one-step no-op runs submitted at once (one group commit),
  timed from submit to the last result: runs/s.
* **W1b** one run mapping a no-op step over ``w1b_items`` items: tasks/s.
* **W2** ``w2_chains`` two-step chains, one after another; step B reports the
  wall-clock time from step A's return to its own start: p50/p99 in µs.
* **W3** one step fanning out to ``w3_width`` parallel steps and a join,
  ``w3_repeats`` times one after another: median wall time in ms.
* **W4** ``w4_runs`` runs of a ``w4_steps``-step sequential workflow submitted
  at once: steps/s.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

from covey.bench.broadcast import broadcast
from covey.bench.config import BenchError, Env
from covey.bench.figures import Figure, percentile
from covey.bench.fleet import SharedCovey, shared_covey
from covey.embedded import Embedded
from covey.store.base import RunInfo

__all__ = [
    "COVEY_PERSISTS",
    "COVEY_WORKLOADS",
    "chain_workflow",
    "covey_persists",
    "fan_workflow",
    "sequence_workflow",
]

#: The module worker processes import.
APP = "covey.bench.agents"
#: Task slots per worker process.
CONCURRENCY = 64
SYSTEM = "covey"
#: What covey writes, printed with the figures.
COVEY_PERSISTS = (
    "covey: every event, step output and task lease committed with fsync "
    "(WAL, synchronous=FULL) before the next step starts; group commit"
)

#: What covey writes on each shared store.
SHARED_PERSISTS = {
    "postgres": (
        "covey on postgres: every event, step output and task lease committed (synchronous_commit on) "
        "before the next step starts; 1 covey timekeeper + worker processes claiming from the store"
    ),
    "redis": (
        "covey on redis: every event, step output and task lease written by one Lua script per commit "
        "before the next step starts (AOF off here: durable only as far as Redis is); "
        "1 covey timekeeper + worker processes claiming from the store"
    ),
}


def covey_persists(kind: str) -> str:
    """What covey writes on the store kind ``sqlite``, ``postgres`` or ``redis``."""
    return COVEY_PERSISTS if kind == "sqlite" else SHARED_PERSISTS[kind]


NOOP_WORKFLOW: dict[str, Any] = {
    "name": "bench-w1",
    "steps": {"noop": {"skill": "noop", "input": "${input}"}},
}
MAP_WORKFLOW: dict[str, Any] = {
    "name": "bench-w1b",
    "steps": {"each": {"skill": "noop", "map": "${input.items}", "input": "${item}"}},
}
WHOAMI_WORKFLOW: dict[str, Any] = {"name": "bench-warmup", "steps": {"who": {"skill": "whoami"}}}


def chain_workflow() -> dict[str, Any]:
    """W2: step B consumes step A's output."""
    return {
        "name": "bench-w2",
        "steps": {
            "a": {"skill": "stamp_a", "input": "${input}"},
            "b": {"skill": "stamp_b", "input": "${steps.a}"},
        },
    }


def fan_workflow(width: int) -> dict[str, Any]:
    """W3: one step returning ``width`` items, a map step over them, a join."""
    return {
        "name": "bench-w3",
        "steps": {
            "first": {"skill": "fan", "input": {"n": width}},
            "fanout": {"skill": "noop", "map": "${steps.first.items}", "input": "${item}"},
            "join": {"skill": "noop", "input": "${steps.fanout}"},
        },
        "max_steps": width + 10,
    }


def sequence_workflow(steps: int) -> dict[str, Any]:
    """W4: ``steps`` no-op steps, each consuming the previous one's output."""
    body: dict[str, Any] = {"s1": {"skill": "noop", "input": "${input}"}}
    for i in range(2, steps + 1):
        body[f"s{i}"] = {"skill": "noop", "input": f"${{steps.s{i - 1}}}"}
    return {"name": "bench-w4", "steps": body}


class _Embedded:
    """What the workloads use of covey, on the embedded store (the same calls as :class:`SharedCovey`)."""

    def __init__(self, covey: Embedded) -> None:
        self.covey = covey

    def check_workers(self) -> None:
        self.covey.check_workers()

    async def submit(self, workflow: dict[str, Any], run_input: Any) -> str:
        return await self.covey.submit(workflow, run_input)

    async def submit_many(self, runs: list[tuple[dict[str, Any], Any]]) -> list[str]:
        return await self.covey.submit_many(list(runs))

    async def wait_all(self, ids: Sequence[str], *, infos: bool = True) -> list[RunInfo]:
        done = await asyncio.gather(*(self.covey.wait(run_id) for run_id in ids))
        failed = [info for info in done if info.status != "succeeded"]
        if failed:
            raise BenchError(
                f"{len(failed)} bench runs did not succeed; first: {failed[0].status} {failed[0].error}"
            )
        return list(done)


Covey = _Embedded | SharedCovey


@asynccontextmanager
async def _covey(env: Env, name: str) -> AsyncIterator[Covey]:
    """covey on ``env.backend`` with ``env.workers`` connected, warmed-up worker processes.

    Embedded: a runner in this process on a fresh file. Shared: a fresh schema
    or prefix, one ``covey timekeeper`` and the worker processes.
    """
    if env.backend.embedded:
        path = env.db(f"covey-{name}")
        async with Embedded(
            path, app=APP, workers=env.workers, processes=True, concurrency=CONCURRENCY, durable=True
        ) as embedded:
            covey: Covey = _Embedded(embedded)
            await _warm_up(covey, env.workers)
            yield covey
        return
    async with shared_covey(
        env.backend, name, workers=env.workers, concurrency=CONCURRENCY, app=APP, logs=env.directory
    ) as shared:
        await _warm_up(shared, env.workers)
        yield shared


async def _warm_up(covey: Covey, workers: int, timeout_s: float = 60.0) -> None:
    """Run tasks until every worker process has run one (so none is still starting)."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(pids) < workers:
        if time.monotonic() > deadline:
            raise BenchError(
                f"only {len(pids)} of {workers} worker processes started within {timeout_s:.0f} s"
            )
        covey.check_workers()
        ids = await covey.submit_many([(WHOAMI_WORKFLOW, None)] * (4 * workers))
        for info in await covey.wait_all(ids):
            pids.add(int(info.output["who"]))


def _figure(env: Env, workload: str, metric: str, value: float, n: int, note: str = "") -> Figure:
    return Figure(workload, SYSTEM, env.store, metric, value, n, note)


async def w1(env: Env) -> list[Figure]:
    """W1: one-step no-op runs submitted at once, submit to last result."""
    n = env.sizes.w1_runs
    async with _covey(env, "w1") as covey:
        env.say(f"covey W1: {n} one-step runs")
        started = time.perf_counter()
        ids = await covey.submit_many([(NOOP_WORKFLOW, i) for i in range(n)])
        await covey.wait_all(ids, infos=False)
        elapsed = time.perf_counter() - started
    return [_figure(env, "W1", "runs/s", n / elapsed, n, f"{elapsed:.2f} s")]


async def w1b(env: Env) -> list[Figure]:
    """W1b: one run mapping a no-op over many items."""
    n = env.sizes.w1b_items
    async with _covey(env, "w1b") as covey:
        env.say(f"covey W1b: one run mapping over {n} items")
        started = time.perf_counter()
        run_id = await covey.submit(MAP_WORKFLOW, {"items": list(range(n))})
        (info,) = await covey.wait_all([run_id])
        elapsed = time.perf_counter() - started
    if len(info.output["each"]) != n:
        raise BenchError(f"W1b: the map returned {len(info.output['each'])} results, expected {n}")
    return [_figure(env, "W1b", "tasks/s", n / elapsed, n, f"{elapsed:.2f} s")]


async def w2(env: Env) -> list[Figure]:
    """W2: hand-off latency, A's return to B's start, over chains run one after another."""
    n = env.sizes.w2_chains
    workflow = chain_workflow()
    latencies: list[float] = []
    async with _covey(env, "w2") as covey:
        env.say(f"covey W2: {n} two-step chains")
        for i in range(n + 5):
            (info,) = await covey.wait_all([await covey.submit(workflow, i)])
            if i >= 5:  # the first few chains warm caches up
                latencies.append(info.output["b"]["latency_ns"] / 1_000)
    return [
        _figure(env, "W2", "p50 µs", percentile(latencies, 50), n),
        _figure(env, "W2", "p99 µs", percentile(latencies, 99), n),
    ]


async def w3(env: Env) -> list[Figure]:
    """W3: fan out to ``w3_width`` parallel steps and join; median wall time."""
    n, width = env.sizes.w3_repeats, env.sizes.w3_width
    workflow = fan_workflow(width)
    walls: list[float] = []
    async with _covey(env, "w3") as covey:
        env.say(f"covey W3: {n} fan-outs to {width} steps")
        for i in range(n + 1):
            started = time.perf_counter()
            (info,) = await covey.wait_all([await covey.submit(workflow, None)])
            if i >= 1:  # one warm-up run
                walls.append((time.perf_counter() - started) * 1_000)
            if len(info.output["join"]) != width:
                raise BenchError(f"W3: the join saw {len(info.output['join'])} results, expected {width}")
    return [
        _figure(env, "W3", "median ms", statistics.median(walls), n, f"p90 {percentile(walls, 90):.1f} ms")
    ]


async def w4(env: Env) -> list[Figure]:
    """W4: sequential workflows submitted at once; steps per second."""
    n, steps = env.sizes.w4_runs, env.sizes.w4_steps
    workflow = sequence_workflow(steps)
    async with _covey(env, "w4") as covey:
        env.say(f"covey W4: {n} runs of {steps} sequential steps")
        started = time.perf_counter()
        ids = await covey.submit_many([(workflow, i) for i in range(n)])
        await covey.wait_all(ids, infos=False)
        elapsed = time.perf_counter() - started
    return [_figure(env, "W4", "steps/s", n * steps / elapsed, n * steps, f"{elapsed:.2f} s")]


#: Each workload's covey measurement, by name.
COVEY_WORKLOADS: dict[str, Callable[[Env], Coroutine[Any, Any, list[Figure]]]] = {
    "W1": w1,
    "W1b": w1b,
    "W2": w2,
    "W3": w3,
    "W4": w4,
    "BCAST": broadcast,
}
