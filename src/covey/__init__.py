"""covey: durable, event-driven workflows for AI agents.

The public API. Everything else is importable but may change between
releases::

    import covey

    @covey.agent(skills=["classify"])
    def classify(ticket): ...

    wf = covey.Workflow("triage")
    label = wf.step("label", skill="classify", input={"text": wf.input["text"]})
    print(covey.run(wf, {"text": "my invoice is wrong"}, agents=[classify]))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from covey.agents.context import Context, Handoff, TaskCancelled
    from covey.agents.registry import AgentDef, Registry, agent
    from covey.client import LocalClient
    from covey.embedded import Embedded, run
    from covey.errors import (
        AgentFailure,
        BackendError,
        BackendUnavailable,
        ConfigError,
        Conflict,
        CoveyError,
        CursorExpired,
        InputError,
        NotFound,
        Retry,
        RunFailed,
        SpecError,
        StaleLease,
        StoreLocked,
        TooBusy,
        VersionConflict,
    )
    from covey.runtime.runner import Runner
    from covey.spec.builder import Workflow
    from covey.spec.load import load_spec, load_spec_file
    from covey.spec.model import RetryPolicy, StepSpec, WaitSpec, WorkflowSpec
    from covey.store.base import RunInfo

# Names are imported on first use, so importing one part of covey (the pure
# engine, the spec) does not drag in the runtime, the store and asyncio.
_LAZY = {
    "covey.agents.context": ("Context", "Handoff", "TaskCancelled"),
    "covey.agents.registry": ("AgentDef", "Registry", "agent"),
    "covey.client": ("LocalClient",),
    "covey.embedded": ("Embedded", "run"),
    "covey.errors": (
        "AgentFailure", "BackendError", "BackendUnavailable", "ConfigError", "Conflict", "CoveyError",
        "CursorExpired", "InputError", "NotFound", "Retry", "RunFailed", "SpecError", "StaleLease", "StoreLocked", "TooBusy",
        "VersionConflict",
    ),
    "covey.runtime.runner": ("Runner",),
    "covey.spec.builder": ("Workflow",),
    "covey.spec.load": ("load_spec", "load_spec_file"),
    "covey.spec.model": ("RetryPolicy", "StepSpec", "WaitSpec", "WorkflowSpec"),
    "covey.store.base": ("RunInfo",),
}  # fmt: skip
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'covey' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "AgentDef",
    "AgentFailure",
    "BackendError",
    "BackendUnavailable",
    "ConfigError",
    "Conflict",
    "Context",
    "CoveyError",
    "CursorExpired",
    "Embedded",
    "Handoff",
    "InputError",
    "LocalClient",
    "NotFound",
    "Registry",
    "Retry",
    "RetryPolicy",
    "RunFailed",
    "RunInfo",
    "Runner",
    "SpecError",
    "StaleLease",
    "StepSpec",
    "StoreLocked",
    "TaskCancelled",
    "TooBusy",
    "VersionConflict",
    "WaitSpec",
    "Workflow",
    "WorkflowSpec",
    "__version__",
    "agent",
    "load_spec",
    "load_spec_file",
    "run",
]
