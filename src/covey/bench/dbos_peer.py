"""DBOS 3 on the bench's workloads: durable workflows in PostgreSQL, run by 2 worker processes from a queue.

The bench starts 2 processes (``python -m covey.bench.dbos_peer``), each a
DBOS executor of its own that dequeues from one queue, on a system schema of
its own in the bench's PostgreSQL database (dropped afterwards), and enqueues
and awaits workflows with a ``DBOSClient``. Everything keeps DBOS's defaults
except its polling: the queue's polling interval and the client's
``get_result`` interval (1 s each by default) are lowered to 10 ms.

* **W1** ``w1_runs`` one-step workflows enqueued at once; submit to last result.
* **W2** a two-step workflow; step B takes step A's output (A returns the wall
  clock as its last action, B reads it as its first): DBOS checkpoints A's
  output in PostgreSQL before B starts, in the same process.
* **W4** ``w4_runs`` workflows of ``w4_steps`` sequential steps, enqueued at once.

W3 is not run: a fan-out in DBOS starts child workflows from inside a
workflow, a different shape from a step mapping over a list.
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from covey.bench.config import BenchError, Env
from covey.bench.figures import Figure
from covey.bench.peer_support import PeerProcess, chain_latencies, latency_figures, peer_available

__all__ = ["available", "dbos_persists", "dbos_workloads"]

SYSTEM = "dbos"
STORE = "postgres"
#: The queue's and the client's polling interval, in seconds (DBOS's default is 1 s).
POLL_S = 0.01
QUEUE = "covey_bench"
#: What a worker process prints once launched (its migrations done, its queue registered).
READY = "covey-bench-dbos: ready"
_ENV_URL, _ENV_SCHEMA = "COVEY_BENCH_DBOS_URL", "COVEY_BENCH_DBOS_SCHEMA"


def available() -> str | None:
    """The installed DBOS version, or None."""
    return peer_available("dbos")


def dbos_persists() -> str:
    """What DBOS writes."""
    return (
        f"dbos {available()}: in PostgreSQL (synchronous_commit on, as for covey), the workflow's status row "
        "and input on enqueue, each step's output before the next step starts, the workflow's result"
    )


def _register() -> None:
    """Declare the bench's workflows and steps (DBOS keeps them in a process-wide registry)."""
    # Imported by name: the bench extra is optional, and its packages are untyped.
    DBOS: Any = importlib.import_module("dbos").DBOS

    @DBOS.step(name="noop_step")
    def noop_step(value: Any) -> Any:
        return value

    @DBOS.step(name="stamp_a")
    def stamp_a(value: Any) -> int:
        return time.time_ns()

    @DBOS.step(name="stamp_b")
    def stamp_b(t: int) -> int:
        started = time.time_ns()
        return started - t

    @DBOS.workflow(name="bench_one")
    def one(value: Any) -> Any:
        return noop_step(value)

    @DBOS.workflow(name="bench_chain")
    def chain(value: Any) -> Any:
        return stamp_b(stamp_a(value))

    @DBOS.workflow(name="bench_sequence")
    def sequence(value: Any, steps: int) -> Any:
        for _ in range(steps):
            value = noop_step(value)
        return value

    @DBOS.workflow(name="bench_whoami")
    def whoami(value: Any) -> int:
        time.sleep(0.02)
        return os.getpid()


