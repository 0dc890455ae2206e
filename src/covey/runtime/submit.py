"""Checking a submission at the edge, before anything is stored.

A submit is refused whole, with an error naming the field, when the workflow
is invalid, a step asks for a skill no known agent serves, the run id is
malformed, or the input is not JSON, too large, too deep or fails the
workflow's input schema. Nothing is half-applied: these checks run before the
engine loop sees the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from covey.codec import check_payload
from covey.engine.events import RunSubmitted, event_to_json
from covey.errors import InputError, NotFound
from covey.ids import check_run_id, new_id
from covey.runtime.batch import Submission
from covey.schema import schema_problem
from covey.spec.compile import CompiledWorkflow, check_targets, compile_workflow
from covey.spec.model import WorkflowSpec
from covey.store.base import InboxRow, RunInfo, Store, shard_of

__all__ = [
    "INBOX_PAGE",
    "WorkflowLike",
    "as_compiled",
    "prepare_submission",
    "run_or_pending",
    "submit_row",
    "submitted_before",
]

#: Inbox rows read per page when looking for a run's submit.
INBOX_PAGE = 500

WorkflowLike = CompiledWorkflow | WorkflowSpec | Mapping[str, Any] | Any


def as_compiled(workflow: WorkflowLike) -> CompiledWorkflow:
    """Accept a compiled workflow, a spec, its JSON, or a builder with ``.to_dict()``."""
    if isinstance(workflow, CompiledWorkflow):
        return workflow
    if isinstance(workflow, WorkflowSpec | Mapping):
        return compile_workflow(workflow)
    to_dict = getattr(workflow, "to_dict", None)
    if callable(to_dict):
        return compile_workflow(to_dict())
    raise InputError(f"cannot use a {type(workflow).__name__} as a workflow", field="workflow")


def prepare_submission(
    workflow: WorkflowLike,
    run_input: Any,
    *,
    run_id: str | None = None,
    skills: frozenset[str] | None = None,
    agents: frozenset[str] | None = None,
) -> Submission:
    """Validate everything about a submit; raises SpecError or InputError naming what is wrong."""
    compiled = as_compiled(workflow)
    if skills is not None and agents is not None:
        check_targets(compiled, skills=skills, agents=agents)
    chosen = check_run_id(run_id) if run_id is not None else new_id()
    data = check_payload(run_input, field="input")
    schema = compiled.spec.input_schema
    problem = schema_problem(run_input, schema) if schema is not None else None
    if problem is not None:
        raise problem
    return Submission(chosen, compiled, run_input, data)


def submit_row(submission: Submission, at_ms: int) -> InboxRow:
    """A checked submission as an inbox row, for the engine nodes to decide (no runner takes it directly).

    ``at_ms`` is the store's clock when the row is appended: the run's created
    time, which its deadline (``timeout_s``) counts from.
    """
    event = RunSubmitted(submission.run_id, dict(submission.workflow.source), submission.input, at_ms)
    return InboxRow(f"submit:{submission.run_id}", submission.run_id, event_to_json(event))


async def run_or_pending(store: Store, run_id: str) -> RunInfo | None:
    """The run, or None while its submit waits in the store's inbox (appended with no engine to take it yet).

    Only the run's shard of the inbox is read, a page at a time.

    Raises:
        NotFound: the run is neither stored nor waiting (never submitted, or purged).
    """
    info = await store.get_run(run_id)
    if info is not None:
        return info
    cursor, shard = 0, {shard_of(run_id)}
    while page := await store.read_inbox(cursor, INBOX_PAGE, shard):
        if any(row.run_id == run_id for row in page):
            return None
        cursor = page[-1].seq
    # The engine may have taken the submit between the two reads: its run is stored by now.
    info = await store.get_run(run_id)
    if info is None:
        raise NotFound(f"no run {run_id!r}")
    return info


async def submitted_before(store: Store, run_id: str) -> bool:
    """Whether a run with this id was submitted already: stored, or its submit waiting in the inbox.

    A submit refused for a full backlog still answers a repeated run id, as
    a repeated submit always does: with the run it names.
    """
    try:
        await run_or_pending(store, run_id)
    except NotFound:
        return False
    return True
