"""Celery 5 on the bench's workloads: Redis broker, and RabbitMQ broker; results in Redis either way.

The bench starts one ``celery worker`` with ``--concurrency 2`` (the prefork
pool, Celery's default: two worker processes) on a queue of its own, and
stops it afterwards. Everything else keeps Celery's defaults: tasks acked on
receipt (``acks_late=False``), prefetch multiplier 4, persistent messages on
RabbitMQ without publisher confirms. Neither broker polls (BRPOP on Redis,
a consumer on RabbitMQ), nor does the Redis result backend (pub/sub), so no
polling interval needed lowering; ``get(interval=0.01)`` is passed anyway.

* **W1** ``group(noop.s(i) for i in range(n))``, one ``apply_async``, then
  ``get()``: runs/s from submit to the last result.
* **W2** ``chain(stamp_a.s(i), stamp_b.s())``: B gets A's return value; A
  returns the wall clock as its last action, B reads it as its first.
* **W3** ``fan.s(100) | spread.s()``: ``spread`` replaces itself with
  ``chord(noop.s(i) for i in items)(noop.s())`` (Celery's dynamic fan-out).
* **W4** ``chain`` of 10 ``noop`` tasks, 100 chains sent at once.

Worker processes import this module (``celery -A covey.bench.celery_peer``);
it reads the broker, backend and queue from ``COVEY_BENCH_CELERY_*``.
"""

from __future__ import annotations

import importlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

from covey.bench.config import BenchError, Env
from covey.bench.figures import Figure
from covey.bench.peer_support import (
    PeerProcess,
    chain_latencies,
    fan,
    latency_figures,
    noop,
    peer_available,
    stamp_a,
    stamp_b,
    whoami,
)

__all__ = ["CELERY_BROKERS", "available", "celery_persists", "celery_workloads"]

SYSTEM = "celery"
#: Broker label (printed as the figure's store) -> which server.
CELERY_BROKERS = ("redis", "rabbitmq")
_ENV_BROKER, _ENV_BACKEND, _ENV_QUEUE, _ENV_PREFIX = (
    "COVEY_BENCH_CELERY_BROKER",
    "COVEY_BENCH_CELERY_BACKEND",
    "COVEY_BENCH_CELERY_QUEUE",
    "COVEY_BENCH_CELERY_PREFIX",
)


def available() -> str | None:
    """The installed Celery version, or None."""
    return peer_available("celery")


def celery_persists() -> str:
    """What Celery writes, per broker."""
    return (
        f"celery {metadata.version('celery')}: task messages in the broker (Redis lists; RabbitMQ durable "
        "queue, persistent messages, no publisher confirms), acked on receipt; every result in Redis "
        "(SET with expiry); no workflow history; Redis AOF off, as for covey"
    )


def _config(broker: str, backend: str, queue: str, prefix: str) -> dict[str, Any]:
    options = {"global_keyprefix": prefix}
    return {
        "broker_url": broker,
        "result_backend": backend,
        "task_default_queue": queue,
        "broker_transport_options": options if broker.startswith("redis") else {},
        "result_backend_transport_options": options,
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
    }


def _app(config: dict[str, Any] | None) -> Any:
    """A Celery app with the bench's tasks (a fresh one per workload: Celery caches its queues and backend)."""
    celery: Any = importlib.import_module("celery")
    app = celery.Celery("covey_bench", set_as_current=False)
    if config:
        app.conf.update(config)

    tasks = {
        fn.__name__: app.task(name=fn.__name__, shared=False)(fn)
        for fn in (noop, stamp_a, stamp_b, fan, whoami)
    }

    def spread(self: Any, items: list[int]) -> Any:
        raise self.replace(celery.chord([tasks["noop"].s(i) for i in items], tasks["noop"].s()))

    app.task(name="spread", shared=False, bind=True)(spread)
    return app


def _config_from_env() -> dict[str, Any] | None:
    if not os.environ.get(_ENV_BROKER):
        return None
    return _config(
        os.environ[_ENV_BROKER], os.environ[_ENV_BACKEND], os.environ[_ENV_QUEUE], os.environ[_ENV_PREFIX]
    )


def __getattr__(name: str) -> Any:
    """``app``: what ``celery -A covey.bench.celery_peer worker`` loads (None when Celery is not installed).

    Made on first use, so importing this module (every ``covey`` command does,
    for ``covey bench``) does not import Celery.
    """
    if name == "app":
        globals()["app"] = made = _app(_config_from_env()) if available() else None
        return made
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextmanager
def _celery(env: Env, broker_kind: str, name: str) -> Iterator[Any]:
    """This module's app on a fresh queue and key prefix, with a worker of 2 processes started and stopped."""
    servers = env.servers
    queue = f"covey_bench_celery_{name}_{uuid.uuid4().hex[:8]}"
    prefix = f"{queue}:"
    broker = servers.redis if broker_kind == "redis" else servers.amqp
    celery = _app(_config(broker, servers.redis, queue, prefix))
    extra = {_ENV_BROKER: broker, _ENV_BACKEND: servers.redis, _ENV_QUEUE: queue, _ENV_PREFIX: prefix}
    command = ["-m", "celery", "-A", "covey.bench.celery_peer", "worker"]
    command += ["--concurrency", str(env.workers), "--loglevel", "WARNING", "-Q", queue]
    try:
        with PeerProcess(command, extra, env.directory / f"celery-{broker_kind}-{name}.log") as worker:
            _warm_up(celery, worker, env.workers)
            yield celery
    finally:
        celery.close()
        _clean(broker_kind, servers.redis, servers.amqp, queue, prefix)


