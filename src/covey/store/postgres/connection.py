"""The PostgreSQL store's connections: an asyncpg pool, its schema, its transactions and its errors.

Design notes:

* Isolation is ``READ COMMITTED`` with explicit row locks: a commit locks the
  rows of the runs it writes (``FOR UPDATE``) and the shards it needs
  (``FOR SHARE``); claims take rows with ``FOR UPDATE SKIP LOCKED``. Serializable
  isolation was rejected: it would abort whole group commits on read/write
  overlaps that the row locks already make harmless.
* The store's clock is the database server's: every time is :data:`NOW_MS`,
  evaluated in SQL, and every deadline is computed from it in the statement
  that stores it. No worker's or engine's clock is ever written.
* Every table lives in one schema, reached through ``search_path``; nothing is
  created anywhere else.
* Errors are translated here, at the boundary (STYLE 4.2): nothing above the
  store sees an asyncpg exception. A transaction that the server rolled back
  (a deadlock, or a connection lost before ``COMMIT`` was sent) is retried,
  since it wrote nothing; a connection lost while ``COMMIT`` was in flight
  leaves the outcome unknown, so only idempotent calls are retried then.
  The pool drops a broken connection and opens a new one for the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]

from covey.errors import BackendError, BackendUnavailable, ConfigError, CoveyError, InputError
from covey.store.postgres import schema as schema_module

__all__ = ["NOW_MS", "Conn", "Database", "check_schema_name", "describe"]

T = TypeVar("T")

#: The store's clock in SQL: the server's time of the current statement, in ms since the epoch.
NOW_MS = "floor(extract(epoch FROM statement_timestamp()) * 1000)::bigint"

#: How many times a call is tried when the server rolled it back or its connection broke.
ATTEMPTS = 4
#: How long closing the store waits for calls in flight before cutting their connections, in seconds.
CLOSE_TIMEOUT_S = 10.0

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# Errors that mean the connection (or the server) is gone, not that the statement was wrong.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 terminated by an administrator, shutdown
    asyncpg.exceptions.CannotConnectNowError,
)


# Everything the driver raises; anything else (a bug, a CoveyError of the work itself) passes through.
_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    *_CONNECTION_ERRORS,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
_CLOSE_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *_DRIVER_ERRORS)

# An argument the driver refused to send (an integer out of range...): the caller's value, not the server.
_CLIENT_DATA_ERROR: type[BaseException] = asyncpg.exceptions._base.DataError


class Conn(Protocol):
    """The part of an asyncpg connection the store uses (asyncpg ships no type information)."""

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        """Rows of a query."""
        ...

    async def fetchrow(self, query: str, *args: Any) -> Any:
        """The first row of a query, or None."""
        ...

    async def fetchval(self, query: str, *args: Any) -> Any:
        """The first column of the first row, or None."""
        ...

    async def execute(self, query: str, *args: Any) -> str:
        """Run a statement (several, without arguments); its status tag."""
        ...

    def transaction(self) -> Any:
        """A transaction object (``start``, ``commit``, ``rollback``)."""
        ...

    def is_closed(self) -> bool:
        """True once the connection is gone."""
        ...

    def terminate(self) -> None:
        """Close the connection at once, without waiting for what is in flight."""
        ...


Work = Callable[[Conn], Awaitable[T]]


def check_schema_name(name: str) -> str:
    """``name`` if it is a plain PostgreSQL identifier; ConfigError otherwise."""
    if not isinstance(name, str) or not _SCHEMA_NAME.fullmatch(name):
        raise ConfigError(
            f"{name!r} is not a valid schema name: use 1-63 of A-Z a-z 0-9 _, not starting with a digit"
        )
    return name


def describe(url: str, schema: str) -> str:
    """Where the store is, for messages: ``postgresql://user@host:port/db`` and the schema, never a password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
    except ValueError:
        return f"(an unreadable URL), schema {schema!r}"
    return f"postgresql://{user}{host}{port}{parts.path}, schema {schema!r}"


async def _keep_session(conn: Any) -> None:
    """Give a connection back to the pool as it is (the driver still rolls back an open transaction).

    The store sets no session state (no SET, LISTEN, cursor or session-level
    advisory lock), so the driver's default reset would only cost every call
    one more round trip.
    """


