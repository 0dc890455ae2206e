"""Checking a JSON value against a JSON Schema, with the error naming the field at fault.

Used wherever a schema guards a boundary: a run's input at submit, a step's
resolved input before its agent runs.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from covey.errors import InputError

__all__ = ["schema_problem"]


def schema_problem(value: Any, schema: dict[str, Any], *, field: str = "input") -> InputError | None:
    """The first way ``value`` fails ``schema``, as an InputError whose field is its path; None if it fits."""
    problem = next(iter(Draft202012Validator(schema).iter_errors(value)), None)
    if problem is None:
        return None
    where = field + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem.absolute_path)
    return InputError(problem.message, field=where)