def serve() -> None:
    """A worker process: launch a DBOS executor on the bench's schema, dequeue until SIGTERM."""
    from dbos import DBOS

    _register()
    DBOS(
        config={
            "name": "covey-bench",
            "system_database_url": os.environ[_ENV_URL],
            "dbos_system_schema": os.environ[_ENV_SCHEMA],
            "executor_id": f"bench-{os.getpid()}",
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    DBOS.register_queue(QUEUE, polling_interval_sec=POLL_S)
    print(READY, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    DBOS.destroy()


@contextmanager
def _dbos(env: Env, name: str) -> Iterator[Any]:
    """A client on a fresh system schema, with the worker processes started and stopped."""
    from dbos import DBOSClient

    url = env.servers.postgres
    schema = f"covey_bench_dbos_{name}_{uuid.uuid4().hex[:8]}"
    extra = {_ENV_URL: url, _ENV_SCHEMA: schema}
    try:
        with _workers(env, extra, env.directory / f"dbos-{schema}.log") as workers:
            client = _client(DBOSClient, url, schema, workers)
            try:
                _warm_up(client, workers, env.workers)
                yield client
            finally:
                client.destroy()
    finally:
        _drop_schema(url, schema)


@contextmanager
def _workers(env: Env, extra: dict[str, str], log: Path) -> Iterator[list[PeerProcess]]:
    """The worker processes, logging to ``log``: a file of this schema's own, so the readiness line
    :func:`_until_ready` looks for cannot be an earlier run's."""
    first = PeerProcess(["-m", "covey.bench.dbos_peer"], extra, log)
    with first:  # the first creates the schema; the others start once it is there
        _until_ready(first)
        rest = [PeerProcess(["-m", "covey.bench.dbos_peer"], extra, log) for _ in range(env.workers - 1)]
        for proc in rest:
            proc.__enter__()
        try:
            yield [first, *rest]
        finally:
            for proc in rest:
                proc.__exit__(None, None, None)


def _until_ready(worker: PeerProcess, timeout_s: float = 60.0) -> None:
    """Wait until the worker printed :data:`READY` in its log (the client needs its migrations done)."""
    deadline = time.monotonic() + timeout_s
    while READY not in worker.log.read_text(errors="replace"):
        worker.check(deadline)
        time.sleep(0.05)


def _client(factory: Any, url: str, schema: str, workers: list[PeerProcess]) -> Any:
    return factory(system_database_url=url, dbos_system_schema=schema)


def _warm_up(client: Any, workers: list[PeerProcess], processes: int, timeout_s: float = 60.0) -> None:
    pids: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(pids) < processes:
        for worker in workers:
            worker.check(deadline)
        handles = [_enqueue(client, "bench_whoami", None) for _ in range(8 * processes)]
        pids.update(handle.get_result(polling_interval_sec=POLL_S) for handle in handles)


def _enqueue(client: Any, workflow: str, *args: Any) -> Any:
    return client.enqueue({"queue_name": QUEUE, "workflow_name": workflow}, *args)


def _drop_schema(url: str, schema: str) -> None:
    psycopg: Any = importlib.import_module("psycopg")

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _figure(workload: str, metric: str, value: float, n: int, note: str = "") -> Figure:
    return Figure(workload, SYSTEM, STORE, metric, value, n, note)


def w1(env: Env, _store: str = STORE) -> list[Figure]:
    """W1: one-step workflows enqueued at once, submit to last result."""
    n = env.sizes.w1_runs
    with _dbos(env, "w1") as client:
        env.say(f"dbos W1: {n} one-step workflows")
        started = time.perf_counter()
        handles = [_enqueue(client, "bench_one", i) for i in range(n)]
        results = [handle.get_result(polling_interval_sec=POLL_S) for handle in handles]
        elapsed = time.perf_counter() - started
    if results != list(range(n)):
        raise BenchError("dbos W1: wrong results")
    return [_figure("W1", "runs/s", n / elapsed, n, f"{elapsed:.2f} s")]


def w2(env: Env, _store: str = STORE) -> list[Figure]:
    """W2: hand-off latency between two steps of a workflow."""
    n = env.sizes.w2_chains
    with _dbos(env, "w2") as client:
        env.say(f"dbos W2: {n} two-step workflows")

        def one(i: int) -> float:
            return float(_enqueue(client, "bench_chain", i).get_result(polling_interval_sec=POLL_S))

        latencies = chain_latencies(one, n)
    return latency_figures(SYSTEM, STORE, latencies)


def w4(env: Env, _store: str = STORE) -> list[Figure]:
    """W4: sequential workflows enqueued at once; steps/s."""
    n, steps = env.sizes.w4_runs, env.sizes.w4_steps
    with _dbos(env, "w4") as client:
        env.say(f"dbos W4: {n} workflows of {steps} steps")
        started = time.perf_counter()
        handles = [_enqueue(client, "bench_sequence", i, steps) for i in range(n)]
        values = [handle.get_result(polling_interval_sec=POLL_S) for handle in handles]
        elapsed = time.perf_counter() - started
    if values != list(range(n)):
        raise BenchError("dbos W4: wrong results")
    return [_figure("W4", "steps/s", n * steps / elapsed, n * steps, f"{elapsed:.2f} s")]


def dbos_workloads() -> dict[str, Callable[[Env, str], list[Figure]]]:
    """DBOS's measurement of each workload it runs, by name."""
    return {"W1": w1, "W2": w2, "W4": w4}


if __name__ == "__main__":
    serve()
