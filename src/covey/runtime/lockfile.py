"""The embedded store's writer lock: one runner per database file.

SQLite serializes writers with sleeps measured in hundreds of milliseconds
under contention, so covey allows one writing process per file. The runner
holds an exclusive ``flock`` on ``<db>.lock`` for its whole life and writes its
socket path there; other processes find the runner through it, and open the
database for writing only when nobody holds the lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

import orjson

from covey.errors import StoreLocked

__all__ = ["RunnerLock", "find_runner_socket", "socket_path_for"]

_MAX_SOCKET_PATH = 100


def socket_path_for(db_path: Path) -> Path:
    """Where the runner of ``db_path`` listens: beside the file, or in the temp dir if that path is too long."""
    beside = db_path.with_name(db_path.name + ".sock")
    if len(str(beside)) <= _MAX_SOCKET_PATH:
        return beside
    digest = hashlib.sha256(str(db_path.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"covey-{digest}.sock"


class RunnerLock:
    """An exclusive, non-blocking lock on ``<db>.lock``; released when the process dies."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise StoreLocked naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(f"another covey runner is using {self.path.with_suffix('')}") from None
        os.ftruncate(fd, 0)
        os.write(fd, orjson.dumps({"pid": os.getpid()}))
        self._fd = fd

    def announce(self, socket_path: Path) -> None:
        """Publish the socket path, once the runner listens on it."""
        assert self._fd is not None, "acquire the lock first"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, orjson.dumps({"pid": os.getpid(), "socket": str(socket_path)}), 0)

    def release(self) -> None:
        """Let go of the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def find_runner_socket(db_path: Path) -> Path | None:
    """The socket of the runner holding ``db_path``'s lock, or None if no runner holds it."""
    lock = db_path.with_name(db_path.name + ".lock")
    if not lock.exists():
        return None
    fd = os.open(lock, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            data = os.read(fd, 4096)
            socket = orjson.loads(data).get("socket") if data else None
            return Path(socket) if socket else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
