"""Workflow specs from JSON or YAML text.

:func:`load_spec` parses text and validates it as a :class:`WorkflowSpec`;
:func:`load_spec_file` does the same for a file, choosing the format by its
suffix. Every failure is a :class:`~covey.errors.SpecError` that says where:
the source and line for text the parser refuses, the step and field for
content the model refuses. A missing or unreadable file is a
:class:`~covey.errors.ConfigError`, since the fault is in how covey was
called, not in a spec.

YAML is read with the safe loader only (plain data, never Python objects).
Two YAML habits that would silently change a spec are refused instead of
guessed at: keys that are not strings (``on:`` reads as ``true``, ``1:`` as a
number) and values that are not JSON (``2024-01-01`` reads as a date); both
are fixed by quoting. Duplicate keys, which both parsers would let the last
one win, are refused too, since a second step of the same name would silently
replace the first.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from covey.errors import ConfigError, SpecError
from covey.spec.compile import spec_from_json
from covey.spec.model import WorkflowSpec

__all__ = ["FORMATS", "MAX_SPEC_DEPTH", "MAX_SPEC_VALUES", "load_spec", "load_spec_file", "parse_text"]

#: Formats :func:`load_spec` accepts, by name.
FORMATS = frozenset({"json", "yaml"})

#: Most values (objects, arrays and scalars, aliases counted each time used) in one spec.
MAX_SPEC_VALUES = 1_000_000
#: Deepest nesting of objects and arrays in a spec.
MAX_SPEC_DEPTH = 64

_SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
_JSON_SCALARS = (str, int, float, bool, type(None))
_YAML_HINT = " (YAML reads bare dates as dates, on/off/yes/no as booleans and digits as numbers)"


def load_spec(text: str, *, fmt: str | None = None, source: str = "<spec>") -> WorkflowSpec:
    """Parse and validate a workflow spec.

    Args:
        text: the spec, as JSON or YAML text.
        fmt: ``"json"`` or ``"yaml"``; None tries JSON, then YAML.
        source: where the text came from (a file name), used in messages.

    Returns:
        The validated spec. Its graph is not checked here; see
        :func:`covey.spec.compile.compile_workflow`.

    Raises:
        SpecError: the text does not parse (the message names ``source`` and
            the line), its top level is not an object, or a field is invalid
            (``step`` and ``field`` name it).
        ValueError: ``fmt`` is not one of :data:`FORMATS`.
    """
    data = parse_text(text, fmt=fmt, source=source)
    if not isinstance(data, dict):
        kind = "nothing" if data is None else type(data).__name__
        raise SpecError(f"{source}: a workflow spec must be an object at the top level, got {kind}")
    _check_plain(data, source)
    try:
        return spec_from_json(data)
    except SpecError as exc:
        raise SpecError(f"{exc.reason} (in {source})", step=exc.step, field=exc.field) from None


def load_spec_file(path: str | os.PathLike[str]) -> WorkflowSpec:
    """Load a workflow spec from a ``.json``, ``.yaml`` or ``.yml`` file.

    Other suffixes are parsed as JSON, then YAML.

    Raises:
        ConfigError: the file does not exist or cannot be read.
        SpecError: as for :func:`load_spec`, naming the file.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"workflow spec file not found: {file}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read workflow spec file {file}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    return load_spec(text, fmt=_SUFFIXES.get(file.suffix.lower()), source=str(file))


def parse_text(text: str, *, fmt: str | None = None, source: str = "<spec>") -> Any:
    """Parse JSON or YAML text into plain data, without validating it as a spec.

    Raises:
        SpecError: the text does not parse; the message names ``source`` and
            the line and column the parser stopped at.
        ValueError: ``fmt`` is not one of :data:`FORMATS`.
    """
    if fmt == "json":
        return _parse_json(text, source)
    if fmt == "yaml":
        return _parse_yaml(text, source)
    if fmt is not None:
        raise ValueError(f"unknown spec format {fmt!r}; expected one of {sorted(FORMATS)}")
    try:
        return _parse_json(text, source)
    except SpecError as json_error:
        try:
            return _parse_yaml(text, source)
        except SpecError:
            # Text that opens like JSON was meant as JSON: its error reads better.
            if text.lstrip().startswith(("{", "[")):
                raise json_error from None
            raise


def _parse_json(text: str, source: str) -> Any:
    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) < len(pairs):
            repeated = next(key for i, (key, _) in enumerate(pairs) if key in dict(pairs[:i]))
            raise SpecError(f"malformed JSON in {source}: duplicate key {repeated!r}")
        return out

    def no_constants(name: str) -> Any:
        raise SpecError(f"malformed JSON in {source}: {name} is not a JSON number")

    try:
        return json.loads(text, object_pairs_hook=unique_keys, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise SpecError(
            f"malformed JSON in {source} at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise SpecError(f"malformed JSON in {source}: nested too deeply") from None


def _parse_yaml(text: str, source: str) -> Any:
    try:
        _check_yaml_duplicates(yaml.compose(text, Loader=yaml.SafeLoader), source)
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"malformed YAML in {source}{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"malformed YAML in {source}: {exc}") from None
    except RecursionError:
        raise SpecError(f"malformed YAML in {source}: nested too deeply") from None


def _check_yaml_duplicates(node: yaml.Node | None, source: str) -> None:
    """Refuse a mapping that repeats a key, naming the line of the repeat."""
    for mapping in _yaml_mappings(node):
        seen: set[str] = set()
        for key, _ in mapping.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            if key.value in seen:
                line = key.start_mark.line + 1
                raise SpecError(f"malformed YAML in {source} at line {line}: duplicate key {key.value!r}")
            seen.add(key.value)


def _yaml_mappings(node: yaml.Node | None) -> Iterator[yaml.MappingNode]:
    """Every mapping in a node graph, each once (an alias is the node it names)."""
    stack = [node] if node is not None else []
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.MappingNode):
            yield current
            stack.extend(value for pair in current.value for value in pair)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def _check_plain(data: dict[str, Any], source: str) -> None:
    """Refuse what YAML reads as something JSON has no word for (non-string keys, dates).

    The walk counts values as the spec will be expanded (a YAML alias counts
    each time it is used), so a small file cannot grow into a huge spec.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    count = 0
    while stack:
        value, where, depth = stack.pop()
        count += 1
        if count > MAX_SPEC_VALUES:
            raise _located(f"spec holds more than {MAX_SPEC_VALUES} values", where, source)
        if depth > MAX_SPEC_DEPTH:
            raise _located(f"spec nests deeper than {MAX_SPEC_DEPTH} levels", where, source)
        stack.extend(_children(value, where, depth, source))


def _children(value: Any, where: str, depth: int, source: str) -> Iterator[tuple[Any, str, int]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _located(f"key {key!r} is not a string; quote it{_YAML_HINT}", where, source)
            yield item, f"{where}.{key}" if where else key, depth + 1
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield item, f"{where}[{i}]", depth + 1
    elif isinstance(value, float) and not math.isfinite(value):
        raise _located(f"{value!r} is not a JSON number", where, source)
    elif not isinstance(value, _JSON_SCALARS):
        raise _located(f"{type(value).__name__} {value!r} is not JSON; quote it{_YAML_HINT}", where, source)


def _located(reason: str, where: str, source: str) -> SpecError:
    """A SpecError at a dotted path, naming the step when the path is inside one."""
    step, field = None, where or None
    parts = where.split(".", 2)
    if len(parts) >= 2 and parts[0] == "steps":
        step, field = parts[1], (parts[2] if len(parts) > 2 else None)
    return SpecError(f"{reason} (in {source})", step=step, field=field)
