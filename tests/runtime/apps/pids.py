"""Agents for process tests: each step's output says which worker process ran it."""

from __future__ import annotations

import os
from typing import Any

from covey import Registry, agent

registry = Registry()


@agent(skills=["pid_a"], concurrency=64, registry=registry)
async def pid_a(value: Any) -> int:
    return os.getpid()


@agent(skills=["pid_b"], concurrency=64, registry=registry)
async def pid_b(value: Any) -> dict[str, int]:
    return {"a": value, "b": os.getpid()}
