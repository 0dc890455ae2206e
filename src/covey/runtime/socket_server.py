"""The runner's local socket: the worker protocol and commands, over frames.

Each connection may carry many requests at once. Frames are cut from the
bytes as they arrive, in the read's own callback (an :class:`asyncio.Protocol`,
no reader task): reports and claims are queued for the engine loop there and
then, and decided at once when nothing else is in progress; every other
request is answered from its own task, so a long-poll claim never holds up a
report on the same connection. A report may carry a claim of its own, which
joins the report's batch and is answered in the report's answer.
Errors a caller caused come back as ``{"error": {"type", "message", ...}}``
and the caller re-raises them as the same covey error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from covey.codec import check_payload
from covey.errors import ConfigError, CoveyError, InputError
from covey.runtime.answer import Reply
from covey.runtime.protocol import FramedProtocol, FrameWriter, flush_queued_frames
from covey.state.model import StateOp, check_key, check_namespace
from covey.store.base import ClaimRequest, Lease, WorkerInfo
from covey.worker.link import PROTOCOL_VERSION, queue_results, stamped

if TYPE_CHECKING:
    from covey.runtime.runner import Runner

__all__ = ["serve"]

log = logging.getLogger("covey.socket")

Handler = Callable[["Runner", dict[str, Any]], Awaitable[dict[str, Any]]]


async def serve(runner: Runner, path: Path) -> asyncio.AbstractServer:
    """Listen on ``path`` for the runner; a commit's answers leave as soon as they are given."""
    runner.engine.on_answered = flush_queued_frames
    loop = asyncio.get_running_loop()
    return await loop.create_unix_server(lambda: _Connection(runner), path=str(path))


class _Connection(FramedProtocol):
    """One client's connection: frames are handled as they arrive, inside the read's own callback.

    Reports and claims are queued for the engine loop at once; once every
    frame a read brought is queued, :meth:`EngineLoop.iterate_now` decides
    and commits them in the same callback, so a hand-off costs the runner no
    task switch between reading the report and writing the lease. Every other
    request is answered from its own task (a long-poll claim never holds up a
    report on the same connection).
    """

    def __init__(self, runner: Runner) -> None:
        super().__init__(runner.busy_poll)
        self.runner = runner
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.runner.connections.add(self)

    def frames_received(self, messages: list[dict[str, Any]]) -> None:
        engine = self.runner.engine
        engine.hold_wake()
        queued = False
        try:
            for message in messages:
                op = message.get("op")
                if op == "report":
                    _queue_report(self.runner, message, self.outbox)
                    queued = True
                elif op == "claim":
                    _queue_claim(self.runner, message, self.outbox)
                    queued = True
                else:
                    task = asyncio.get_running_loop().create_task(_answer(self.runner, message, self.outbox))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
        finally:
            # A frame still arriving may be the claim that goes with a report: decide once it is here.
            engine.release_wake(iterate=queued and not self.frames.pending)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.runner.connections.discard(self)
        for task in self.tasks:
            task.cancel()


async def _answer(runner: Runner, message: dict[str, Any], outbox: FrameWriter) -> None:
    handler = _HANDLERS.get(str(message.get("op")))

    async def handle() -> dict[str, Any]:
        if handler is None:
            raise ConfigError(f"unknown operation {message.get('op')!r}")
        return await handler(runner, message)

    await _answer_when(message, outbox, handle(), lambda result: result)


def _queue_report(runner: Runner, message: dict[str, Any], outbox: FrameWriter) -> None:
    """The hot path: queue a report's results for the engine loop's next batch now, answer once committed.

    The answer is queued from inside the engine loop's turn that committed (a
    :class:`~covey.runtime.answer.Reply`), so it leaves in the same write as
    the lease that commit granted. A report may carry a claim (``claim``:
    worker_id, targets, labels, limit): it joins the same batch, never
    parks, and its leases travel in the report's answer (``leases``), so a
    hand-off is one frame each way.
    """
    try:
        results = list(message["results"])
        claim = message.get("claim")
        request = None if claim is None else _claim_request(runner, claim)
        answer = _ReportAnswer(runner, message, outbox, request)
        countdown = _Countdown(len(results), answer.reported)
        queue_results(runner.engine, results, runner.store.now_ms_nowait(), countdown.answers())
    except (KeyError, TypeError, ValueError) as exc:
        _answer_malformed(message, outbox, exc)
        return
    if request is not None:
        runner.engine.claim_to(Reply(answer.leased), request)


