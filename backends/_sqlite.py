"""`SQLiteRunner`: runs `SQLStore`'s transactions on its one SQLite connection, through a
`SQLiteCursor`.

A write starts with ``BEGIN IMMEDIATE`` (the database's write lock) and a read is one
autocommit statement. A transaction runs on the calling thread under a lock, without
suspending: SQLite answers from the local file. Only waiting for another process's write lock
could take long, so SQLite waits for it at most `BUSY_SLICE_SECONDS` at a time; between tries
the event loop runs (other runs' steps, lease renewals), until ``busy_timeout`` in all.

Other processes' commits are seen through ``PRAGMA data_version``, which changes when another
connection commits: `wait` looks at it every `POLL_SECONDS` (one read shared by every waiting
task), and this process's own writes ring the doorbell at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio

from durable.store import StoreError

from ._group import GroupCommit, Grouped, fail_all, run_in_savepoint

__all__ = ["BUSY_SLICE_SECONDS", "POLL_SECONDS", "SQLiteCursor", "SQLiteRunner"]

_T = TypeVar("_T")

BUSY_SLICE_SECONDS = 0.05
"""How long SQLite itself waits for another process's write lock before the event loop runs."""

POLL_SECONDS = 0.05
"""How often a waiting task looks whether another process committed (``data_version``)."""


class SQLiteCursor:
    """The sqlite3 cursor with the awaitable `execute` the store's transactions call (they are
    shared with Postgres, whose statements do wait)."""

    __slots__ = ("_cur", "fetchall", "fetchone", "raw")

    def __init__(self, cur: Any) -> None:
        self._cur = self.raw = cur
        self.fetchone = cur.fetchone
        self.fetchall = cur.fetchall

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(sql, params)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cur.executemany(sql, rows)

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    def close(self) -> None:
        self._cur.close()


