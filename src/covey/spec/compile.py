"""Static checks and compilation of a workflow spec into the engine's graph.

:func:`compile_workflow` turns a validated :class:`WorkflowSpec` into a
:class:`CompiledWorkflow`: every expression compiled once, the dependency
graph derived from data references and ``after``, cycles refused, and for each
step the paths of its output that later conditions and map sources read (the
projections the engine loop stores in TaskSucceeded). Errors name the step and
the field. Everything here is pure, so the engine may call it while deciding
(steps added by a hand-off are compiled the same way).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import ValidationError

from covey.errors import SpecError
from covey.spec.expr import Expr, Path, Template, compile_expr, compile_template
from covey.spec.model import StepSpec, WorkflowSpec

__all__ = [
    "MAX_SPEC_BYTES",
    "CompiledStep",
    "CompiledWorkflow",
    "check_targets",
    "compile_steps",
    "compile_workflow",
    "spec_from_json",
]

STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
#: Largest workflow spec accepted, in bytes of JSON: four times a payload's limit. A spec given as
#: data (the Python API, a submit over the socket) is held to it; a spec file also to the count and
#: depth of its values (``covey.spec.load``).
MAX_SPEC_BYTES = 4 * 1_048_576


@dataclass(frozen=True, slots=True)
class CompiledStep:
    """One step, ready for the engine: expressions compiled, dependencies known."""

    name: str
    spec: StepSpec
    deps: tuple[str, ...]
    input: Template
    when: Expr | None
    map: Expr | None

    @property
    def target(self) -> str:
        """The skill (or ``agent:<name>``) a worker must serve to take this step."""
        if self.spec.agent is not None:
            return f"agent:{self.spec.agent}"
        return self.spec.skill or ""


@dataclass(frozen=True, slots=True)
class CompiledWorkflow:
    """A workflow as the engine uses it; ``hash`` pins the spec a run started with."""

    spec: WorkflowSpec
    source: Mapping[str, Any]
    hash: str
    steps: Mapping[str, CompiledStep]
    downstream: Mapping[str, tuple[str, ...]]
    projections: Mapping[str, frozenset[Path]]
    output: Template


def spec_from_json(data: Mapping[str, Any]) -> WorkflowSpec:
    """Validate a JSON object as a workflow spec; SpecError names the step and field."""
    try:
        return WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(exc) from None


def _spec_error(exc: ValidationError) -> SpecError:
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"]]
    step = None
    if len(loc) >= 2 and loc[0] == "steps":
        step, loc = loc[1], loc[2:]
    field = ".".join(loc) or None
    more = len(exc.errors()) - 1
    reason = first["msg"] + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
    return SpecError(reason, step=step, field=field)


def compile_workflow(spec: WorkflowSpec | Mapping[str, Any]) -> CompiledWorkflow:
    """Check and compile a whole workflow.

    Raises:
        SpecError: bad step names or targets, references to unknown steps,
            unknown signals, bad expressions or schemas, a dependency cycle, or
            a spec over :data:`MAX_SPEC_BYTES` of JSON.
    """
    if isinstance(spec, WorkflowSpec):
        return _compile_source(_sized(orjson.dumps(spec.model_dump(mode="json", exclude_defaults=True))))
    try:
        text = orjson.dumps(spec)
    except TypeError:
        text = None
    if text is None:
        return _compile_source(
            _sized(orjson.dumps(spec_from_json(spec).model_dump(mode="json", exclude_defaults=True)))
        )
    return _compile_json(_sized(text))


def _sized(text: bytes) -> bytes:
    """``text``, unless it is over :data:`MAX_SPEC_BYTES` (then a SpecError saying so)."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"the workflow is {len(text):,} bytes of JSON, over the limit of {MAX_SPEC_BYTES:,}")
    return text


@lru_cache(maxsize=256)
def _compile_json(text: bytes) -> CompiledWorkflow:
    """Compile a spec given as JSON text, once per distinct text (submits of one workflow repeat it)."""
    spec = spec_from_json(orjson.loads(text))
    return _compile_source(orjson.dumps(spec.model_dump(mode="json", exclude_defaults=True)))


@lru_cache(maxsize=256)
def _compile_source(text: bytes) -> CompiledWorkflow:
    """Compile once per distinct spec text; steps keep the order written, the hash ignores key order."""
    source = orjson.loads(text)
    canonical = orjson.dumps(source, option=orjson.OPT_SORT_KEYS)
    spec = WorkflowSpec.model_validate(source)
    steps = compile_steps(spec.steps, known=frozenset(spec.steps), signals=frozenset(spec.signals))
    output = compile_template(spec.output, field_name="output")
    unknown = output.steps - steps.keys()
    if unknown:
        raise SpecError(f"output refers to unknown step {sorted(unknown)[0]!r}", field="output")
    return CompiledWorkflow(
        spec=spec,
        source=source,
        hash=hashlib.sha256(canonical).hexdigest()[:16],
        steps=steps,
        downstream=downstream_of(steps),
        projections=projections_of(steps.values()),
        output=output,
    )


def compile_steps(
    specs: Mapping[str, StepSpec], *, known: frozenset[str], signals: frozenset[str]
) -> dict[str, CompiledStep]:
    """Compile steps whose references must fall within ``known`` step names.

    Raises:
        SpecError: as for :func:`compile_workflow`; a cycle among ``specs``
            is refused too (steps outside ``specs`` are taken as acyclic).
    """
    compiled = {name: _compile_step(name, step, signals) for name, step in specs.items()}
    for step in compiled.values():
        for dep in step.deps:
            if dep not in known:
                raise SpecError(f"refers to unknown step {dep!r}", step=step.name, field=_field_of(step, dep))
            if dep == step.name:
                raise SpecError("a step cannot depend on itself", step=step.name, field=_field_of(step, dep))
    _check_acyclic(compiled)
    return compiled