class _ReportAnswer:
    """A report's answer: once its results are committed and, if it carried a claim, that claim granted.

    The two are answered in the same turn of the engine loop (results first),
    so one frame carries both. Should the results fail while the claim got
    leases, those are given back to the store: the worker is told only of the failure.
    """

    def __init__(
        self, runner: Runner, message: dict[str, Any], outbox: FrameWriter, claim: ClaimRequest | None
    ) -> None:
        self.runner = runner
        self.message = message
        self.outbox = outbox
        self.claim = claim
        self._reported = False
        self._error: BaseException | None = None
        self._leases: list[Lease] | None = None if claim is not None else []

    def reported(self, error: BaseException | None) -> None:
        self._reported, self._error = True, error
        self._send()

    def leased(self, leases: list[Lease] | None, error: BaseException | None) -> None:
        self._leases = list(leases or ())
        self._send()

    def _send(self) -> None:
        if not self._reported or self._leases is None:
            return
        if self._error is None:
            ok = {"leases": self._leases} if self.claim else {}  # orjson writes each Lease's fields
            self.outbox.queue(_reply(self.message, ok, None))
            if self._leases:
                self.runner.busy_poll.expect()  # a quick agent reports soon
            return
        if self._leases and self.claim is not None:
            held = [(lease.task_id, lease.lease_no) for lease in self._leases]
            self.runner.engine.spawn(_give_back(self.runner, self.claim.worker_id, held))
        self.outbox.queue(_reply(self.message, None, self._error))


async def _give_back(runner: Runner, worker_id: str, leases: list[tuple[str, int]]) -> None:
    """Give back leases granted to a claim whose report failed; they are ready again."""
    try:
        await runner.store.release(worker_id, leases)
    except Exception:
        log.exception("giving back %d lease(s) of a failed report; they expire instead", len(leases))
        return
    runner.engine.poke_claims()


class _Countdown:
    """Calls ``done(None)`` once ``count`` answers succeeded, or ``done(error)`` at the first that failed."""

    def __init__(self, count: int, done: Callable[[BaseException | None], None]) -> None:
        self._left = count
        self._done: Callable[[BaseException | None], None] | None = done
        if count == 0:
            self._finish(None)

    def answers(self) -> list[Reply[bool]]:
        return [Reply(self._one) for _ in range(self._left)]

    def _one(self, _: bool | None, error: BaseException | None) -> None:
        self._left -= 1
        if error is not None or self._left == 0:
            self._finish(error)

    def _finish(self, error: BaseException | None) -> None:
        done, self._done = self._done, None
        if done is not None:
            done(error)


def _queue_claim(runner: Runner, message: dict[str, Any], outbox: FrameWriter) -> None:
    """Queue a claim for the engine loop's next batch now, answer with its leases.

    A claim that arrives in the same read as a report joins its batch, and
    can take the task the report makes ready; a claim parked earlier is woken
    for it otherwise (the reporting worker's first).
    """
    try:
        request = _claim_request(runner, message)
        wait_s = float(message.get("wait_s", 0))
    except (KeyError, TypeError, ValueError) as exc:
        _answer_malformed(message, outbox, exc)
        return

    def answer(leases: list[Lease] | None, error: BaseException | None) -> None:
        ok = {"leases": leases or []}  # orjson writes each Lease's fields
        outbox.queue(_reply(message, ok, error))
        if leases:
            runner.busy_poll.expect()  # a quick agent reports soon

    runner.engine.claim_to(Reply(answer), request, wait_s=wait_s)


def _claim_request(runner: Runner, fields: dict[str, Any]) -> ClaimRequest:
    """A claim's request from its fields (a claim frame's, or the claim a report carries)."""
    return ClaimRequest(
        str(fields["worker_id"]),
        frozenset(fields["targets"]),
        dict(fields.get("labels") or {}),
        int(fields["limit"]),
        runner.lease_ms,
    )


def _answer_malformed(message: dict[str, Any], outbox: FrameWriter, exc: Exception) -> None:
    outbox.queue(_reply(message, None, CoveyError(f"malformed {message.get('op')}: {exc!r}")))


async def _answer_when(
    message: dict[str, Any], outbox: FrameWriter, done: Awaitable[Any], ok: Callable[[Any], dict[str, Any]]
) -> None:
    """Answer ``message`` once ``done`` resolves: ``ok(result)``, or the error that failed it."""
    try:
        reply = _reply(message, ok(await done), None)
    except Exception as exc:
        reply = _reply(message, None, exc)
    await outbox.send(reply)


def _reply(message: dict[str, Any], ok: dict[str, Any] | None, error: BaseException | None) -> dict[str, Any]:
    """The answer frame to ``message``: ``ok``, or ``error`` as the caller re-raises it."""
    if error is None:
        return {"id": message.get("id"), "ok": ok}
    if isinstance(error, CoveyError):
        return {"id": message.get("id"), "error": _error_json(error)}
    log.error("%s failed", message.get("op"), exc_info=error)
    return {"id": message.get("id"), "error": {"type": "CoveyError", "message": f"internal error: {error}"}}


def _error_json(exc: CoveyError) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    for attr in (
        "step",
        "field",
        "reason",
        "namespace",
        "key",
        "expected",
        "version",
        "after",
        "oldest",
        "head",
        "backlog",
        "limit",
        "retry_after_s",
    ):
        if hasattr(exc, attr):
            body[attr] = getattr(exc, attr)
    return body


