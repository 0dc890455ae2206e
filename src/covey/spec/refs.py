"""References and conditions for the Python builder: values that render to ``${...}``.

A :class:`Ref` names a value in an expression's scope (``input``, a step's
output, the map ``item`` or ``index``) and renders to the placeholder a spec
author would write by hand: ``triage["intent"]`` is ``${steps.triage.intent}``.
Comparison helpers turn a reference into a :class:`Cond`, a JMESPath condition
with JSON literals in backticks, and conditions combine with ``&``, ``|`` and
``~``.

Python's own operators are deliberately not overloaded for comparison
(``ref == 1`` stays identity-based), and both classes refuse ``bool()``:
``a and b`` or ``if ref:`` would be evaluated by Python, now, instead of by
covey at run time, so they raise instead of silently meaning something else.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from covey.errors import SpecError

__all__ = ["Cond", "Ref", "StepRef", "render_value"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# How tightly a condition's text binds, to know when it needs parentheses.
_OR, _AND, _COMPARISON, _ATOM = 1, 2, 3, 4


class Ref:
    """A reference to a value in the expression scope.

    Index it with a key (``ref["intent"]``) or a list position (``ref[0]``)
    to reach further in. Placed anywhere in a step's input, in ``map`` or in
    ``when``, it renders to its ``${...}`` placeholder; inside an f-string it
    interpolates as text.
    """

    __slots__ = ("_expr",)

    def __init__(self, expr: str) -> None:
        self._expr = expr

    @property
    def expr(self) -> str:
        """The JMESPath expression, without ``${}``: ``steps.triage.intent``."""
        return self._expr

    def __getitem__(self, key: str | int) -> Ref:
        return Ref(self._expr + _accessor(key))

    def __str__(self) -> str:
        return "${" + self._expr + "}"

    def __repr__(self) -> str:
        return f"Ref({self._expr!r})"

    def eq(self, value: Any) -> Cond:
        """True when the value equals ``value`` (JSON equality; another Ref compares two values)."""
        return self._compare("==", value)

    def ne(self, value: Any) -> Cond:
        """True when the value differs from ``value``."""
        return self._compare("!=", value)

    def gt(self, value: Any) -> Cond:
        """True when the value is a number greater than ``value``."""
        return self._compare(">", value)

    def ge(self, value: Any) -> Cond:
        """True when the value is a number greater than or equal to ``value``."""
        return self._compare(">=", value)

    def lt(self, value: Any) -> Cond:
        """True when the value is a number less than ``value``."""
        return self._compare("<", value)

    def le(self, value: Any) -> Cond:
        """True when the value is a number less than or equal to ``value``."""
        return self._compare("<=", value)

    def truthy(self) -> Cond:
        """True unless the value is false, null, or an empty string, list or object."""
        return Cond(self._expr, _ATOM)

    def __and__(self, other: Cond | Ref) -> Cond:
        return self.truthy() & other

    def __or__(self, other: Cond | Ref) -> Cond:
        return self.truthy() | other

    def __invert__(self) -> Cond:
        return ~self.truthy()

    def __bool__(self) -> NoReturn:
        raise TypeError("a Ref has no truth value in Python; use .truthy(), &, | and ~ to build a condition")

    def __iter__(self) -> NoReturn:
        # Without this, __getitem__ would make a Ref iterable without end.
        raise TypeError("a Ref cannot be iterated in Python; use map= to run a step per element")

    def __contains__(self, item: object) -> NoReturn:
        raise TypeError("a Ref cannot be searched in Python; covey evaluates it at run time")

    def _compare(self, op: str, value: Any) -> Cond:
        return Cond(f"{self._expr} {op} {_operand(value)}", _COMPARISON)


class StepRef(Ref):
    """A step's handle: its whole output, or (indexed) a part of it; also usable in ``after``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        super().__init__(f"steps.{name}")
        self.name = name
        """The step's name."""

    def __repr__(self) -> str:
        return f"StepRef({self.name!r})"


class Cond:
    """A condition: a JMESPath expression used for ``when``.

    Combine with ``a & b`` (both), ``a | b`` (either) and ``~a`` (not); the
    rendered text carries the parentheses the combination needs.
    """

    __slots__ = ("_expr", "_level")

    def __init__(self, expr: str, level: int = _ATOM) -> None:
        self._expr = expr
        self._level = level

    @property
    def expr(self) -> str:
        """The JMESPath expression, without ``${}``."""
        return self._expr

    def __and__(self, other: Cond | Ref) -> Cond:
        right = _as_cond(other)
        return Cond(f"{self._bound(_AND)} && {right._bound(_AND)}", _AND)

    def __or__(self, other: Cond | Ref) -> Cond:
        right = _as_cond(other)
        return Cond(f"{self._bound(_OR)} || {right._bound(_OR)}", _OR)

    def __invert__(self) -> Cond:
        # `!` binds tighter than `.` in JMESPath (`!a.b` is `(!a).b`): always parenthesize.
        return Cond(f"!({self._expr})", _ATOM)

    def __str__(self) -> str:
        return "${" + self._expr + "}"

    def __repr__(self) -> str:
        return f"Cond({self._expr!r})"

    def __bool__(self) -> NoReturn:
        raise TypeError("a Cond has no truth value in Python; combine conditions with &, | and ~")

    def _bound(self, level: int) -> str:
        return self._expr if self._level >= level else f"({self._expr})"


def _as_cond(value: Cond | Ref) -> Cond:
    if isinstance(value, Cond):
        return value
    if isinstance(value, Ref):
        return value.truthy()
    raise TypeError(f"cannot combine a condition with {type(value).__name__}; use a Ref or a Cond")


def _accessor(key: str | int) -> str:
    """The JMESPath text that reaches ``key`` from a value: ``.name``, ``."my-key"``, ``[0]``."""
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise TypeError(f"a Ref is indexed by a str key or an int position, not {type(key).__name__}")
    if isinstance(key, int):
        return f"[{key}]"
    if _IDENTIFIER.match(key):
        return f".{key}"
    return "." + json.dumps(key, ensure_ascii=False)


def _operand(value: Any) -> str:
    """A comparison's right side: another reference, or a JSON literal in backticks."""
    if isinstance(value, Ref):
        return value.expr
    if isinstance(value, Cond):
        raise TypeError("compare a Ref with a value or another Ref, not with a Cond")
    plain = render_value(value, field="when")
    text = json.dumps(plain, ensure_ascii=False, separators=(",", ":"))
    return "`" + text.replace("`", "\\`") + "`"


def render_value(value: Any, *, step: str | None = None, field: str = "input") -> Any:
    """A JSON copy of ``value`` with every Ref and Cond replaced by its ``${...}`` string.

    Strings are kept as they are, so hand-written placeholders work too.

    Raises:
        SpecError: naming ``step`` and the field path of a value that is not
            JSON (a non-string key, NaN, a set, an arbitrary object).
    """
    if isinstance(value, Ref | Cond):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{value!r} is not a JSON number", step=step, field=field)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {
            _key(key, step, field): render_value(item, step=step, field=f"{field}.{key}")
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [render_value(item, step=step, field=f"{field}[{i}]") for i, item in enumerate(value)]
    raise SpecError(f"{type(value).__name__} is not JSON", step=step, field=field)


def _key(key: object, step: str | None, field: str) -> str:
    if not isinstance(key, str):
        raise SpecError(f"key {key!r} is not a string", step=step, field=field)
    return key
