"""The bus contract: topics published as hints, and subscriptions that collect them.

Topics covey publishes (always through the helpers below, so names agree):

* ``ready:<target>``: tasks for a skill (or ``agent:<name>``) became ready.
  Workers serving that target wake and claim from the store.
* ``inbox``: rows were appended to the store's inbox (a report, a signal, a
  submit, a fired timer). Engine loops wake and read the inbox of their shards.
* ``state:<namespace>``: a shared-state namespace changed. Watchers wake and
  read the change feed from their cursor.
* ``finished``: a commit ended one or more runs. Clients waiting for a run
  (``StoreClient.wait``) wake and read its row. One topic for every run, so a
  commit that ends many runs sends one hint.

Semantics every bus keeps (checked by :mod:`covey.testing.bus_conformance`):

* ``publish`` is best effort and never raises for a hint it could not send:
  it logs, and the store's polling covers the loss. It returns once the
  broker has the hints where the bus can tell (publisher confirms).
* A subscription receives the hints for its topics published after it was
  made (and after an ``add``), possibly duplicated, possibly coalesced,
  never hints of topics it does not hold.
* After a lost connection a subscription reconnects with backoff by itself,
  and then reports :data:`RESYNC` once: hints may have been missed, look at
  the store.
"""

from __future__ import annotations

from collections.abc import Collection
from types import TracebackType
from typing import Protocol

__all__ = ["RESYNC", "Bus", "Subscription", "topic_finished", "topic_inbox", "topic_ready", "topic_state"]

#: Reported by a subscription after it reconnected: hints may have been lost meanwhile.
RESYNC = "*resync"


def topic_ready(target: str) -> str:
    """Tasks for ``target`` (a skill, or ``agent:<name>``) became ready."""
    return f"ready:{target}"


def topic_inbox() -> str:
    """Rows were appended to the inbox."""
    return "inbox"


def topic_finished() -> str:
    """A commit ended one or more runs."""
    return "finished"


def topic_state(namespace: str) -> str:
    """A shared-state namespace changed."""
    return f"state:{namespace}"


class Subscription(Protocol):
    """Hints for a set of topics, collected until taken with :meth:`wait`."""

    async def wait(self, timeout: float) -> set[str]:  # noqa: ASYNC109
        """The topics hinted since the last call, waiting up to ``timeout`` seconds for one; empty on timeout."""
        ...

    async def add(self, topics: Collection[str]) -> None:
        """Also receive hints for ``topics`` from now on."""
        ...

    async def remove(self, topics: Collection[str]) -> None:
        """Stop receiving hints for ``topics``."""
        ...

    async def close(self) -> None:
        """Stop receiving; idempotent."""
        ...


class Bus(Protocol):
    """Publishes hints and makes subscriptions; entered with ``async with`` to connect."""

    async def __aenter__(self) -> Bus: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def publish(self, topics: Collection[str]) -> None:
        """Send one hint per topic (best effort: logs, never raises, for a hint it could not send)."""
        ...

    async def subscribe(self, topics: Collection[str]) -> Subscription:
        """A subscription to ``topics`` that receives hints published from now on."""
        ...
