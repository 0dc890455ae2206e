"""Agents: named callables with skills, labels and a concurrency limit.

``@agent`` turns a sync or async function into an :class:`AgentDef` and
records it in a registry, so a worker can be pointed at a module ("serve every
agent defined in ``myapp.agents``") and find them by skill. The engine never
calls agents (invariant 6): only workers do.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from covey.errors import ConfigError

__all__ = ["AgentDef", "AgentFn", "Registry", "agent", "default_registry"]

AgentFn = Callable[..., Any] | Callable[..., Awaitable[Any]]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,199}$")


@dataclass(frozen=True, slots=True)
class AgentDef:
    """An agent: a callable, the skills it serves, its labels and concurrency."""

    name: str
    fn: AgentFn = field(repr=False)
    skills: frozenset[str]
    labels: Mapping[str, str]
    concurrency: int
    is_async: bool
    wants_context: bool
    """True when the function takes a second parameter, the :class:`~covey.Context`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly, as plain Python (handy in tests)."""
        return self.fn(*args, **kwargs)


class Registry:
    """Agents by name, found by skill or name. Workers serve a registry."""

    def __init__(self, agents: Iterable[AgentDef] = ()) -> None:
        self._agents: dict[str, AgentDef] = {}
        for item in agents:
            self.add(item)

    def add(self, item: AgentDef) -> None:
        """Register an agent; a second agent with the same name replaces the first."""
        self._agents[item.name] = item

    def __iter__(self) -> Any:
        return iter(self._agents.values())

    def __len__(self) -> int:
        return len(self._agents)

    @property
    def skills(self) -> frozenset[str]:
        """Every skill some agent here serves."""
        return frozenset(skill for item in self._agents.values() for skill in item.skills)

    @property
    def names(self) -> frozenset[str]:
        """Every agent name."""
        return frozenset(self._agents)

    def get(self, name: str) -> AgentDef | None:
        """The agent of that name, if any."""
        return self._agents.get(name)

    def for_skill(self, skill: str) -> AgentDef | None:
        """The first agent serving ``skill``, if any."""
        for item in self._agents.values():
            if skill in item.skills:
                return item
        return None


#: Agents defined with ``@agent`` land here unless another registry is given.
default_registry = Registry()


@overload
def agent(fn: AgentFn, /) -> AgentDef: ...


@overload
def agent(
    *,
    name: str | None = None,
    skills: Iterable[str] | None = None,
    labels: Mapping[str, str] | None = None,
    concurrency: int = 1,
    registry: Registry | None = None,
) -> Callable[[AgentFn], AgentDef]: ...


def agent(
    fn: AgentFn | None = None,
    /,
    *,
    name: str | None = None,
    skills: Iterable[str] | None = None,
    labels: Mapping[str, str] | None = None,
    concurrency: int = 1,
    registry: Registry | None = None,
) -> AgentDef | Callable[[AgentFn], AgentDef]:
    """Declare an agent.

    The function takes the task's input (a JSON value) and, optionally, a
    :class:`~covey.Context` as second parameter; it returns a JSON value, or a
    :class:`~covey.Handoff` to add steps to the run. Sync functions run in
    threads, async ones on the worker's event loop.

    Args:
        name: the agent's name (default: the function's name).
        skills: the kinds of work it can do (default: its name).
        labels: what it offers (``{"gpu": "true"}``); steps may require labels.
        concurrency: tasks this agent runs at once in one worker.
        registry: where to record it (default: :data:`default_registry`).
    """

    def wrap(func: AgentFn) -> AgentDef:
        agent_name = name or func.__name__
        if not _NAME.match(agent_name):
            raise ConfigError(f"agent name {agent_name!r} must match {_NAME.pattern}")
        skill_set = frozenset(skills) if skills is not None else frozenset({agent_name})
        if not skill_set:
            raise ConfigError(f"agent {agent_name!r} must serve at least one skill")
        if concurrency < 1:
            raise ConfigError(f"agent {agent_name!r}: concurrency must be >= 1, got {concurrency}")
        params = [
            p
            for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        definition = AgentDef(
            name=agent_name,
            fn=func,
            skills=skill_set,
            labels=dict(labels or {}),
            concurrency=concurrency,
            is_async=inspect.iscoroutinefunction(func),
            wants_context=len(params) >= 2,
        )
        (registry if registry is not None else default_registry).add(definition)
        return definition

    return wrap(fn) if fn is not None else wrap