def _compile_step(name: str, step: StepSpec, signals: frozenset[str]) -> CompiledStep:
    if not STEP_NAME.match(name):
        raise SpecError(f"step names must match {STEP_NAME.pattern}", step=name, field="name")
    targets = [key for key in ("skill", "agent", "wait") if getattr(step, key) is not None]
    if len(targets) != 1:
        raise SpecError("a step needs exactly one of skill, agent or wait", step=name, field="skill")
    if step.wait is not None and step.wait.signal not in signals:
        raise SpecError(
            f"unknown signal {step.wait.signal!r}; declare it in the workflow's signals",
            step=name,
            field="wait.signal",
        )
    if step.input_schema is not None:
        try:
            Draft202012Validator.check_schema(step.input_schema)
        except SchemaError as exc:
            reason = f"not a valid JSON Schema: {exc.message}"
            raise SpecError(reason, step=name, field="input_schema") from None
    template = compile_template(step.input, step=name, field_name="input")
    when = compile_expr(step.when, step=name, field_name="when") if step.when else None
    fan = compile_expr(step.map, step=name, field_name="map") if step.map else None
    _check_item_use(name, template, when, fan)
    deps = dict.fromkeys(step.after)
    for expr_steps in (template.steps, when.steps if when else (), fan.steps if fan else ()):
        deps.update(dict.fromkeys(sorted(expr_steps)))
    return CompiledStep(name, step, tuple(deps), template, when, fan)


def _check_item_use(name: str, template: Template, when: Expr | None, fan: Expr | None) -> None:
    """Refuse ``item``/``index`` outside a map step's input.

    ``when`` and ``map`` are evaluated once for the whole step, before it fans
    out, so there is no element for them to see.
    """
    used = [(expr, "input") for expr in template.exprs] + [(when, "when"), (fan, "map")]
    for expr, where in used:
        if expr is not None and where == "map" and "state" in expr.roots:
            raise SpecError(f"{expr.text!r}: a map source cannot read shared state", step=name, field=where)
        if expr is not None and where == "when" and expr.state_keys is None:
            raise SpecError(
                f"{expr.text!r} reads shared state whole; name its keys (state.<key>)", step=name, field=where
            )
        allowed = fan is not None and where == "input"
        if expr is not None and not allowed and expr.roots & {"item", "index"}:
            raise SpecError(
                f"{expr.text!r} uses item/index, which exist only in a map step's input",
                step=name,
                field=where,
            )


def _field_of(step: CompiledStep, dep: str) -> str:
    if dep in step.spec.after:
        return "after"
    if step.when is not None and dep in step.when.steps:
        return "when"
    if step.map is not None and dep in step.map.steps:
        return "map"
    return "input"


def _check_acyclic(steps: Mapping[str, CompiledStep]) -> None:
    """Refuse a dependency cycle, naming the steps on it (dynamic loops use hand-offs).

    Dependencies outside ``steps`` (the run's existing steps, for a hand-off)
    cannot lead back into them, so the walk stops there. The walk keeps its own
    stack: a long chain of steps must not reach Python's recursion limit.
    """
    done: set[str] = set()
    for root in steps:
        if root not in done:
            _walk_from(root, steps, done)


def _walk_from(root: str, steps: Mapping[str, CompiledStep], done: set[str]) -> None:
    path, on_path = [root], {root}
    pending = [iter(steps[root].deps)]
    while pending:
        dep = next(pending[-1], None)
        if dep is None:
            on_path.discard(path[-1])
            done.add(path.pop())
            pending.pop()
        elif dep in on_path:
            cycle = [*path[path.index(dep) :], dep]
            step = steps[path[-1]]
            raise SpecError(
                f"dependency cycle: {' -> '.join(cycle)}", step=step.name, field=_field_of(step, dep)
            )
        elif dep in steps and dep not in done:
            path.append(dep)
            on_path.add(dep)
            pending.append(iter(steps[dep].deps))


def downstream_of(steps: Mapping[str, CompiledStep]) -> dict[str, tuple[str, ...]]:
    """For each step, the steps that depend on it, in spec order."""
    out: dict[str, list[str]] = {name: [] for name in steps}
    for step in steps.values():
        for dep in step.deps:
            out.setdefault(dep, []).append(step.name)
    return {name: tuple(children) for name, children in out.items()}


def projections_of(steps: Iterable[CompiledStep]) -> dict[str, frozenset[Path]]:
    """Paths of each step's output that conditions and map sources read."""
    out: dict[str, set[Path]] = {}
    for step in steps:
        for expr in (step.when, step.map):
            if expr is not None:
                for name, paths in expr.paths.items():
                    out.setdefault(name, set()).update(paths)
    return {name: frozenset(paths) for name, paths in out.items()}


def check_targets(workflow: CompiledWorkflow, *, skills: frozenset[str], agents: frozenset[str]) -> None:
    """Refuse steps whose skill or agent nobody serves (when the serving agents are known)."""
    for step in workflow.steps.values():
        if step.spec.skill is not None and step.spec.skill not in skills:
            reason = f"unknown skill {step.spec.skill!r}; known skills: {sorted(skills)}"
            raise SpecError(reason, step=step.name, field="skill")
        if step.spec.agent is not None and step.spec.agent not in agents:
            reason = f"unknown agent {step.spec.agent!r}; known agents: {sorted(agents)}"
            raise SpecError(reason, step=step.name, field="agent")
