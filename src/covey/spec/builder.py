"""The Python builder: write a workflow in code, get exactly the spec a file would hold.

The builder adds no meaning of its own. :meth:`Workflow.to_dict` is the
JSON-able spec (only the fields you set, as you would write them in YAML),
:meth:`Workflow.spec` validates it and :meth:`Workflow.compile` checks the
graph, just as for a loaded file::

    wf = Workflow("support", signals=["approve"])
    triage = wf.step("triage", skill="classify", input={"text": wf.input["text"]})
    answer = wf.step(
        "answer",
        skill="respond",
        input={"intent": triage["intent"]},
        when=triage["confidence"].gt(0.5),
    )
    wf.output({"answer": answer})

A step's handle is a reference: ``triage["intent"]`` renders to
``${steps.triage.intent}`` wherever it is placed. Strings pass through as they
are, so hand-written ``${...}`` placeholders work too. Building has no side
effects: nothing is registered anywhere, and a Workflow is only data.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from covey.errors import SpecError
from covey.spec.compile import STEP_NAME, CompiledWorkflow, compile_workflow, spec_from_json
from covey.spec.model import RetryPolicy, WorkflowSpec
from covey.spec.refs import Cond, Ref, StepRef, render_value

__all__ = ["Cond", "Ref", "StepRef", "Workflow"]

Join = Literal["all", "any"]


class Workflow:
    """A workflow under construction.

    Args:
        name: the workflow's name.
        description: free text for people.
        signals: names of the signals the workflow accepts (``wait`` steps use them).
        max_steps: bound on tasks per run, dynamic ones and map elements included.
        timeout_s: run deadline in seconds from submit.
        input_schema: JSON Schema a run's input must satisfy.
    """

    def __init__(
        self,
        name: str,
        *,
        description: str | None = None,
        signals: Iterable[str] = (),
        max_steps: int | None = None,
        timeout_s: float | None = None,
        input_schema: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self._head: dict[str, Any] = {
            "description": description,
            "input_schema": render_value(input_schema, field="input_schema"),
            "signals": list(signals) or None,
            "max_steps": max_steps,
            "timeout_s": timeout_s,
        }
        self._steps: dict[str, dict[str, Any]] = {}
        self._output: Any = None

    @property
    def input(self) -> Ref:
        """The run's input: ``wf.input["text"]`` is ``${input.text}``."""
        return Ref("input")

    @property
    def item(self) -> Ref:
        """In a map step: the element this task handles."""
        return Ref("item")

    @property
    def index(self) -> Ref:
        """In a map step: the element's position, from 0."""
        return Ref("index")

    def step(
        self,
        name: str,
        *,
        skill: str | None = None,
        agent: str | None = None,
        input: Any = None,
        input_schema: Mapping[str, Any] | None = None,
        after: Iterable[StepRef | str] = (),
        when: Cond | Ref | str | None = None,
        map: Ref | str | None = None,
        join: Join | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        priority: int | None = None,
        labels: Mapping[str, str] | None = None,
        max_lost_leases: int | None = None,
    ) -> StepRef:
        """Add a step done by an agent: name ``skill`` (any agent serving it) or ``agent``.

        Every argument is the StepSpec field of the same name; see the spec
        reference. ``input`` may hold references anywhere, ``map`` is a
        reference to a list, ``when`` a condition, a reference (its truth) or
        a raw expression string, and ``after`` holds handles or step names.

        Returns:
            The step's handle, a reference to its output.

        Raises:
            SpecError: the name is taken or malformed, not exactly one of
                ``skill`` and ``agent`` is given, or a field is invalid.
        """
        if (skill is None) == (agent is None):
            raise SpecError("a step needs exactly one of skill or agent", step=name, field="skill")
        fields = {
            "skill": skill,
            "agent": agent,
            "input": render_value(input, step=name),
            "input_schema": render_value(input_schema, step=name, field="input_schema"),
            "map": _expression(map, name, "map"),
            "retry": _retry(retry),
            "timeout_s": timeout_s,
            "priority": priority,
            "labels": dict(labels) if labels is not None else None,
            "max_lost_leases": max_lost_leases,
        }
        return self._add(name, fields, after=after, when=when, join=join)

    def wait(
        self,
        name: str,
        *,
        signal: str,
        timeout_s: float | None = None,
        after: Iterable[StepRef | str] = (),
        when: Cond | Ref | str | None = None,
        join: Join | None = None,
    ) -> StepRef:
        """Add a step that completes when the signal ``signal`` arrives.

        Its output is the signal's payload. ``timeout_s`` fails the step if the
        signal has not arrived that many seconds after the step became ready.

        Raises:
            SpecError: ``signal`` is not among the workflow's ``signals``, or
                as for :meth:`step`.
        """
        if signal not in (self._head["signals"] or ()):
            reason = f"unknown signal {signal!r}; declare it in the workflow's signals"
            raise SpecError(reason, step=name, field="wait.signal")
        wait: dict[str, Any] = {"signal": signal}
        if timeout_s is not None:
            wait["timeout_s"] = timeout_s
        return self._add(name, {"wait": wait}, after=after, when=when, join=join)

    def output(self, value: Any) -> None:
        """Set the run's output mapping (by default, the outputs of the steps nothing depends on)."""
        self._output = render_value(value, field="output")

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON data, holding only the fields that were set."""
        data: dict[str, Any] = {"name": self.name}
        data.update(_present(self._head))
        data["steps"] = self._steps
        if self._output is not None:
            data["output"] = self._output
        return copy.deepcopy(data)

    def spec(self) -> WorkflowSpec:
        """The validated spec; SpecError names the step and field at fault."""
        return spec_from_json(self.to_dict())

    def compile(self) -> CompiledWorkflow:
        """The compiled workflow; SpecError names unknown references, cycles and bad expressions."""
        return compile_workflow(self.spec())

    def _add(
        self,
        name: str,
        fields: dict[str, Any],
        *,
        after: Iterable[StepRef | str],
        when: Cond | Ref | str | None,
        join: Join | None,
    ) -> StepRef:
        if not STEP_NAME.match(name):
            raise SpecError(f"step names must match {STEP_NAME.pattern}", step=name, field="name")
        if name in self._steps:
            raise SpecError("duplicate step name", step=name, field="name")
        fields.update(after=_after(after) or None, when=_expression(when, name, "when"), join=join)
        step = _present(fields)
        # Validate now, so an error points at the line that added the step.
        spec_from_json({"name": self.name, "steps": {name: step}, "signals": self._head["signals"] or []})
        self._steps[name] = step
        return StepRef(name)


def _present(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _expression(value: Cond | Ref | str | None, step: str, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Cond | Ref):
        return str(value)
    raise SpecError(
        f"expected a Ref, a Cond or an expression string, got {type(value).__name__}", step=step, field=field
    )


def _after(after: Iterable[StepRef | str]) -> list[str]:
    if isinstance(after, str | StepRef):
        after = [after]
    names = [item.name if isinstance(item, StepRef) else item for item in after]
    return list(dict.fromkeys(names))


def _retry(retry: RetryPolicy | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if isinstance(retry, RetryPolicy):
        return retry.model_dump(mode="json", exclude_unset=True)
    return dict(retry) if retry is not None else None
