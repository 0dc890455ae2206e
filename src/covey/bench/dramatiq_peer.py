"""Dramatiq 2 on the bench's workloads: the Redis broker, results in Redis.

The bench starts ``dramatiq covey.bench.dramatiq_peer --processes 2`` (8
threads each, Dramatiq's default) on a broker namespace of its own, and stops
it afterwards. Everything else keeps Dramatiq's defaults (acks after the
actor returns, prefetch twice the threads, the default middleware plus
``Results``) except the consumer's idle poll: Dramatiq's Redis consumer polls
with a backoff capped at ``worker_timeout`` (1,000 ms by default), lowered to
10 ms here (``dramatiq_worker_timeout=10``). Results are read with a blocking
``BRPOPLPUSH``, not polled.

* **W1** a ``group`` of one-message runs, ``run()`` then ``get_results(block=True)``.
* **W2** a ``pipeline`` of two actors: B gets A's result (A returns the wall
  clock as its last action, B reads it as its first).
* **W4** ``pipeline`` of 10 ``noop`` actors, 100 sent at once.

W3 is not run: a fan-out with a join needs Dramatiq's group callbacks, a
rate-limiter barrier the defaults do not include.

Worker processes import this module; it reads the Redis URL and the namespace
from ``COVEY_BENCH_DRAMATIQ_*``.
"""

from __future__ import annotations

import importlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from covey.bench.config import BenchError, Env
from covey.bench.figures import Figure
from covey.bench.peer_support import (
    PeerProcess,
    chain_latencies,
    latency_figures,
    noop,
    peer_available,
    stamp_a,
    stamp_b,
    whoami,
)

__all__ = ["available", "dramatiq_persists", "dramatiq_workloads"]

SYSTEM = "dramatiq"
STORE = "redis"
#: The consumer's longest idle poll, in ms (Dramatiq's default is 1,000).
POLL_MS = 10
_ENV_URL, _ENV_NAMESPACE = "COVEY_BENCH_DRAMATIQ_URL", "COVEY_BENCH_DRAMATIQ_NAMESPACE"
#: Result lifetime (ms): long enough for any workload.
RESULT_TTL_MS = 600_000


def available() -> str | None:
    """The installed Dramatiq version, or None."""
    return peer_available("dramatiq")


def dramatiq_persists() -> str:
    """What Dramatiq writes."""
    return (
        f"dramatiq {available()}: each message in Redis (a queue list and a message hash), acked after the "
        "actor returns; every result in Redis (Results middleware); no workflow history; AOF off, as for covey"
    )


def _broker(url: str, namespace: str) -> tuple[Any, dict[str, Any]]:
    """A Redis broker with the Results middleware, and the bench's actors declared on it."""
    dramatiq: Any = importlib.import_module("dramatiq")
    redis_broker: Any = importlib.import_module("dramatiq.brokers.redis")
    results: Any = importlib.import_module("dramatiq.results")
    backend: Any = importlib.import_module("dramatiq.results.backends.redis")

    broker = redis_broker.RedisBroker(url=url, namespace=namespace)
    broker.add_middleware(
        results.Results(backend=backend.RedisBackend(url=url, namespace=f"{namespace}-results"))
    )

    def declare(fn: Callable[..., Any]) -> Any:
        return dramatiq.actor(fn, broker=broker, actor_name=fn.__name__, store_results=True, max_retries=0)

    actors = {fn.__name__: declare(fn) for fn in (noop, stamp_a, stamp_b, whoami)}
    return broker, actors


def _worker_broker() -> Any:
    """The broker of a worker process (from the environment), set as Dramatiq's global one."""
    if not os.environ.get(_ENV_URL) or available() is None:
        return None
    dramatiq: Any = importlib.import_module("dramatiq")
    broker, _ = _broker(os.environ[_ENV_URL], os.environ[_ENV_NAMESPACE])
    dramatiq.set_broker(broker)
    return broker


#: The broker ``dramatiq covey.bench.dramatiq_peer`` serves (None outside a bench worker).
broker = _worker_broker()