class SQLiteRunner:
    """Transactions on one SQLite connection (see the module docstring).

    Args:
        raw: the DB-API connection (autocommit: the runner sends ``BEGIN`` itself).
        cursor: the store's cursor on it (an awaitable ``execute``).
        power_safe: ``durability="power"`` (each commit waits for an fsync).
        busy_timeout: how long in all a write waits for another process's write lock.
        dbapi_error: the driver's base error class.
    """

    loses_replies = False  # SQLite answers from the local file
    relaxes_by_statement = False  # a relaxed commit is ``no_flush``

    def __init__(
        self,
        raw: Any,
        cursor: Any,
        *,
        power_safe: bool,
        busy_timeout: float,
        dbapi_error: type[Exception],
    ) -> None:
        """See the class docstring."""
        self._raw = raw
        self._cur = cursor
        self._power_safe = power_safe
        self._busy_timeout = busy_timeout
        self._dbapi_error = dbapi_error
        self._lock = threading.Lock()
        self._closed = False
        self._version = 0  # data_version as last read, and when
        self._version_read_at = -POLL_SECONDS
        self._group = GroupCommit(self._alone, self._flush)

    async def run(
        self,
        fn: Callable[..., Awaitable[_T]],
        args: tuple[Any, ...],
        *,
        write: bool,
        verify: Callable[[Any], Awaitable[Any]] | None = None,
        notify: str | None = None,
        single: bool = False,
        no_flush: bool = False,
        group: bool = False,
        pipelined: tuple[str, Sequence[Any]] | None = None,
    ) -> _T:
        """Run ``await fn(cursor, *args)``: a write in one ``BEGIN IMMEDIATE`` transaction (if
        another process holds the write lock, retried until ``busy_timeout`` while the event
        loop runs), a read as it is. ``no_flush`` (power-safe durability only): commit without
        waiting for an fsync (``synchronous=NORMAL`` for this transaction; the next full
        commit syncs it too). ``group``: the write may share its transaction with other
        runs' grouped writes made at the same moment (see `GroupCommit`). ``verify``,
        ``notify`` and ``single`` concern Postgres only: SQLite never loses a commit's reply,
        and the store rings this process's doorbell; so does ``pipelined``.
        """
        del verify, notify, single, pipelined
        if group and write:
            grouped: _T = await self._group.run(fn, args, no_flush and self._power_safe)
            return grouped
        return await self._alone(fn, args, no_flush and self._power_safe, write)

    async def _alone(
        self,
        fn: Callable[..., Awaitable[_T]],
        args: tuple[Any, ...],
        no_flush: bool,
        write: bool = True,
    ) -> _T:
        """One transaction of its own, waiting for another process's write lock."""
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.001
        while True:
            try:
                return await self._once(fn, args, write, no_flush)
            except self._dbapi_error as exc:
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    raise
            await anyio.sleep(delay)  # another process writes: let this loop's tasks run
            delay = min(delay * 2, BUSY_SLICE_SECONDS)

    async def _once(
        self, fn: Callable[..., Awaitable[_T]], args: tuple[Any, ...], write: bool, no_flush: bool
    ) -> _T:
        with self._lock:
            if self._closed:
                raise StoreError("this SQLite store is closed; open a new SQLStore")
            conn, cur = self._raw, self._cur
            if not write:
                return await fn(cur, *args)
            if no_flush:
                cur.raw.execute("PRAGMA synchronous = NORMAL")
            try:
                cur.raw.execute("BEGIN IMMEDIATE")
                try:
                    result = await fn(cur, *args)
                    conn.commit()  # may fail too (a full disk): then nothing is written
                except BaseException:
                    try:
                        if conn.in_transaction:
                            conn.rollback()
                    except self._dbapi_error:
                        pass  # the original error says more
                    raise
            finally:
                if no_flush:
                    cur.raw.execute("PRAGMA synchronous = FULL")
            return result

    async def _flush(self, batch: Sequence[Grouped]) -> None:
        """Write ``batch`` in one transaction (`GroupCommit`), waiting for another process's
        write lock as `run` does; a failure that is no request's own fails them all."""
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.001
        while True:
            try:
                await self._flush_once(batch)
                return
            except self._dbapi_error as exc:
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    fail_all(batch, exc)
                    return
            except Exception as exc:
                fail_all(batch, exc)
                return
            await anyio.sleep(delay)  # shielded by the group: a started batch finishes
            delay = min(delay * 2, BUSY_SLICE_SECONDS)

    async def _flush_once(self, batch: Sequence[Grouped]) -> None:
        with self._lock:
            if self._closed:
                raise StoreError("this SQLite store is closed; open a new SQLStore")
            conn, cur = self._raw, self._cur
            no_flush = all(request.relaxed for request in batch)
            if no_flush:
                cur.raw.execute("PRAGMA synchronous = NORMAL")
            try:
                cur.raw.execute("BEGIN IMMEDIATE")
                try:
                    for request in batch:
                        await run_in_savepoint(request, cur)
                    if conn.in_transaction:
                        conn.commit()  # may fail too (a full disk): then nothing is written
                except BaseException:
                    try:
                        if conn.in_transaction:
                            conn.rollback()
                    except self._dbapi_error:
                        pass  # the original error says more
                    raise
            finally:
                if no_flush:
                    cur.raw.execute("PRAGMA synchronous = FULL")

    async def wait(self, event: anyio.Event, within: float) -> bool:
        """Wait up to ``within`` seconds for ``event`` (a ring of the store's doorbell: a
        write of this process) or a commit by another process.

        Returns:
            Whether either happened.
        """
        deadline = time.monotonic() + within
        seen = await self.data_version()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return event.is_set()
            with anyio.move_on_after(min(left, POLL_SECONDS)):
                await event.wait()
            if event.is_set() or await self.data_version() != seen:
                return True

    async def data_version(self) -> int:
        """``PRAGMA data_version`` (changed by other connections' commits), read at most once
        per `POLL_SECONDS` however many tasks ask."""
        now = time.monotonic()
        if now - self._version_read_at >= POLL_SECONDS:
            self._version_read_at = now
            self._version = await self.run(_read_data_version, (), write=False)
        return self._version

    def close(self) -> None:
        """Close the cursor (the store closes the connection). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cur.close()


async def _read_data_version(cur: Any) -> int:
    await cur.execute("PRAGMA data_version")
    return int(cur.fetchone()[0])