def _warm_up(celery: Any, worker: PeerProcess, processes: int, timeout_s: float = 60.0) -> None:
    """Until every worker process has run a task; tasks sent before the worker is up may be dropped, so resend."""
    timeout_error: Any = importlib.import_module("celery.exceptions").TimeoutError

    pids: set[int] = set()
    deadline = time.monotonic() + timeout_s
    whoami = celery.tasks["whoami"]
    while len(pids) < processes:
        worker.check(deadline)
        sent = [whoami.delay(None) for _ in range(4 * processes)]
        try:
            pids.update(result.get(timeout=2.0, interval=0.01) for result in sent)
        except timeout_error:
            continue


def _clean(broker_kind: str, redis_url: str, amqp_url: str, queue: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        keys += list(client.scan_iter(match=f"*{queue}*", count=1000))
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start : start + 500])
    finally:
        client.close()
    if broker_kind == "rabbitmq":
        kombu: Any = importlib.import_module("kombu")
        with kombu.Connection(amqp_url) as conn:
            channel = conn.channel()
            channel.queue_delete(queue)
            channel.exchange_delete(queue)


def _figure(broker: str, workload: str, metric: str, value: float, n: int, note: str = "") -> Figure:
    return Figure(workload, SYSTEM, broker, metric, value, n, note)


def w1(env: Env, broker: str) -> list[Figure]:
    """W1: a group of one-task runs, submit to the last result."""
    group = importlib.import_module("celery").group
    n = env.sizes.w1_runs
    with _celery(env, broker, "w1") as celery:
        env.say(f"celery ({broker}) W1: {n} tasks")
        noop = celery.tasks["noop"]
        started = time.perf_counter()
        results = group(noop.s(i) for i in range(n)).apply_async().get(timeout=600, interval=0.01)
        elapsed = time.perf_counter() - started
    if results != list(range(n)):
        raise BenchError(f"celery ({broker}) W1: wrong results")
    return [_figure(broker, "W1", "runs/s", n / elapsed, n, f"{elapsed:.2f} s")]


def w2(env: Env, broker: str) -> list[Figure]:
    """W2: hand-off latency of a two-task chain."""
    chain = importlib.import_module("celery").chain
    n = env.sizes.w2_chains
    with _celery(env, broker, "w2") as celery:
        env.say(f"celery ({broker}) W2: {n} two-task chains")
        a, b = celery.tasks["stamp_a"], celery.tasks["stamp_b"]

        def one(i: int) -> float:
            return float(chain(a.s(i), b.s()).apply_async().get(timeout=60, interval=0.01))

        latencies = chain_latencies(one, n)
    return latency_figures(SYSTEM, broker, latencies)


def w3(env: Env, broker: str) -> list[Figure]:
    """W3: a task returning 100 items, a chord over them, its join; median wall time."""
    import statistics

    chain = importlib.import_module("celery").chain
    n, width = env.sizes.w3_repeats, env.sizes.w3_width
    walls: list[float] = []
    with _celery(env, broker, "w3") as celery:
        env.say(f"celery ({broker}) W3: {n} fan-outs to {width} tasks")
        fan, spread = celery.tasks["fan"], celery.tasks["spread"]
        for i in range(n + 1):
            started = time.perf_counter()
            joined = chain(fan.s(width), spread.s()).apply_async().get(timeout=60, interval=0.01)
            if i >= 1:
                walls.append((time.perf_counter() - started) * 1_000)
            if len(joined) != width:
                raise BenchError(f"celery ({broker}) W3: the join saw {len(joined)} results")
    return [_figure(broker, "W3", "median ms", statistics.median(walls), n)]


def w4(env: Env, broker: str) -> list[Figure]:
    """W4: chains of 10 tasks, 100 sent at once; steps/s."""
    chain = importlib.import_module("celery").chain
    n, steps = env.sizes.w4_runs, env.sizes.w4_steps
    with _celery(env, broker, "w4") as celery:
        env.say(f"celery ({broker}) W4: {n} chains of {steps} tasks")
        noop = celery.tasks["noop"]
        started = time.perf_counter()
        results = [chain(noop.s(i), *[noop.s() for _ in range(steps - 1)]).apply_async() for i in range(n)]
        values = [result.get(timeout=600, interval=0.01) for result in results]
        elapsed = time.perf_counter() - started
    if values != list(range(n)):
        raise BenchError(f"celery ({broker}) W4: wrong results")
    return [_figure(broker, "W4", "steps/s", n * steps / elapsed, n * steps, f"{elapsed:.2f} s")]


def celery_workloads() -> dict[str, Callable[[Env, str], list[Figure]]]:
    """Celery's measurement of each workload it runs, by name (each takes the broker label)."""
    return {"W1": w1, "W2": w2, "W3": w3, "W4": w4}
