"""The bench keeps the best of several runs of a throughput workload, for covey and the peers alike,
running them in rounds so the systems compared meet the same spells of a noisy machine."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from covey.bench.config import FULL, Env
from covey.bench.figures import Figure
from covey.bench.suite import Job, in_rounds


def _scripted(
    system: str, values: list[tuple[float, float]], calls: list[str], workload: str = "W1"
) -> Callable[[], list[Figure]]:
    """A measure that returns, per call, a rate and a time from ``values``, noting each call in ``calls``."""
    mine: list[int] = []

    def measure() -> list[Figure]:
        rate, seconds = values[len(mine)]
        mine.append(1)
        calls.append(f"{system} {workload}")
        return [
            Figure(workload, system, "redis", "runs/s", rate, 10),
            Figure(workload, system, "redis", "s", seconds, 10),
        ]

    return measure


def test_a_throughput_workload_runs_three_times_and_its_best_counts(tmp_path: Path) -> None:
    calls: list[str] = []
    job = Job("W1", _scripted("peer", [(2_000, 3.0), (3_000, 2.0), (2_500, 2.5)], calls))

    figures = {f.metric: f for f in in_rounds(Env(tmp_path, sizes=FULL), [job])}

    assert len(calls) == FULL.throughput_runs == 3
    assert (figures["runs/s"].value, figures["runs/s"].note) == (3_000, "best of 3: 2,000, 3,000, 2,500")
    assert figures["s"].value == 2.0  # not a rate: the lowest is the best


def test_the_systems_take_turns_round_by_round(tmp_path: Path) -> None:
    # covey and a peer on W1 alternate, so neither has all its runs in one slow spell of the machine;
    # W2 (a latency workload) runs once each, first.
    calls: list[str] = []
    jobs = [
        Job("W1", _scripted("covey", [(3_000, 1.0), (5_000, 1.0), (4_000, 1.0)], calls)),
        Job("W2", _scripted("covey", [(1.0, 1.0)], calls, "W2")),
        Job("W1", _scripted("peer", [(2_000, 1.0), (2_500, 1.0), (2_200, 1.0)], calls)),
        Job("W2", _scripted("peer", [(1.0, 1.0)], calls, "W2")),
    ]

    figures = list(in_rounds(Env(tmp_path, sizes=FULL), jobs))

    assert calls == ["covey W2", "peer W2"] + ["covey W1", "peer W1"] * 3
    rates = {(f.workload, f.system): f.value for f in figures if f.metric == "runs/s"}
    assert rates == {("W2", "covey"): 1.0, ("W2", "peer"): 1.0, ("W1", "covey"): 5_000, ("W1", "peer"): 2_500}


def test_a_latency_workload_runs_once(tmp_path: Path) -> None:
    calls: list[str] = []
    job = Job("W2", _scripted("peer", [(1.0, 1.0)] * 3, calls, "W2"))

    figures = list(in_rounds(Env(tmp_path, sizes=FULL), [job]))

    assert len(calls) == 1
    assert [f.note for f in figures] == ["", ""]


def test_a_quick_run_measures_each_workload_once(tmp_path: Path) -> None:
    calls: list[str] = []
    job = Job("W1", _scripted("peer", [(1.0, 1.0)] * 3, calls))

    list(in_rounds(Env(tmp_path, sizes=dataclasses.replace(FULL, throughput_runs=1)), [job]))

    assert len(calls) == 1