def _gone(conn: Conn) -> bool:
    """True when the connection is closed; the pool detaches a lost one from its proxy at once."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:  # "released back to the pool": it was closed under us
        return True


class _Failed(Exception):
    """A try that failed, and whether trying again is safe."""

    def __init__(self, error: CoveyError, *, retry: bool, backoff: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry = retry
        self.backoff = backoff


class Database:
    """One pool of connections to one schema; runs the store's work with retries and translated errors."""

    def __init__(self, url: str, *, schema: str, pool_size: int) -> None:
        if pool_size < 1:
            raise ConfigError(f"pool_size must be at least 1, got {pool_size}")
        self.url = url
        self.schema = check_schema_name(schema)
        self.pool_size = pool_size
        self.where = describe(url, schema)
        self.application_name = f"covey/{schema}"
        """What ``pg_stat_activity`` shows for this store's connections."""
        self._pool: Any = None

    async def open(self) -> None:
        """Connect, create the schema if it is missing and bring it up to date."""
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                server_settings={
                    "search_path": f'"{self.schema}"',
                    "synchronous_commit": "on",
                    "application_name": self.application_name,
                },
                reset=_keep_session,
            )
        except ValueError as exc:  # a malformed URL or option
            raise ConfigError(f"bad PostgreSQL URL for {self.where}: {exc}") from None
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise BackendUnavailable(f"cannot connect to PostgreSQL at {self.where}: {exc}") from None
        try:
            await self.run(self._migrate, transaction=True)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close every connection, waiting up to :data:`CLOSE_TIMEOUT_S` for calls in flight to end."""
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await pool.close()
            except _CLOSE_ERRORS:  # a hung call, or the server went away: cut them off
                pool.terminate()

    # -- migrations --------------------------------------------------------------------

    async def _migrate(self, conn: Conn) -> None:
        """Create the schema if missing and run the migrations it lacks, one starter at a time."""
        # Concurrent starters queue here; "IF NOT EXISTS" alone still races on the catalog.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('covey.migrate'), hashtext($1))", self.schema
        )
        exists = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", self.schema)
        if not exists:  # an existing schema needs no CREATE privilege on the database
            await conn.execute(f'CREATE SCHEMA "{self.schema}"')
        version = await self._version(conn)
        migrations = schema_module.MIGRATIONS
        if version > len(migrations):
            raise CoveyError(
                f"PostgreSQL {self.where} has schema version {version}, newer than this covey knows "
                f"({len(migrations)}); upgrade covey to open it"
            )
        for number, script in enumerate(migrations[version:], start=version + 1):
            await conn.execute(script)
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', $1)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                number,
            )

    async def _version(self, conn: Conn) -> int:
        table = await conn.fetchval("SELECT to_regclass(format('%I.meta', $1::text))", self.schema)
        if table is None:
            return 0
        value = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
        return 0 if value is None else int(value)

    # -- running work ------------------------------------------------------------------

    async def run(self, work: Work[T], *, transaction: bool = False, idempotent: bool = True) -> T:
        """Run ``work`` on a pooled connection, in a transaction if asked.

        Tried again, up to :data:`ATTEMPTS` times, when it certainly wrote
        nothing (the server rolled it back, or the connection broke before
        ``COMMIT``), and also when its outcome is unknown if ``idempotent``.

        Raises:
            BackendUnavailable: the server cannot be reached, or the
                connection broke and trying again was not safe.
            BackendError: the server refused the work.
            InputError: the server refused a value (text with a NUL character...).
        """
        attempt = 1
        while True:
            try:
                return await self._attempt(work, transaction=transaction, idempotent=idempotent)
            except _Failed as failed:
                if not failed.retry or attempt >= ATTEMPTS:
                    raise failed.error from None
                if failed.backoff:
                    await asyncio.sleep(random.uniform(0, 0.002 * attempt))
                attempt += 1

    async def _attempt(self, work: Work[T], *, transaction: bool, idempotent: bool) -> T:
        pool = self._pool
        if pool is None:
            raise BackendError(
                f"PostgreSQL {self.where}: the store is not open; use 'async with PostgresStore(...)'"
            )
        try:
            proxy = await pool.acquire()
        except _DRIVER_ERRORS as exc:
            raise self._failure(exc, "connect", idempotent=idempotent) from None
        conn = cast(Conn, proxy)
        stage = "statement"
        settled = True  # False while a transaction of ours is open or its end is unknown
        try:
            if not transaction:
                return await work(conn)
            stage = "begin"
            settled = False
            tx = conn.transaction()
            await tx.start()
            stage = "work"
            try:
                result = await work(conn)
            except BaseException:
                if not _gone(conn):
                    with contextlib.suppress(Exception):
                        await tx.rollback()
                        settled = True
                raise
            stage = "commit"
            await tx.commit()
            settled = True
            return result
        except _DRIVER_ERRORS as exc:
            raise self._failure(exc, stage, idempotent=idempotent) from None
        finally:
            if not settled and not _gone(conn):
                # Interrupted inside its transaction (a cancellation at shutdown, mid BEGIN or COMMIT): the
                # connection is dropped, and the server rolls back whatever it left open. Handed back as it
                # is, the pool's reset would roll it back too, but would log an error about it first.
                conn.terminate()
            # A connection that fails to reset is terminated by the pool, which opens a new one later.
            with contextlib.suppress(Exception):
                await pool.release(proxy)

    def _failure(self, exc: BaseException, stage: str, *, idempotent: bool) -> _Failed:
        """What a failed try means: the error to raise, and whether another try is safe."""
        if isinstance(exc, asyncpg.exceptions.TransactionRollbackError):  # deadlock, serialization
            return _Failed(
                BackendError(f"PostgreSQL {self.where}: {exc}"), retry=stage != "commit", backoff=True
            )
        # A connection that got the server's FATAL but is not closed yet raises the driver's own errors
        # ("cannot switch to state ...; another operation is in progress"): a lost connection too.
        if isinstance(
            exc, (*_CONNECTION_ERRORS, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)
        ):
            if stage in ("connect", "begin", "work"):
                # Nothing was sent, or the server rolled the open transaction back when the connection died.
                return _Failed(BackendUnavailable(f"PostgreSQL {self.where}: {exc}"), retry=True)
            what = "committing" if stage == "commit" else "running a statement"
            return _Failed(
                BackendUnavailable(
                    f"PostgreSQL {self.where}: the connection broke while {what}, so the outcome is unknown: {exc}"
                ),
                retry=idempotent,
            )
        if isinstance(exc, asyncpg.DataError | _CLIENT_DATA_ERROR):
            return _Failed(InputError(f"PostgreSQL refused a value: {exc}"), retry=False)
        return _Failed(BackendError(f"PostgreSQL {self.where}: {exc}"), retry=False)