@contextmanager
def _dramatiq(env: Env, name: str) -> Iterator[dict[str, Any]]:
    """The actors on a fresh namespace, with 2 worker processes started and stopped."""
    url = env.servers.redis
    namespace = f"covey_bench_dramatiq_{name}_{uuid.uuid4().hex[:8]}"
    dramatiq: Any = importlib.import_module("dramatiq")
    client_broker, actors = _broker(url, namespace)
    dramatiq.set_broker(client_broker)  # results are read through the global broker
    extra = {_ENV_URL: url, _ENV_NAMESPACE: namespace, "dramatiq_worker_timeout": str(POLL_MS)}
    command = ["-m", "dramatiq", "covey.bench.dramatiq_peer", "--processes", str(env.workers)]
    try:
        with PeerProcess(command, extra, env.directory / f"dramatiq-{name}.log") as worker:
            _warm_up(actors, worker, env.workers)
            yield actors
    finally:
        client_broker.close()
        _clean(url, namespace)


def _warm_up(actors: dict[str, Any], worker: PeerProcess, processes: int, timeout_s: float = 60.0) -> None:
    result_timeout: Any = importlib.import_module("dramatiq.results").ResultTimeout

    pids: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(pids) < processes:
        worker.check(deadline)
        sent = [actors["whoami"].send(None) for _ in range(8 * processes)]
        try:
            pids.update(message.get_result(block=True, timeout=2_000) for message in sent)
        except result_timeout:
            continue


def _clean(url: str, namespace: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start : start + 500])
    finally:
        client.close()


def _figure(workload: str, metric: str, value: float, n: int, note: str = "") -> Figure:
    return Figure(workload, SYSTEM, STORE, metric, value, n, note)


def w1(env: Env, _store: str = STORE) -> list[Figure]:
    """W1: a group of one-message runs, submit to the last result."""
    group = importlib.import_module("dramatiq").group
    n = env.sizes.w1_runs
    with _dramatiq(env, "w1") as actors:
        env.say(f"dramatiq W1: {n} messages")
        started = time.perf_counter()
        runs = group(actors["noop"].message(i) for i in range(n)).run()
        results = list(runs.get_results(block=True, timeout=600_000))
        elapsed = time.perf_counter() - started
    if results != list(range(n)):
        raise BenchError("dramatiq W1: wrong results")
    return [_figure("W1", "runs/s", n / elapsed, n, f"{elapsed:.2f} s")]


def w2(env: Env, _store: str = STORE) -> list[Figure]:
    """W2: hand-off latency of a two-actor pipeline."""
    pipeline = importlib.import_module("dramatiq").pipeline
    n = env.sizes.w2_chains
    with _dramatiq(env, "w2") as actors:
        env.say(f"dramatiq W2: {n} two-actor pipelines")
        a, b = actors["stamp_a"], actors["stamp_b"]

        def one(i: int) -> float:
            return float(pipeline([a.message(i), b.message()]).run().get_result(block=True, timeout=60_000))

        latencies = chain_latencies(one, n)
    return latency_figures(SYSTEM, STORE, latencies)


def w4(env: Env, _store: str = STORE) -> list[Figure]:
    """W4: pipelines of 10 actors, 100 sent at once; steps/s."""
    pipeline = importlib.import_module("dramatiq").pipeline
    n, steps = env.sizes.w4_runs, env.sizes.w4_steps
    with _dramatiq(env, "w4") as actors:
        env.say(f"dramatiq W4: {n} pipelines of {steps} actors")
        noop = actors["noop"]
        started = time.perf_counter()
        runs = [
            pipeline([noop.message(i)] + [noop.message() for _ in range(steps - 1)]).run() for i in range(n)
        ]
        values = [run.get_result(block=True, timeout=600_000) for run in runs]
        elapsed = time.perf_counter() - started
    if values != list(range(n)):
        raise BenchError("dramatiq W4: wrong results")
    return [_figure("W4", "steps/s", n * steps / elapsed, n * steps, f"{elapsed:.2f} s")]


def dramatiq_workloads() -> dict[str, Callable[[Env, str], list[Figure]]]:
    """Dramatiq's measurement of each workload it runs, by name."""
    return {"W1": w1, "W2": w2, "W4": w4}
