"""Running one try of a task: call the agent, turn what happens into a report.

Everything an agent can do wrong becomes a typed failure here, never a crash
of the worker: an exception (retryable unless it says otherwise), a result
that is not JSON or is too large, an input that fails the step's schema.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from covey.agents.context import Context, Handoff, TaskCancelled
from covey.agents.registry import AgentDef
from covey.codec import check_payload
from covey.errors import AgentFailure, InputError, Retry
from covey.schema import schema_problem
from covey.store.base import Lease

__all__ = ["error_of", "execute"]


def error_of(exc: BaseException) -> dict[str, Any]:
    """The reported form of an agent's exception."""
    if isinstance(exc, Retry):
        error = exc.to_json()
        if exc.after_s is not None:
            error["retry_after_ms"] = int(exc.after_s * 1000)
        return error
    if isinstance(exc, AgentFailure):
        return exc.to_json()
    if isinstance(exc, TaskCancelled):
        return {"kind": "cancelled", "message": str(exc), "retryable": True}
    return {"kind": type(exc).__name__, "message": str(exc)[:2000], "retryable": True}


async def execute(agent: AgentDef, lease: Lease, ctx: Context, threads: Executor) -> dict[str, Any]:
    """Run the agent on the lease's input and return the result message to report."""
    report: dict[str, Any] = {"task_id": lease.task_id, "run_id": lease.run_id, "lease_no": lease.lease_no}
    failure = _check_input(lease)
    if failure is not None:
        return {**report, "ok": False, "error": failure}
    try:
        value = await _call(agent, lease.input, ctx, threads)
    except Exception as exc:
        return {**report, "ok": False, "error": error_of(exc)}
    handoff = None
    if isinstance(value, Handoff):
        handoff = dict(value.steps)
        value = value.output
    try:
        check_payload(value, field="output")
        if handoff is not None:
            check_payload(handoff, field="handoff")
    except InputError as exc:
        return {
            **report,
            "ok": False,
            "error": {"kind": "bad_output", "message": str(exc), "retryable": False},
        }
    done = {**report, "ok": True, "output": value, "handoff": handoff}
    staged = ctx.staged
    if staged:
        done["state"] = [op.to_json() for op in staged]
    return done


def _check_input(lease: Lease) -> dict[str, Any] | None:
    if lease.input_error is not None:
        return {"kind": "input_invalid", "message": lease.input_error, "retryable": False}
    if lease.input_schema is None:
        return None
    problem = schema_problem(lease.input, lease.input_schema)
    if problem is None:
        return None
    return {"kind": "input_invalid", "message": str(problem), "retryable": False}


async def _call(agent: AgentDef, value: Any, ctx: Context, threads: Executor) -> Any:
    args = (value, ctx) if agent.wants_context else (value,)
    if agent.is_async:
        return await agent.fn(*args)
    return await asyncio.get_running_loop().run_in_executor(threads, lambda: agent.fn(*args))
