"""Agents that use shared state, for the runtime tests (importable by worker processes)."""

from __future__ import annotations

from typing import Any

from covey import Context, CursorExpired, Registry, VersionConflict, agent
from covey.state.resync import StateSnapshot

registry = Registry()


@agent(skills=["count"], registry=registry)
def count(value: Any, ctx: Context) -> int:
    """Stage two writes, then fail on the first try: only the second try's writes may land."""
    ctx.state.update("n", "add", 1)
    ctx.state.update("tries", "append", ctx.try_no)
    ctx.state.put("last", {"by": ctx.task_id})
    if ctx.try_no == 1:
        raise RuntimeError("first try fails after staging")
    return ctx.try_no


@agent(skills=["show"], registry=registry)
def show(value: Any) -> Any:
    """Return what the input mapping read from state."""
    return value


@agent(skills=["claim_once"], registry=registry)
async def claim_once(value: Any, ctx: Context) -> dict[str, Any]:
    """Live compare-and-set: the first put of a key wins, the second sees the conflict."""
    first = await ctx.state.live.put("owner", ctx.task_id, if_version=0)
    try:
        await ctx.state.live.put("owner", "intruder", if_version=0)
    except VersionConflict as exc:
        return {
            "first_version": first.version,
            "conflict_version": exc.version,
            "owner": await ctx.state.get("owner"),
        }
    return {"first_version": first.version, "conflict_version": None}


@agent(skills=["set_flag"], registry=registry)
def set_flag(value: Any, ctx: Context) -> bool:
    """Stage the flag a later step's condition tests."""
    ctx.state.put("go", bool(value))
    return bool(value)


@agent(skills=["listen"], registry=registry, concurrency=50)
async def listen(value: Any, ctx: Context) -> list[int]:
    """Watch the broadcast namespace until a ``stop`` key appears; return the change numbers seen."""
    seen = []
    async for change in ctx.state.watch(namespace="bcast"):
        if change.key == "stop":
            return seen
        seen.append(change.seq)
    return seen


@agent(skills=["too_late"], registry=registry)
async def too_late(value: Any, ctx: Context) -> dict[str, int]:
    """Watch ``far`` from its start, which the feed no longer keeps: return what CursorExpired says."""
    try:
        async for _ in ctx.state.watch(namespace="far"):
            pass
    except CursorExpired as gone:
        return {"after": gone.after, "oldest": gone.oldest}
    return {}


@agent(skills=["resync"], registry=registry)
async def resync(value: Any, ctx: Context) -> dict[str, Any]:
    """Keep a view of ``far`` from its start, resyncing from a snapshot, until it holds ``stop``."""
    view: dict[str, Any] = {}
    snapshots = 0
    async for item in ctx.state.watch_resyncing(namespace="far"):
        if isinstance(item, StateSnapshot):
            snapshots += 1
            view = {entry.key: entry.value for entry in item.entries}
        elif item.deleted:
            view.pop(item.key, None)
        else:
            view[item.key] = item.value
        if "stop" in view:
            break
    return {"view": view, "snapshots": snapshots}


@agent(skills=["lister"], registry=registry)
async def lister(value: Any, ctx: Context) -> list[str]:
    """Write three keys live, then list them in two pages."""
    for key in ("p1", "p2", "p3"):
        await ctx.state.live.put(key, key)
    first = await ctx.state.list(prefix="p", limit=2)
    rest = await ctx.state.list(prefix="p", after=first[-1].key)
    return [entry.key for entry in first + rest]


agents = list(registry)
