"""Resolving a task's input at claim time, shared by every store.

Results travel by reference: a task row keeps its input *mapping*, and the
values it names (the run's input, upstream outputs, the map element) are read
only when a worker claims the task. Compiled mappings are cached by their
JSON text, so the 5,000 elements of one map step compile it once.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson

from covey.errors import CoveyError
from covey.spec.expr import Template, compile_template

__all__ = ["reads_input", "reads_state", "render_input", "template_of"]


def reads_input(template: Template) -> bool:
    """True when the mapping reads the run's input (``${input...}``)."""
    return "input" in template.roots


def reads_state(template: Template) -> bool:
    """True when the mapping reads the run's shared state (``${state...}``)."""
    return "state" in template.roots


@lru_cache(maxsize=1024)
def _compiled(text: bytes) -> Template:
    return compile_template(orjson.loads(text))


def template_of(text: bytes) -> Template:
    """The compiled input mapping stored as ``text``."""
    return _compiled(text)


def render_input(
    template: Template,
    *,
    run_input: Any,
    outputs: dict[str, Any],
    item: Any,
    index: int,
    state: dict[str, Any] | None = None,
) -> Any:
    """Evaluate a mapping; a mapping of None means the task's input is an empty object.

    Raises:
        CoveyError: when an expression fails on the values it found.
    """
    if template.source is None:
        return item if index >= 0 else {}
    scope = {"input": run_input, "steps": outputs, "item": item, "index": index, "state": state or {}}
    try:
        return template.render(scope)
    except Exception as exc:  # jmespath raises several unrelated types on bad data
        raise CoveyError(f"input mapping failed: {exc}") from None
