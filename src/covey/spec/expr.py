"""Declarative expressions: ``${...}`` placeholders holding JMESPath.

Conditions (``when``), fan-out sources (``map``) and input mappings are
expressions evaluated on JSON only, with the well-kept ``jmespath`` library;
nothing is ever passed to ``eval``. An expression sees one scope document::

    {"input": <run input>, "steps": {<step>: <output>}, "item": <map element>,
     "index": <map index>}

A wait step's output is its signal's payload (``steps.approval``). In an input
mapping, ``state`` is the run's shared-state namespace (``${state.draft}``),
read when the task is claimed.

A string that is exactly one placeholder (``"${steps.triage.intent}"``) takes
the expression's value, of any JSON type; placeholders inside a longer string
are interpolated as text. ``$${`` writes a literal ``${``.

Each expression knows statically which steps it reads and which paths of their
outputs (``steps.triage.intent`` reads path ``("intent",)`` of ``triage``): the
graph's edges come from there, and the engine loop stores exactly those
projections of an output in the TaskSucceeded event, so ``decide`` can test a
condition without reading outputs on the side (invariant 2).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.visitor import TreeInterpreter

from covey.errors import SpecError

__all__ = ["ROOTS", "Expr", "Template", "compile_expr", "compile_template", "truthy"]

#: Names an expression may start from.
ROOTS = frozenset({"input", "steps", "item", "index", "state"})

Path = tuple[str, ...]

#: One interpreter for every evaluation: jmespath's ``search`` builds a new one per call, which
#: costs more than evaluating a typical mapping. It keeps no state between calls.
_INTERPRETER = TreeInterpreter()


@dataclass(frozen=True, slots=True)
class Expr:
    """One compiled JMESPath expression and what it reads."""

    text: str
    parsed: Any = field(repr=False, compare=False)
    paths: Mapping[str, frozenset[Path]]
    """Output paths read, by step name; an empty path means the whole output."""
    roots: frozenset[str] = frozenset()
    """Scope names read (``input``, ``steps``, ``item``...)."""
    state_keys: frozenset[str] | None = frozenset()
    """Keys of the run's shared state read (``state.<key>``); None when ``state`` is read whole."""
    fields: tuple[str, ...] | None = field(default=None, repr=False, compare=False)
    """For a plain path of names (``steps.a.text``, most mappings): the names, looked up without the
    interpreter; None for any other expression."""

    @property
    def steps(self) -> frozenset[str]:
        """The steps this expression reads."""
        return frozenset(self.paths)

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        """The expression's value on ``scope`` (JSON in, JSON out)."""
        if self.fields is None:
            return _INTERPRETER.visit(self.parsed.parsed, scope)
        value: Any = scope.get(self.fields[0])
        for name in self.fields[1:]:
            # As JMESPath's field: a name looked up in anything but an object is null.
            value = value.get(name) if isinstance(value, dict) else None
        return value


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled input mapping: a JSON value whose strings may hold placeholders."""

    source: Any
    _node: Any = field(repr=False, compare=False)
    exprs: tuple[Expr, ...] = field(compare=False)
    escapes: bool = field(default=False, compare=False)
    """True when the template has no placeholder but some ``$${`` escape, so ``source`` is not its value."""
    steps: frozenset[str] = field(init=False, compare=False)
    """The steps this mapping reads (known once compiled: a claim asks for each task's)."""
    roots: frozenset[str] = field(init=False, compare=False)
    """The scope names its expressions read (``input``, ``steps``, ``state``...)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", frozenset(step for expr in self.exprs for step in expr.paths))
        object.__setattr__(self, "roots", frozenset(root for expr in self.exprs for root in expr.roots))

    @property
    def is_literal(self) -> bool:
        """True when nothing in the template needs evaluating: ``source`` is its value."""
        return not self.exprs and not self.escapes

    def render(self, scope: Mapping[str, Any]) -> Any:
        """The mapping's value on ``scope``."""
        if self.is_literal:
            return self.source
        return _render(self._node, scope)


class _Interp:
    """A string with placeholders inside text: parts are str or Expr."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[str | Expr]) -> None:
        self.parts = parts


def truthy(value: Any) -> bool:
    """JMESPath truth: false, null, empty string, list and object are false.

    Zero is true, as in JMESPath (``0 in (False,)`` would say otherwise in Python).
    """
    if value is None or value is False:
        return False
    return not isinstance(value, str | list | dict) or bool(value)


def compile_expr(text: str, *, step: str | None = None, field_name: str = "when") -> Expr:
    """Compile a condition or map source: ``${expr}`` or a bare JMESPath expression.

    Raises:
        SpecError: naming ``step`` and ``field_name`` when the expression does
            not parse or starts from an unknown name.
    """
    body = text.strip()
    if body.startswith("${") and body.endswith("}"):
        pieces = list(_split(body, step, field_name))
        if len(pieces) == 1 and isinstance(pieces[0], Expr):
            return pieces[0]
    return _compile(body, step, field_name)


def compile_template(value: Any, *, step: str | None = None, field_name: str = "input") -> Template:
    """Compile an input mapping; SpecError names the step and the field path at fault."""
    exprs: list[Expr] = []
    node = _compile_node(value, step, field_name, exprs)
    return Template(value, node, tuple(exprs), escapes=not exprs and _has_interp(node))


def _has_interp(node: Any) -> bool:
    if isinstance(node, dict):
        return any(_has_interp(item) for item in node.values())
    if isinstance(node, list):
        return any(_has_interp(item) for item in node)
    return isinstance(node, _Interp)


def _compile_node(value: Any, step: str | None, where: str, exprs: list[Expr]) -> Any:
    if isinstance(value, dict):
        return {key: _compile_node(item, step, f"{where}.{key}", exprs) for key, item in value.items()}
    if isinstance(value, list):
        return [_compile_node(item, step, f"{where}[{i}]", exprs) for i, item in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        parts = list(_split(value, step, where))
        exprs.extend(part for part in parts if isinstance(part, Expr))
        if len(parts) == 1 and isinstance(parts[0], Expr):
            return parts[0]
        return _Interp(parts)
    return value


def _render(node: Any, scope: Mapping[str, Any]) -> Any:
    if isinstance(node, Expr):
        return node.evaluate(scope)
    if isinstance(node, dict):
        return {key: _render(item, scope) for key, item in node.items()}
    if isinstance(node, list):
        return [_render(item, scope) for item in node]
    if isinstance(node, _Interp):
        return "".join(_as_text(p.evaluate(scope)) if isinstance(p, Expr) else p for p in node.parts)
    return node


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    import orjson

    return orjson.dumps(value).decode()


def _split(text: str, step: str | None, where: str) -> Iterator[str | Expr]:
    """Cut a string into literal text and compiled placeholders."""
    pos, literal = 0, []
    while pos < len(text):
        if text.startswith("$${", pos):
            literal.append("${")
            pos += 3
        elif text.startswith("${", pos):
            end = _closing_brace(text, pos + 2, step, where)
            if literal:
                yield "".join(literal)
                literal = []
            yield _compile(text[pos + 2 : end], step, where)
            pos = end + 1
        else:
            literal.append(text[pos])
            pos += 1
    if literal:
        yield "".join(literal)


def _closing_brace(text: str, start: int, step: str | None, where: str) -> int:
    """Index of the ``}`` closing a placeholder, skipping quoted and nested braces."""
    depth, quote, escaped = 0, "", False
    for i in range(start, len(text)):
        ch = text[i]
        if escaped:
            escaped = False
        elif quote:
            if ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "'`\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                return i
            depth -= 1
    raise SpecError(f"unclosed '${{' in {text!r}", step=step, field=where)


def _compile(body: str, step: str | None, where: str) -> Expr:
    if not body.strip():
        raise SpecError("empty expression", step=step, field=where)
    try:
        parsed = jmespath.compile(body)
    except JMESPathError as exc:
        raise SpecError(f"bad expression {body!r}: {exc}", step=step, field=where) from None
    roots = frozenset(_root_fields(parsed.parsed))
    unknown = sorted(roots - ROOTS)
    if unknown:
        raise SpecError(
            f"expression {body!r} starts from unknown name {unknown[0]!r}; use one of {sorted(ROOTS)}",
            step=step,
            field=where,
        )
    paths: dict[str, set[Path]] = {}
    _collect_paths(parsed.parsed, paths, step, where, body)
    expr = Expr(body, parsed, {name: frozenset(found) for name, found in paths.items()}, roots)
    keys: set[str] = set()
    whole = _collect_state_keys(parsed.parsed, keys)
    return replace(expr, state_keys=None if whole else frozenset(keys), fields=_plain_fields(parsed.parsed))


def _plain_fields(node: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The names of an expression that is only a path of names (``a.b.c``), else None."""
    if node["type"] == "field":
        return (node["value"],)
    if node["type"] == "subexpression" and all(child["type"] == "field" for child in node["children"]):
        return tuple(child["value"] for child in node["children"])
    return None


#: Nodes whose first child is evaluated where the node is; the others see its result.
_LEFT_FIRST = frozenset(
    {
        "subexpression",
        "index_expression",
        "projection",
        "value_projection",
        "flatten",
        "filter_projection",
        "pipe",
    }
)
#: Nodes whose children are all evaluated where the node is.
_ALL_HERE = frozenset(
    {
        "comparator",
        "and_expression",
        "or_expression",
        "not_expression",
        "function_expression",
        "multi_select_list",
        "multi_select_dict",
        "key_val_pair",
    }
)


def _root_fields(node: Mapping[str, Any]) -> Iterator[str]:
    """Names the expression looks up in the scope document itself.

    Every operand of a comparison, boolean, function call or multi-select
    starts from the scope, so each is checked, not only the leftmost one
    (``${stpes.a.x == `1`}`` would otherwise be silently false forever).
    Right-hand sides of dots, projections and filters see other values.
    """
    kind = node["type"]
    if kind == "field":
        yield node["value"]
    elif kind in _LEFT_FIRST:
        yield from _root_fields(node["children"][0])
    elif kind in _ALL_HERE:
        for child in node["children"]:
            yield from _root_fields(child)


def _collect_state_keys(node: Any, out: set[str]) -> bool:
    """Add every ``state.<key>`` the expression reads to ``out``; True if ``state`` is read whole."""
    if not isinstance(node, dict):
        return False
    kind = node.get("type")
    if kind == "field" and node.get("value") == "state":
        return True
    if kind == "subexpression":
        first, *rest = node["children"]
        if first.get("type") == "field" and first.get("value") == "state":
            if rest and rest[0].get("type") == "field":
                out.add(rest[0]["value"])
                return any(_collect_state_keys(child, out) for child in rest[1:])
            return True
    return any(_collect_state_keys(child, out) for child in node.get("children", ()))


def _collect_paths(node: Any, out: dict[str, set[Path]], step: str | None, where: str, body: str) -> None:
    """Record every ``steps.<name>.<path>`` the expression reads.

    The path stops at the first non-field part (an index, a filter): the
    projection then holds a little more than needed, never less.
    """
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "field" and node.get("value") == "steps":
        raise SpecError(f"expression {body!r} must name a step: steps.<name>", step=step, field=where)
    if kind == "subexpression":
        lead: list[str] = []
        for child in node["children"]:
            if child.get("type") != "field":
                break
            lead.append(child["value"])
        if lead and lead[0] == "steps":
            if len(lead) < 2:
                raise SpecError(f"expression {body!r} must name a step: steps.<name>", step=step, field=where)
            out.setdefault(lead[1], set()).add(tuple(lead[2:]))
            return
    for child in node.get("children", ()):
        _collect_paths(child, out, step, where, body)
