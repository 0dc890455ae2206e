"""covey across hosts: a timekeeper and two workers, each in its own network namespace.

The store and bus servers stay on this machine; the three hosts reach them
over veth interfaces through relays on their gateway addresses, as separate
machines would over a network. Every run submitted here finishes, and the
store's registry shows the workers of both hosts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from covey.client import StoreClient
from covey.store.open import open_store
from covey.testing import wait_for
from covey.testing.servers import in_ci
from tests.distributed.apps.fanout import FANOUT, expected_output
from tests.distributed.conftest import Backend
from tests.distributed.hosts import Forwarder, Host, can_make_hosts, hosts
from tests.distributed.support import APPS

pytestmark = pytest.mark.chaos


@pytest.fixture
def host_support() -> None:
    problem = can_make_hosts()
    if problem is not None:
        if in_ci():
            pytest.fail(f"CI=true and {problem}", pytrace=False)
        pytest.skip(problem)


def _via(url: str | None, host: Host) -> str | None:
    """``url`` with its loopback address replaced by the gateway ``host`` sees this machine at."""
    if url is None:
        return None
    return url.replace("127.0.0.1", host.gateway)


def _ports(backend: Backend) -> set[int]:
    return {urlsplit(url).port or 0 for url in (backend.store, backend.bus) if url}


def _start_in(host: Host, backend: Backend, trace: Path, *args: str) -> subprocess.Popen[bytes]:
    store, bus = _via(backend.store, host), _via(backend.bus, host)
    command = [sys.executable, "-m", "covey", *args, "--store", str(store), *(["--bus", bus] if bus else [])]
    log = open(trace / f"{host.name}-{args[0]}.log", "wb")  # noqa: SIM115 - the child keeps its own copy
    env = {**os.environ, "COVEY_TEST_TRACE": str(trace)}
    try:
        return subprocess.Popen(host.command(*command), cwd=trace, env=env, stdout=log, stderr=log)
    finally:
        log.close()


@pytest.mark.parametrize("backend", ["redis+amqp"], indirect=True)  # the seed's combination; one is enough
async def test_workers_and_timekeeper_on_separate_hosts(
    backend: Backend, tmp_path: Path, host_support: None
) -> None:
    forwarder = Forwarder()
    procs: list[subprocess.Popen[bytes]] = []
    with hosts(3, uuid.uuid4().hex[:4]) as (keeper_host, *worker_hosts):
        try:
            for host in (keeper_host, *worker_hosts):
                for port in _ports(backend):
                    await forwarder.forward(host.gateway, port)
            procs.append(_start_in(keeper_host, backend, tmp_path, "timekeeper", "--shard-ttl", "2"))
            for host in worker_hosts:
                procs.append(_start_in(host, backend, tmp_path, "worker", str(APPS / "fanout.py")))

            async with StoreClient(backend.store, backend.bus) as client, open_store(backend.store) as store:

                async def two_workers() -> bool:
                    return (
                        len([w for w in await store.list_workers() if not w.worker_id.startswith("engine:")])
                        == 2
                    )

                await wait_for(two_workers, 30.0, 0.1, message="both hosts' workers to register")
                run_ids = [await client.submit(FANOUT, {"n": 2}) for _ in range(20)]
                for run_id in run_ids:
                    info = await client.wait(run_id)
                    assert (info.status, info.output) == ("succeeded", expected_output(2))
        finally:
            for proc in procs:
                proc.kill()
            for proc in procs:
                proc.wait(10)
            await forwarder.close()
    assert forwarder.connections >= 3, "the hosts reached the servers through their interfaces"
