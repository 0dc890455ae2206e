"""LangGraph on the same workloads, when the ``bench`` extra is installed.

LangGraph with its SQLite checkpointer (``SqliteSaver`` on a file) invoked with
``durability="sync"``: the checkpoint of each super-step is written before the
next super-step starts, the closest LangGraph comes to covey's "every step
committed before the next starts". ``SqliteSaver`` keeps SQLite's defaults
besides ``journal_mode=WAL``; the ``synchronous`` level it runs with is read
back from its connection and printed (FULL on this build: an fsync per commit).

* **W4** a ``StateGraph`` of ``w4_steps`` sequential no-op nodes, invoked
  ``w4_runs`` times one after another, one thread id each: steps/s. (Invoking
  from several threads is not faster: ``SqliteSaver`` serializes on one lock.)
* **W2** a two-node chain; node A writes ``time.time_ns()`` into the state as
  it returns, node B computes the delta as it starts: p50/p99 over
  ``w2_chains`` invocations.
* **W1** ``w1_runs`` one-node invocations from a pool of
  ``langgraph_threads`` threads sharing one ``SqliteSaver`` (its documented
  thread-safe use; the async ``AsyncSqliteSaver`` measured slower here).
"""

from __future__ import annotations

import importlib
import operator
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib import metadata
from typing import Annotated, Any, TypedDict

from covey.bench.config import BenchError, Env
from covey.bench.figures import Figure, percentile

__all__ = ["LANGGRAPH_WORKLOADS", "available", "langgraph_persists"]

SYSTEM = "langgraph"


class _Counter(TypedDict):
    x: int


class _Stamps(TypedDict, total=False):
    t: int
    latency_ns: Annotated[int, operator.add]


def available() -> str | None:
    """The installed LangGraph version, or None when the ``bench`` extra is missing."""
    try:
        importlib.import_module("langgraph.graph")
        importlib.import_module("langgraph.checkpoint.sqlite")
    except ImportError:
        return None
    return metadata.version("langgraph")


def langgraph_persists(env: Env) -> str:
    """What LangGraph writes per step here, with the pragmas read from a live ``SqliteSaver``."""
    with _saver(env, "langgraph-pragmas") as saver:
        conn: sqlite3.Connection = saver.conn
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        level = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
            conn.execute("PRAGMA synchronous").fetchone()[0], "?"
        )
    return (
        f"langgraph {available()}: SqliteSaver checkpoint (full state) plus pending writes per super-step, "
        f'durability="sync"; SqliteSaver pragmas: journal_mode={journal}, synchronous={level} (default)'
    )


@contextmanager
def _saver(env: Env, name: str) -> Iterator[Any]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    with SqliteSaver.from_conn_string(str(env.db(name))) as saver:
        saver.setup()
        yield saver


def _sequence(steps: int, saver: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    def step(state: _Counter) -> dict[str, int]:
        return {"x": state["x"] + 1}

    graph = StateGraph(_Counter)
    previous = START
    for i in range(1, steps + 1):
        graph.add_node(f"s{i}", step)
        graph.add_edge(previous, f"s{i}")
        previous = f"s{i}"
    graph.add_edge(previous, END)
    return graph.compile(checkpointer=saver)


def _chain(saver: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    def a(state: _Stamps) -> dict[str, int]:
        return {"t": time.time_ns()}

    def b(state: _Stamps) -> dict[str, int]:
        return {"latency_ns": time.time_ns() - state["t"]}

    graph = StateGraph(_Stamps)
    graph.add_node("a", a)
    graph.add_node("b", b)
    graph.add_edge(START, "a")
    graph.add_edge("a", "b")
    graph.add_edge("b", END)
    return graph.compile(checkpointer=saver)


def _invoke(graph: Any, value: dict[str, Any], thread_id: str) -> dict[str, Any]:
    result: dict[str, Any] = graph.invoke(
        value, {"configurable": {"thread_id": thread_id}}, durability="sync"
    )
    return result


def _figure(env: Env, workload: str, metric: str, value: float, n: int, note: str = "") -> Figure:
    return Figure(workload, SYSTEM, "sqlite", metric, value, n, note)


def w1(env: Env) -> list[Figure]:
    """W1: one-node invocations from a thread pool."""
    n, threads = env.sizes.w1_runs, env.sizes.langgraph_threads
    env.say(f"langgraph W1: {n} one-node invocations on {threads} threads")
    with _saver(env, "langgraph-w1") as saver:
        graph = _sequence(1, saver)
        _invoke(graph, {"x": 0}, "warm-up")
        started = time.perf_counter()
        with ThreadPoolExecutor(threads, thread_name_prefix="langgraph") as pool:
            results = list(pool.map(lambda i: _invoke(graph, {"x": i}, f"w1-{i}"), range(n)))
        elapsed = time.perf_counter() - started
    if any(r["x"] != i + 1 for i, r in enumerate(results)):
        raise BenchError("langgraph W1: a graph returned a wrong value")
    return [_figure(env, "W1", "runs/s", n / elapsed, n, f"{threads} threads, {elapsed:.2f} s")]


def w2(env: Env) -> list[Figure]:
    """W2: hand-off latency from node A's return to node B's start."""
    n = env.sizes.w2_chains
    env.say(f"langgraph W2: {n} two-node chains")
    latencies: list[float] = []
    with _saver(env, "langgraph-w2") as saver:
        graph = _chain(saver)
        for i in range(n + 5):
            result = _invoke(graph, {"latency_ns": 0}, f"w2-{i}")
            if i >= 5:
                latencies.append(result["latency_ns"] / 1_000)
    return [
        _figure(env, "W2", "p50 µs", percentile(latencies, 50), n),
        _figure(env, "W2", "p99 µs", percentile(latencies, 99), n),
    ]


def w4(env: Env) -> list[Figure]:
    """W4: sequential graphs invoked one after another; steps per second."""
    n, steps = env.sizes.w4_runs, env.sizes.w4_steps
    env.say(f"langgraph W4: {n} invocations of {steps} sequential nodes")
    with _saver(env, "langgraph-w4") as saver:
        graph = _sequence(steps, saver)
        _invoke(graph, {"x": 0}, "warm-up")
        started = time.perf_counter()
        for i in range(n):
            if _invoke(graph, {"x": 0}, f"w4-{i}")["x"] != steps:
                raise BenchError("langgraph W4: a graph returned a wrong value")
        elapsed = time.perf_counter() - started
    return [_figure(env, "W4", "steps/s", n * steps / elapsed, n * steps, f"sequential, {elapsed:.2f} s")]


#: LangGraph's measurement of each workload it runs, by name.
LANGGRAPH_WORKLOADS: dict[str, Callable[[Env], list[Figure]]] = {"W1": w1, "W2": w2, "W4": w4}
