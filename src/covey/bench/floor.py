"""The hand-off floor: what W2 would cost with no engine at all, on this machine.

A second process sends a small message (a report) over a unix socket; this
process commits one small row durably, as the commit baseline does, and
answers (a lease); the second process times the round trip. Blocking sockets,
no event loop, no JSON: two process wake-ups and one durable commit, the
least any hand-off between worker processes can cost when every step is
committed before the next starts. covey's W2 against it is covey's own
overhead; against the commit baseline alone, it is that overhead plus the
wake-ups.

Run as ``python -m covey.bench.floor FD COUNT``, this module is the second
process: it sends ``COUNT`` reports on the socket inherited as ``FD`` and
prints each round trip, in nanoseconds, as one JSON list.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import closing

import orjson

from covey.bench.baselines import SYSTEM, steady_commits
from covey.bench.config import BenchError, Env
from covey.bench.figures import Figure, percentile

__all__ = ["FLOOR_PERSISTS", "handoff_floor"]

FLOOR_PERSISTS = (
    "hand-off floor: a 200-byte message to this process, one small durable INSERT as the commit "
    "baseline's, a 300-byte answer; blocking unix sockets, no engine"
)
REPORT = b"r" * 200
LEASE = b"l" * 300
#: Round trips before the timed ones (both processes past their first, slower, ones).
WARM_ROUND_TRIPS = 50


def handoff_floor(env: Env) -> list[Figure]:
    """Round trips to a second process through one durable commit each: p50 and p99."""
    n = env.sizes.commits
    env.say(f"hand-off floor: {n} round trips through a durable commit")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with closing(ours), steady_commits(env.db("handoff-floor")) as commit:
        total = WARM_ROUND_TRIPS + n
        with closing(theirs):
            child = subprocess.Popen(
                [sys.executable, "-m", "covey.bench.floor", str(theirs.fileno()), str(total)],
                pass_fds=[theirs.fileno()],
                stdout=subprocess.PIPE,
            )
        try:
            for _ in range(total):
                if not _read_exactly(ours, len(REPORT)):
                    break
                commit("hand-off")
                ours.sendall(LEASE)
            out, _ = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    if child.returncode != 0:
        raise BenchError(f"the hand-off floor's second process failed (exit status {child.returncode})")
    durations = [ns / 1e9 for ns in orjson.loads(out)[WARM_ROUND_TRIPS:]]
    if len(durations) != n:
        raise BenchError(f"the hand-off floor timed {len(durations)} round trips, expected {n}")
    return [
        Figure("hand-off floor", SYSTEM, "sqlite", "p50 µs", percentile(durations, 50) * 1e6, n),
        Figure("hand-off floor", SYSTEM, "sqlite", "p99 µs", percentile(durations, 99) * 1e6, n),
    ]


def _read_exactly(sock: socket.socket, size: int) -> bool:
    """Read ``size`` bytes; False at the end of the stream."""
    left = size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            return False
        left -= len(chunk)
    return True


def _send_reports(fd: int, count: int) -> list[int]:
    """The second process: ``count`` reports, each timed until its answer is read."""
    times = []
    with closing(socket.socket(fileno=fd)) as sock:
        for _ in range(count):
            started = time.perf_counter_ns()
            sock.sendall(REPORT)
            if not _read_exactly(sock, len(LEASE)):
                break
            times.append(time.perf_counter_ns() - started)
    return times


if __name__ == "__main__":
    sys.stdout.buffer.write(orjson.dumps(_send_reports(int(sys.argv[1]), int(sys.argv[2]))))
