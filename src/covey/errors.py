"""covey's exceptions: every error a user can cause is one of these.

* CoveyError                 base of everything covey raises on purpose
  + ConfigError              bad settings, URL or command-line option
  + SpecError                invalid workflow spec; names the step and field
  + InputError               a payload fails a schema, size or depth limit; names the field
  + NotFound                 a run, task, agent or key does not exist
  + Conflict                 a version or sequence number did not match; callers may retry
  + CursorExpired            a watcher's cursor is older than its namespace's change feed keeps
  + StaleLease               a report from a superseded lease; recorded, changes nothing
  + TooBusy                  a submit refused: too many runs unfinished; retry after a pause
  + BackendError             the store or bus failed (driver errors are translated to this)
    - BackendUnavailable     the store or bus cannot be reached
    - StoreLocked            another runner owns this embedded store
  + AgentFailure             raised by or for an agent; carries ``retryable`` and ``kind``
    - Retry                  an agent asks to be tried again, optionally after a delay
  + RunFailed                waiting for a run that ended in failure or cancellation
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentFailure",
    "BackendError",
    "BackendUnavailable",
    "ConfigError",
    "Conflict",
    "CoveyError",
    "CursorExpired",
    "InputError",
    "NotFound",
    "Retry",
    "RunFailed",
    "SpecError",
    "StaleLease",
    "StoreLocked",
    "TooBusy",
    "VersionConflict",
]


class CoveyError(Exception):
    """Base class of every error covey raises on purpose."""


class ConfigError(CoveyError):
    """Bad settings, URL or command-line option."""


class SpecError(CoveyError):
    """A workflow spec is invalid.

    Attributes:
        step: the step at fault, or None when the fault is in the workflow itself.
        field: the field at fault (``when``, ``input.text``, ``retry.attempts``...).
        reason: what is wrong, in words.
    """

    def __init__(self, reason: str, *, step: str | None = None, field: str | None = None) -> None:
        self.step = step
        self.field = field
        self.reason = reason
        where = []
        if step is not None:
            where.append(f"step {step!r}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)


class InputError(CoveyError):
    """A payload fails a schema, a size limit or a depth limit.

    Attributes:
        field: the path of the offending value (``input.text``), or None for the whole payload.
    """

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class NotFound(CoveyError):
    """A run, task, agent or key does not exist."""


class Conflict(CoveyError):
    """A version or sequence number did not match the one expected."""


class VersionConflict(Conflict):
    """A conditional write to shared state found another version; ``version`` is the current one (0: absent)."""

    def __init__(self, namespace: str, key: str, expected: int, version: int) -> None:
        self.namespace = namespace
        self.key = key
        self.expected = expected
        self.version = version
        super().__init__(f"{namespace}/{key}: expected version {expected}, found {version}")


class CursorExpired(CoveyError):
    """A watcher's cursor is older than the oldest change its namespace's feed still keeps.

    Each namespace keeps its most recent changes (``Store.feed_keep``, 10,000
    by default), so a watcher away for longer than that cannot resume without
    a gap. It resyncs from a snapshot: list the namespace, then watch from
    ``head``, skipping a change whose version the snapshot already has for
    its key (every change up to ``head`` had committed before the listing
    began, so the listing holds them all, and nothing after is missed).

    Attributes:
        namespace: the namespace watched.
        after: the cursor that was asked for.
        oldest: the sequence number of the oldest change still kept.
        head: the namespace's last change when this was raised (None if not known:
            then resume from ``oldest - 1``, skipping by version).
    """

    def __init__(self, namespace: str, after: int, oldest: int, head: int | None = None) -> None:
        self.namespace = namespace
        self.after = after
        self.oldest = oldest
        self.head = head
        super().__init__(
            f"namespace {namespace!r}: the changes after {after} are no longer all kept (the oldest is "
            f"{oldest}); resync from a snapshot: list the namespace, then watch from "
            f"{oldest - 1 if head is None else head}"
        )


class TooBusy(CoveyError):
    """A submit was refused: the store holds as many unfinished runs as covey is set to accept.

    Admission control: a bounded backlog and a clear answer instead of a queue
    that grows until memory or disk runs out. Nothing was stored; submitting
    the same run again after ``retry_after_s`` is safe.

    Attributes:
        backlog: runs unfinished when the submit was refused (running, or waiting in the inbox).
        limit: the most covey accepts (``COVEY_MAX_BACKLOG``).
        retry_after_s: how long to wait before trying again.
    """

    def __init__(self, backlog: int, limit: int, retry_after_s: float) -> None:
        self.backlog = backlog
        self.limit = limit
        self.retry_after_s = retry_after_s
        super().__init__(
            f"covey is too busy: {backlog:,} unfinished run{'' if backlog == 1 else 's'}, and the limit "
            f"is {limit:,} (COVEY_MAX_BACKLOG); retry after {retry_after_s:g} s"
        )


class StaleLease(CoveyError):
    """A report came from a lease that is no longer the task's current one."""


class BackendError(CoveyError):
    """The store or the bus failed."""


class BackendUnavailable(BackendError):
    """The store or the bus cannot be reached."""


class StoreLocked(BackendError):
    """Another runner holds this embedded store's writer lock."""


class AgentFailure(CoveyError):
    """An agent failed.

    Raise it from an agent to control the retry policy: ``retryable=False`` ends
    the task at once; ``kind`` is matched against the step's ``retry.retry_on``
    and ``retry.no_retry_on`` lists.
    """

    def __init__(self, message: str, *, kind: str = "error", retryable: bool = True) -> None:
        self.kind = kind
        self.retryable = retryable
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        """The error as the JSON object a worker reports."""
        return {"kind": self.kind, "message": str(self), "retryable": self.retryable}


class Retry(AgentFailure):
    """An agent asks to be tried again, after ``after_s`` seconds if given."""

    def __init__(self, message: str = "retry requested", *, after_s: float | None = None) -> None:
        super().__init__(message, kind="retry", retryable=True)
        self.after_s = after_s


class RunFailed(CoveyError):
    """A run ended in failure or was cancelled; ``status`` and ``error`` say how."""

    def __init__(self, run_id: str, status: str, error: Any) -> None:
        self.run_id = run_id
        self.status = status
        self.error = error
        super().__init__(f"run {run_id} {status}: {error}")