async def _hello(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    if message.get("protocol") != PROTOCOL_VERSION:
        raise ConfigError(f"worker protocol {message.get('protocol')} is not the runner's {PROTOCOL_VERSION}")
    return {"protocol": PROTOCOL_VERSION, "epoch": runner.engine.epoch, "lease_ms": runner.lease_ms}


async def _heartbeat(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    leases = [(str(t), int(n)) for t, n in message["leases"]]
    lost = await runner.store.heartbeat(str(message["worker_id"]), leases, runner.lease_ms)
    return {"lost": lost}


async def _release(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    leases = [(str(t), int(n)) for t, n in message["leases"]]
    await runner.store.release(str(message["worker_id"]), leases)
    runner.engine.poke_claims()
    return {}


async def _unpark(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    runner.engine.unpark(str(message["worker_id"]))
    return {}


async def _register(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    info = WorkerInfo(
        str(message["worker_id"]),
        frozenset(message["targets"]),
        dict(message.get("labels") or {}),
        int(message["slots"]),
        0,
        0,
    )
    await runner.store.register_worker(stamped(info, await runner.store.now_ms()))
    return {}


async def _unregister(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    await runner.store.unregister_worker(str(message["worker_id"]))
    return {}


async def _state_get(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    entry = await runner.store.state_get(check_namespace(message["namespace"]), check_key(message["key"]))
    return {"entry": None if entry is None else asdict(entry)}


async def _state_apply(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    ops = [StateOp.from_json(op) for op in message["ops"]]
    for op in ops:
        check_payload(op.value, field=f"state.{op.key}")
    fence, lock = message.get("fence"), message.get("lock")
    entries = await runner.store.state_apply(
        ops,
        fence=(str(fence[0]), int(fence[1])) if fence else None,
        lock=(str(lock[0]), int(lock[1])) if lock else None,
    )
    runner.feed_changed({op.namespace for op in ops})
    return {"entries": [asdict(entry) for entry in entries]}


async def _state_list(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    entries = await runner.store.state_list(
        check_namespace(message["namespace"]),
        prefix=str(message.get("prefix", "")),
        after=str(message.get("after", "")),
        limit=min(int(message.get("limit", 100)), 1000),
    )
    return {"entries": [asdict(entry) for entry in entries]}


def _lock_name(message: dict[str, Any]) -> str:
    return check_namespace(message["name"])  # lock names follow the namespace rules


async def _lock_acquire(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    limit, ttl_ms = int(message["limit"]), int(message["ttl_ms"])
    if limit < 1 or ttl_ms < 1:
        raise InputError("a lock needs limit >= 1 and ttl_ms >= 1", field="limit")
    token = await runner.store.lock_acquire(
        _lock_name(message), str(message["holder"]), limit=limit, ttl_ms=ttl_ms
    )
    return {"token": token}


async def _lock_release(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    return {"released": await runner.store.lock_release(_lock_name(message), int(message["token"]))}


async def _lock_renew(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    renewed = await runner.store.lock_renew(
        _lock_name(message), int(message["token"]), int(message["ttl_ms"])
    )
    return {"renewed": renewed}


async def _state_watch(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    assert runner.feed is not None
    changes = await runner.feed.wait(
        check_namespace(message["namespace"]),
        int(message.get("after", 0)),
        min(float(message.get("wait_s", 0)), 30.0),
        min(int(message.get("limit", 1000)), 10_000),
    )
    return {"changes": [asdict(change) for change in changes]}


async def _submit(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    run_id = await runner.submit(message["workflow"], message.get("input"), run_id=message.get("run_id"))
    return {"run_id": run_id}


async def _signal(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    await runner.signal(
        str(message["run_id"]),
        str(message["name"]),
        message.get("payload"),
        signal_id=message.get("signal_id"),
    )
    return {}


async def _cancel(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    await runner.cancel(
        str(message["run_id"]), step=message.get("step"), reason=str(message.get("reason", "cancelled"))
    )
    return {}


async def _wait(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    async with asyncio.timeout(message.get("timeout_s")):
        info = await runner.wait(str(message["run_id"]))
    return {"run": asdict(info)}


async def _purge(runner: Runner, message: dict[str, Any]) -> dict[str, Any]:
    return {"purged": await runner.purge(int(message["older_than_ms"]))}


_HANDLERS: dict[str, Handler] = {
    "hello": _hello,
    "heartbeat": _heartbeat,
    "release": _release,
    "unpark": _unpark,
    "register": _register,
    "state_get": _state_get,
    "state_apply": _state_apply,
    "state_list": _state_list,
    "state_watch": _state_watch,
    "lock_acquire": _lock_acquire,
    "lock_release": _lock_release,
    "lock_renew": _lock_renew,
    "unregister": _unregister,
    "submit": _submit,
    "signal": _signal,
    "cancel": _cancel,
    "wait": _wait,
    "purge": _purge,
}
