"""The workflow spec: what a user writes, as validated, frozen data.

A workflow is data (JSON or YAML); the Python builder only produces this
shape. Field names are the spec's own words, so an error's field path is what
the user sees in their file. Durations are seconds (``*_s``) in the spec and
milliseconds (``*_ms``) once stored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RetryPolicy", "StepSpec", "WaitSpec", "WorkflowSpec"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class RetryPolicy(BaseModel):
    """How often and when a failed try is tried again."""

    model_config = _FROZEN

    attempts: int = Field(default=3, ge=1, le=1000)
    """Tries in all, the first included."""
    backoff_s: float = Field(default=1.0, ge=0, le=2_592_000)
    """Delay before the second try, in seconds."""
    multiplier: float = Field(default=2.0, ge=1, le=100)
    """Each further delay is the previous one times this."""
    max_backoff_s: float = Field(default=300.0, ge=0, le=2_592_000)
    """Cap on any delay, in seconds."""
    jitter: float = Field(default=0.1, ge=0, le=1)
    """Fraction of the delay drawn at random (from a seed carried in the event), to spread retries."""
    retry_on: list[str] | None = None
    """Error kinds that are retried; None means every retryable kind."""
    no_retry_on: list[str] = Field(default_factory=list)
    """Error kinds that are never retried."""


class WaitSpec(BaseModel):
    """A step that completes when a named signal arrives."""

    model_config = _FROZEN

    signal: str = Field(min_length=1, max_length=200)
    """Name of the signal; it must be declared in the workflow's ``signals``."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Fail the step if the signal has not arrived this many seconds after the step became ready."""


class StepSpec(BaseModel):
    """One step of a workflow: which work, on what inputs, under which policies."""

    model_config = _FROZEN

    skill: str | None = Field(default=None, min_length=1, max_length=200)
    """The kind of work; any agent serving this skill may take the task."""
    agent: str | None = Field(default=None, min_length=1, max_length=200)
    """A named agent instead of a skill."""
    wait: WaitSpec | None = None
    """Instead of an agent: wait for a signal."""
    input: Any = None
    """Input mapping: JSON where strings may hold ``${expression}`` (JMESPath over input, steps, item)."""
    input_schema: dict[str, Any] | None = None
    """JSON Schema the resolved input must satisfy; a mismatch fails the task without retry."""
    after: list[str] = Field(default_factory=list)
    """Steps that must finish first, besides those the input refers to."""
    when: str | None = None
    """Condition (``${...}`` or a bare JMESPath expression); false means the step is skipped."""
    map: str | None = None
    """Expression giving a list; the step runs once per element (``${item}``, ``${index}``)."""
    join: Literal["all", "any"] = "all"
    """``all``: run when every upstream step succeeded; ``any``: when one did (skips don't propagate)."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_s: float | None = Field(default=None, gt=0)
    """Per-try timeout in seconds; a try running longer is failed and retried."""
    priority: int = Field(default=0, ge=-1000, le=1000)
    """Higher runs first; waiting tasks age upwards, so low priority is never starved."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels a worker must carry to take this step (``gpu: "true"``)."""
    max_lost_leases: int = Field(default=3, ge=1, le=100)
    """Leases lost (worker crashed or hung) before the task is quarantined as poison."""


class WorkflowSpec(BaseModel):
    """A whole workflow: its steps, their graph and the run-level policies."""

    model_config = _FROZEN

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    input_schema: dict[str, Any] | None = None
    """JSON Schema for a run's input; a submit that fails it is refused and nothing is stored."""
    steps: dict[str, StepSpec] = Field(min_length=1)
    """Steps by name, in the order written."""
    output: Any = None
    """Output mapping of the run; by default the outputs of the steps nothing depends on."""
    signals: list[str] = Field(default_factory=list)
    """Signals this workflow accepts; a signal of another name is refused."""
    max_steps: int = Field(default=10_000, ge=1, le=1_000_000)
    """Bound on tasks per run, dynamic ones and map elements included (loops end here)."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Run deadline in seconds from submit; past it the run fails."""
    run_state: Literal["keep", "delete"] = "keep"
    """What becomes of the run's shared-state namespace (``run:<id>``) when the run ends."""
