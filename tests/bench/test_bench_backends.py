"""``covey bench --quick`` on each shared-store backend: it runs, cleans up, and prints positive figures.

No timing checks: the figures only have to exist and be positive. Peers run
only under the ``bench`` marker (``pytest -m bench``), since they need the
``bench`` extra and take longer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from covey.testing.servers import amqp_url, postgres_url, redis_url

KEYS = {"workload", "system", "store", "metric", "value"}


def _servers(backend: str) -> list[str]:
    """The --*-url options for ``backend``, skipping (or failing under CI) when a server is missing."""
    options = []
    if "postgres" in backend:
        options += ["--postgres-url", postgres_url()]
    if "redis" in backend:
        options += ["--redis-url", redis_url()]
    if "amqp" in backend:
        options += ["--amqp-url", amqp_url()]
    return options


def _bench(tmp_path: Path, backends: str, *args: str, timeout: float = 110) -> list[dict[str, Any]]:
    command = [sys.executable, "-m", "covey", "--store", f"sqlite:///{tmp_path}/covey.db", "bench"]
    command += ["--quick", "--json", "--backends", backends, *_servers(backends), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines, done.stderr
    for line in lines:
        assert set(line) >= KEYS
        assert isinstance(line["value"], int | float)
        assert line["value"] > 0, line
    assert not list(tmp_path.glob(".covey-bench-*")), "the bench leaves no files behind"
    return lines


@pytest.mark.parametrize("backend", ["postgres", "redis", "redis+amqp", "postgres+amqp"])
def test_quick_bench_on_a_shared_store(tmp_path: Path, backend: str) -> None:
    lines = _bench(tmp_path, backend, "--no-peers", "--only", "W1,W2")

    covey = {(line["workload"], line["metric"]) for line in lines if line["system"] == "covey"}
    assert covey == {("W1", "runs/s"), ("W2", "p50 µs"), ("W2", "p99 µs")}
    assert {line["store"] for line in lines if line["system"] == "covey"} == {backend}
    bound = "commit" if backend.startswith("postgres") else "round trip"
    assert any(line["workload"] == bound for line in lines)


@pytest.mark.bench
def test_quick_bench_with_the_peers(tmp_path: Path) -> None:
    pytest.importorskip("celery")
    pytest.importorskip("dramatiq")
    pytest.importorskip("dbos")

    lines = _bench(tmp_path, "redis+amqp,postgres", "--only", "W1", timeout=600)

    systems = {(line["system"], line["store"]) for line in lines if line["workload"] == "W1"}
    assert systems >= {
        ("covey", "redis+amqp"),
        ("covey", "postgres"),
        ("celery", "redis"),
        ("celery", "rabbitmq"),
        ("dramatiq", "redis"),
        ("dbos", "postgres"),
    }


def test_quick_broadcast_on_redis_counts_the_feed_reads(tmp_path: Path) -> None:
    lines = _bench(tmp_path, "redis", "--no-peers", "--only", "BCAST")

    figures = {
        (line["workload"], line["system"], line["metric"]) for line in lines if line["store"] == "redis"
    }
    for mode in ("covey per-worker fan-out", "covey per-agent subscriptions"):
        assert {
            ("BCAST N=10", mode, metric) for metric in ("p50 ms", "p99 ms", "feed reads/update")
        } <= figures
