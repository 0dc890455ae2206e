"""The triage demo as covey loads it: ``workflow`` (the spec) and ``agents``.

Run it with ``covey run examples/triage/app.py``. This file works both as a
module (``examples.triage.app``) and when loaded from its path, in which case
its sibling ``agents.py`` is loaded from the same folder under a fixed module
name (so loading twice registers the agents once).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from covey.agents.registry import AgentDef

__all__ = ["WORKFLOW_YAML", "agents", "load_workflow", "workflow"]

HERE = Path(__file__).resolve().parent
WORKFLOW_YAML = HERE / "workflow.yaml"


def _load_agents_module() -> ModuleType:
    """The sibling ``agents`` module, imported relatively when this file is part of a package."""
    if __package__:
        return importlib.import_module(f"{__package__}.agents")
    name = "covey_examples_triage_agents"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "agents.py")
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships beside this one
        raise ImportError(f"cannot load {HERE / 'agents.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_workflow(path: Path = WORKFLOW_YAML) -> dict[str, Any]:
    """The workflow spec of a YAML file, as the JSON-shaped dict covey validates."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: expected a mapping at the top level")
    return data


_agents = _load_agents_module()

#: The workflow spec (from workflow.yaml).
workflow: dict[str, Any] = load_workflow()

#: The agents that serve its steps (AgentDef objects).
agents: list[AgentDef] = list(_agents.ALL_AGENTS)
