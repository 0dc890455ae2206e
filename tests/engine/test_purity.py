"""The engine is pure (invariant 2): no clock, randomness, IO or runtime layer anywhere it reaches.

Two checks, because one is not enough:

* ``sys.modules`` after importing ``covey.engine.decide`` and ``covey.engine.replay``
  in a fresh interpreter must hold none of covey's IO layers (store, runtime,
  bus, worker). Third-party dependencies of the spec compiler (pydantic,
  jsonschema) import ``random``, ``uuid``, ``socket`` and ``threading``
  themselves, and ``time`` is loaded at interpreter start, so sys.modules
  cannot tell whether covey's own code uses them.
* So the source of every covey module the engine loads (itself, the spec
  compiler, errors) is read, and any import of a clock, randomness or IO module
  there fails the test.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

#: covey packages the engine must never load.
FORBIDDEN_LAYERS = ("covey.store", "covey.runtime", "covey.bus", "covey.worker")
#: Modules whose import in engine code means a clock, randomness or IO.
FORBIDDEN_IMPORTS = frozenset({"asyncio", "time", "random", "uuid", "sqlite3", "socket", "threading"})

# ``covey/__init__.py`` is the public facade and re-exports the runtime, so the
# probe installs a bare package object for ``covey`` and measures what the
# engine itself pulls in.
PROBE = """
import importlib.util, json, sys, types
found = importlib.util.find_spec("covey")
facade = types.ModuleType("covey")
facade.__path__ = list(found.submodule_search_locations)
sys.modules["covey"] = facade
before = set(sys.modules)
import covey.engine.decide, covey.engine.replay
loaded = sorted(set(sys.modules) - before)
files = {n: sys.modules[n].__file__ for n in loaded if n.startswith("covey.")}
print(json.dumps({"loaded": loaded, "files": files}))
"""


@pytest.fixture(scope="module")
def probe() -> dict[str, dict[str, str] | list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, dict[str, str] | list[str]] = json.loads(done.stdout)
    return result


def forbidden_imports(source: str) -> list[str]:
    """The forbidden modules ``source`` imports, at any depth of its syntax tree."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [
            name
            for name in names
            if name.split(".")[0] in FORBIDDEN_IMPORTS
            or any(name == layer or name.startswith(layer + ".") for layer in FORBIDDEN_LAYERS)
        ]
    return found


def test_engine_loads_no_io_layer(probe: dict[str, dict[str, str] | list[str]]) -> None:
    loaded = probe["loaded"]
    assert "covey.engine.decide" in loaded
    bad = [name for name in loaded if any(name == x or name.startswith(x + ".") for x in FORBIDDEN_LAYERS)]
    assert bad == []


def test_engine_code_imports_no_clock_randomness_or_io(probe: dict[str, dict[str, str] | list[str]]) -> None:
    files = probe["files"]
    assert isinstance(files, dict)
    engine_dir = Path(files["covey.engine.decide"]).parent
    paths = {Path(path) for path in files.values()} | set(engine_dir.glob("*.py"))
    assert {p.name for p in paths} >= {"decide.py", "graph.py", "replay.py", "compile.py", "expr.py"}
    offenders = {
        str(path): bad
        for path in sorted(paths)
        if (bad := forbidden_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


@pytest.mark.parametrize(
    "source",
    [
        "import time",
        "import os, random",
        "from uuid import uuid4",
        "import asyncio.events as ev",
        "def f():\n    import sqlite3\n",
        "from covey.store.base import Store",
        "import covey.runtime.loop",
        "if False:\n    from covey.worker import worker\n",
    ],
)
def test_the_check_catches_a_forbidden_import(source: str) -> None:
    assert forbidden_imports(source) != []


def test_the_check_allows_what_the_engine_needs() -> None:
    source = "import zlib\nfrom covey.engine import graph\nfrom covey.spec.compile import compile_workflow\n"
    assert forbidden_imports(source) == []
