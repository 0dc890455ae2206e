"""Checks shared by the distributed tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from covey.client import StoreClient
from covey.store.base import Store
from covey.testing import wait_for

APPS = Path(__file__).parent / "apps"


def accepted_successes(history: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(task id, lease number) of every success report the run accepted.

    A report is recorded as it came in; one the run refused (a stale lease, a
    repeat) is followed at once by a Rejected event naming it.
    """
    accepted = []
    for event, following in zip(history, [*history[1:], None], strict=True):
        if event["type"] != "TaskSucceeded":
            continue
        what = f"report {event['task_id']}#{event['lease_no']}"
        if following is not None and following["type"] == "Rejected" and following["what"] == what:
            continue
        accepted.append((event["task_id"], event["lease_no"]))
    return accepted


async def successes_per_task(store: Store, run_ids: list[str]) -> Counter[str]:
    """How many accepted successes each task of these runs has in its history (each should be 1)."""
    histories = await store.load_histories(run_ids)
    assert set(histories) == set(run_ids), f"runs missing: {sorted(set(run_ids) - set(histories))[:5]}"
    found: Counter[str] = Counter()
    for history in histories.values():
        found.update(task_id for task_id, _ in accepted_successes(history))
    return found


async def check_runs_complete(
    client: StoreClient,
    store: Store,
    run_ids: list[str],
    *,
    output: Any,
    tasks: int,
    timeout_s: float,
    message: str,
    while_waiting: Callable[[], None] | None = None,
) -> None:
    """Wait until these runs (all the store has) are done, then check no work was lost or recorded twice.

    Each run succeeded with ``output``, and each of the ``tasks`` tasks has exactly one accepted success.
    ``while_waiting`` is called on every poll (to replace a process that exited, say).
    """

    async def finished() -> bool:
        if while_waiting is not None:
            while_waiting()
        running = await store.list_runs(status="running", limit=1)
        return not running and len(await store.list_runs(limit=len(run_ids) + 1)) == len(run_ids)

    await wait_for(finished, timeout_s, 0.1, message=message)
    for run_id in run_ids:
        info = await client.get_run(run_id)
        assert (info.status, info.output) == ("succeeded", output), (run_id, info.error)
    successes = await successes_per_task(store, run_ids)
    assert len(successes) == tasks
    assert set(successes.values()) == {1}, "a task recorded two successes"


def executions(trace: Path) -> list[tuple[str, int, int]]:
    """Every finished execution the agents logged: (task id, lease number, pid)."""
    found = []
    for path in sorted(trace.glob("executions-*.log")):
        for line in path.read_text().splitlines():
            task_id, lease_no, pid = line.split()
            found.append((task_id, int(lease_no), int(pid)))
    return found


def local_tcp_ports(pid: int) -> set[int]:
    """The local ports of a process's TCP sockets (IPv4 and IPv6), from ``/proc`` (Linux)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
