"""The bench keeps the best of several runs of a throughput workload, for covey and the peers alike."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from covey.bench.config import FULL, Env
from covey.bench.figures import Figure
from covey.bench.suite import best_of


def _scripted(values: list[tuple[float, float]]) -> tuple[list[int], Callable[[], list[Figure]]]:
    """A measure that returns, per call, a rate and a time from ``values`` (and counts its calls)."""
    calls: list[int] = []

    def measure() -> list[Figure]:
        rate, seconds = values[len(calls)]
        calls.append(1)
        return [
            Figure("W1", "peer", "redis", "runs/s", rate, 10),
            Figure("W1", "peer", "redis", "s", seconds, 10),
        ]

    return calls, measure


def test_a_throughput_workload_runs_three_times_and_its_best_counts(tmp_path: Path) -> None:
    calls, measure = _scripted([(2_000, 3.0), (3_000, 2.0), (2_500, 2.5)])

    figures = {f.metric: f for f in best_of(Env(tmp_path, sizes=FULL), "W1", measure)}

    assert len(calls) == FULL.throughput_runs == 3
    assert (figures["runs/s"].value, figures["runs/s"].note) == (3_000, "best of 3: 2,000, 3,000, 2,500")
    assert figures["s"].value == 2.0  # not a rate: the lowest is the best


def test_a_latency_workload_runs_once(tmp_path: Path) -> None:
    calls, measure = _scripted([(1.0, 1.0)] * 3)

    figures = best_of(Env(tmp_path, sizes=FULL), "W2", measure)

    assert len(calls) == 1
    assert [f.note for f in figures] == ["", ""]


def test_a_quick_run_measures_each_workload_once(tmp_path: Path) -> None:
    calls, measure = _scripted([(1.0, 1.0)] * 3)

    best_of(Env(tmp_path, sizes=dataclasses.replace(FULL, throughput_runs=1)), "W1", measure)

    assert len(calls) == 1
