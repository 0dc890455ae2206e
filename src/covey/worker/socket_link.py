"""The worker protocol over the embedded runner's unix socket.

One connection carries every call of a process, multiplexed by request id,
so a parked claim and a report travel side by side. Commands (``covey
submit``, ``signal``...) use the same connection type.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from covey import errors
from covey.errors import BackendUnavailable, CoveyError
from covey.runtime.busy_poll import BusyPoll
from covey.runtime.protocol import FramedProtocol, lease_from_json
from covey.state.model import StateChange, StateEntry, StateOp
from covey.store.base import Lease, WorkerInfo
from covey.worker.link import PROTOCOL_VERSION, NextClaim, Take

__all__ = ["SocketLink"]


class SocketLink:
    """A connection to a runner; use as ``async with SocketLink(path) as link``."""

    recovers_from_outages = False
    claims_with_reports = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._connection: _Answers | None = None
        self._ids = itertools.count(1)
        self.lease_ms = 0
        self.poll = BusyPoll()
        """Polls for the answer to a report that carries a claim (:mod:`covey.runtime.busy_poll`)."""
        self._targets: tuple[frozenset[str], list[str]] = (frozenset(), [])
        """A worker's targets as its claims send them (sorted), kept: it claims for the same ones each time."""

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        try:
            _, self._connection = await loop.create_unix_connection(
                lambda: _Answers(self.path, self.poll), str(self.path)
            )
        except OSError as exc:
            raise BackendUnavailable(f"cannot reach the covey runner at {self.path}: {exc}") from None
        hello = await self.call("hello", protocol=PROTOCOL_VERSION)
        self.lease_ms = int(hello["lease_ms"])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._connection is not None:
            self._connection.close()
            with contextlib.suppress(Exception):
                await self._connection.closed

    async def call(self, op: str, **fields: Any) -> Any:
        """Send one request and wait for its answer; covey errors are re-raised as themselves."""
        return await self._call(op, fields)

    async def _call(
        self,
        op: str,
        fields: dict[str, Any],
        *,
        at_once: bool = False,
        received: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Send a request and wait for its answer.

        ``received`` turns a successful answer into what is returned, inside
        the callback that read it (before this coroutine resumes).
        """
        connection = self._connection
        if connection is None or connection.closed.done():
            raise BackendUnavailable(f"not connected to the covey runner at {self.path}")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        connection.waiting[request_id] = (future, received)
        try:
            await connection.outbox.send({"id": request_id, "op": op, **fields}, at_once=at_once)
            reply = await future
        finally:
            connection.waiting.pop(request_id, None)  # answered, or abandoned by a cancelled caller
        if "error" in reply:
            raise _rebuild_error(reply["error"])
        return reply["ok"]

    async def claim(
        self,
        worker_id: str,
        targets: frozenset[str],
        labels: Mapping[str, str],
        limit: int,
        wait_s: float,
        *,
        take: Take | None = None,
    ) -> list[Lease]:
        """Lease tasks from the runner; ``take`` gets them in the callback that reads the answer."""

        def received(answer: Any) -> list[Lease]:
            leases = [lease_from_json(item) for item in answer["leases"]]
            if take is not None:
                take(leases)
            return leases

        fields = {
            "worker_id": worker_id,
            "targets": self._target_list(targets),
            "labels": dict(labels),
            "limit": limit,
            "wait_s": wait_s,
        }
        leases: list[Lease] = await self._call("claim", fields, received=received)
        return leases

    async def report(self, results: Sequence[dict[str, Any]], *, claim: NextClaim | None = None) -> None:
        """Report finished tries, written now rather than at the end of the turn: nothing follows to go with it.

        A ``claim`` travels in the same frame, and its leases in the answer
        (handed to its ``take`` in the callback that reads it).
        """
        if claim is None:
            await self._call("report", {"results": list(results)}, at_once=True)
            return
        taken = False

        def received(answer: Any) -> None:
            nonlocal taken
            taken = True
            claim.take([lease_from_json(item) for item in answer.get("leases") or ()])

        fields = {
            "results": list(results),
            "claim": {  # the runner leases for its own lease length
                "worker_id": claim.worker_id,
                "targets": self._target_list(claim.targets),
                "labels": dict(claim.labels),
                "limit": claim.limit,
            },
        }
        self.poll.expect()  # the answer, with the next task's lease, follows one commit: poll rather than sleep
        try:
            await self._call("report", fields, at_once=True, received=received)
        finally:
            if not taken:
                claim.take([])  # the report failed: the runner leased nothing with it

    def _target_list(self, targets: frozenset[str]) -> list[str]:
        known = self._targets[0]
        if known is not targets and known != targets:
            self._targets = (targets, sorted(targets))
        return self._targets[1]

    async def heartbeat(self, worker_id: str, leases: Sequence[tuple[str, int]]) -> list[str]:
        """Extend leases."""
        answer = await self.call("heartbeat", worker_id=worker_id, leases=[list(pair) for pair in leases])
        return list(answer["lost"])

    async def release(self, worker_id: str, leases: Sequence[tuple[str, int]]) -> None:
        """Give leases back."""
        await self.call("release", worker_id=worker_id, leases=[list(pair) for pair in leases])

    async def unpark(self, worker_id: str) -> None:
        """Answer this worker's waiting claim now."""
        await self.call("unpark", worker_id=worker_id)

    async def state_get(self, namespace: str, key: str) -> StateEntry | None:
        """Read one key through the runner."""
        answer = await self.call("state_get", namespace=namespace, key=key)
        entry = answer.get("entry")
        return None if entry is None else StateEntry(**entry)

    async def state_apply(
        self, ops: Sequence[StateOp], fence: tuple[str, int] | None, lock: tuple[str, int] | None = None
    ) -> list[StateEntry]:
        """Write now through the runner."""
        answer = await self.call(
            "state_apply",
            ops=[op.to_json() for op in ops],
            fence=list(fence) if fence is not None else None,
            lock=list(lock) if lock is not None else None,
        )
        return [StateEntry(**entry) for entry in answer["entries"]]

    async def lock_acquire(self, name: str, holder: str, limit: int, ttl_ms: int) -> int | None:
        """Take a permit through the runner."""
        answer = await self.call("lock_acquire", name=name, holder=holder, limit=limit, ttl_ms=ttl_ms)
        token = answer["token"]
        return None if token is None else int(token)

    async def lock_release(self, name: str, token: int) -> bool:
        """Give a permit back through the runner."""
        return bool((await self.call("lock_release", name=name, token=token))["released"])

    async def lock_renew(self, name: str, token: int, ttl_ms: int) -> bool:
        """Extend a permit through the runner."""
        return bool((await self.call("lock_renew", name=name, token=token, ttl_ms=ttl_ms))["renewed"])

    async def state_list(self, namespace: str, prefix: str, after: str, limit: int) -> list[StateEntry]:
        """List keys through the runner."""
        answer = await self.call("state_list", namespace=namespace, prefix=prefix, after=after, limit=limit)
        return [StateEntry(**entry) for entry in answer["entries"]]

    async def state_watch(self, namespace: str, after: int, wait_s: float) -> list[StateChange]:
        """Changes after a cursor, waiting up to ``wait_s`` at the runner for some."""
        answer = await self.call("state_watch", namespace=namespace, after=after, wait_s=wait_s)
        return [StateChange(**change) for change in answer["changes"]]

    async def register(self, info: WorkerInfo) -> None:
        """Register with the runner's store."""
        await self.call(
            "register",
            worker_id=info.worker_id,
            targets=sorted(info.targets),
            labels=dict(info.labels),
            slots=info.slots,
        )

    async def unregister(self, worker_id: str) -> None:
        """Unregister from the runner's store."""
        await self.call("unregister", worker_id=worker_id)


class _Answers(FramedProtocol):
    """The link's connection: each answer resolves its request's future in the read's own callback."""

    def __init__(self, path: Path, poll: BusyPoll) -> None:
        super().__init__(poll)
        self.path = path
        self.waiting: dict[int, tuple[asyncio.Future[Any], Callable[[Any], Any] | None]] = {}
        """Requests sent and not yet answered: the future their caller awaits, and what turns an answer
        into the caller's value (see :meth:`SocketLink._call`)."""

    def frames_received(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            waiter = self.waiting.pop(int(message.get("id") or 0), None)
            if waiter is None or waiter[0].done():
                continue
            future, received = waiter
            if received is not None and "ok" in message:
                try:
                    message = {"ok": received(message["ok"])}
                except Exception as exc:  # a malformed answer fails its call, not the connection
                    future.set_exception(exc)
                    continue
            future.set_result(message)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        lost = BackendUnavailable(f"connection to the covey runner at {self.path} was lost")
        for future, _ in self.waiting.values():
            if not future.done():
                future.set_exception(lost)
        self.waiting.clear()


def _rebuild_error(body: Mapping[str, Any]) -> CoveyError:
    cls = getattr(errors, str(body.get("type")), None)
    message = str(body.get("message"))
    if cls is errors.SpecError:
        return errors.SpecError(
            str(body.get("reason") or message), step=body.get("step"), field=body.get("field")
        )
    if cls is errors.InputError:
        return errors.InputError(str(body.get("reason") or message), field=body.get("field"))
    if cls is errors.VersionConflict:
        return errors.VersionConflict(
            str(body["namespace"]), str(body["key"]), int(body["expected"]), int(body["version"])
        )
    if cls is errors.TooBusy:
        return errors.TooBusy(int(body["backlog"]), int(body["limit"]), float(body["retry_after_s"]))
    if cls is errors.CursorExpired:
        head = body.get("head")
        return errors.CursorExpired(
            str(body["namespace"]),
            int(body["after"]),
            int(body["oldest"]),
            None if head is None else int(head),
        )
    if (
        isinstance(cls, type)
        and issubclass(cls, CoveyError)
        and cls not in (errors.AgentFailure, errors.Retry)
    ):
        try:
            return cls(message)
        except TypeError:
            pass
    return CoveyError(message)
