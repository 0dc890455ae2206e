"""Loading a user's app: a Python file or module holding agents (and maybe a workflow).

``covey run examples/triage/app.py`` and ``covey worker myapp.agents`` both
name an app. Its agents are the module's ``agents`` list if it has one, else
every :class:`AgentDef` among its globals; its workflow is ``workflow`` if
present. A file is imported under a private module name, so code behind
``if __name__ == "__main__":`` does not run again in worker processes.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from covey.agents.registry import AgentDef, Registry
from covey.errors import ConfigError

__all__ = ["App", "app_ref_for", "load_app"]


@dataclass(frozen=True, slots=True)
class App:
    """What an app offers: its reference (to start workers), agents and optional workflow."""

    ref: str
    registry: Registry
    workflow: Any


def load_app(ref: str) -> App:
    """Import ``ref`` (a ``.py`` path or a dotted module name) and collect its agents.

    Raises:
        ConfigError: the file or module does not exist or fails to import.
    """
    module = _import(ref)
    listed = getattr(module, "agents", None)
    if listed is not None:
        found = [item for item in listed if isinstance(item, AgentDef)]
    else:
        found = [value for value in vars(module).values() if isinstance(value, AgentDef)]
    return App(ref, Registry(found), getattr(module, "workflow", None))


def _import(ref: str) -> ModuleType:
    if ref.endswith(".py") or "/" in ref:
        path = Path(ref).resolve()
        if not path.is_file():
            raise ConfigError(f"no such app file: {ref}")
        name = "covey_app_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import {ref}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ConfigError(f"importing {ref} failed: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(ref)
    except ImportError as exc:
        raise ConfigError(f"cannot import app module {ref!r}: {exc}") from exc


def app_ref_for(agents: list[AgentDef]) -> str:
    """An app reference from which a worker process can import these agents.

    Raises:
        ConfigError: when the agents live in several modules or in one that
            cannot be imported again (an interactive session).
    """
    modules = {getattr(item.fn, "__module__", None) for item in agents}
    if len(modules) != 1:
        raise ConfigError(
            "worker processes need all agents in one module; pass app='module' or use in-process workers"
        )
    (name,) = modules
    module = sys.modules.get(name or "")
    if module is None:
        raise ConfigError(f"cannot find the module of agents {[a.name for a in agents]}")
    if name == "__main__" or (name or "").startswith("covey_app_"):
        path = getattr(module, "__file__", None)
        if not path:
            raise ConfigError(
                "agents defined interactively cannot run in worker processes; use in-process workers"
            )
        return str(path)
    return str(name)
