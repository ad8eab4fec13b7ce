"""Running `SQLStore` transactions on Postgres: pooled connections, retries through outages,
re-reads when a commit's outcome is unknown, and ``LISTEN``/``NOTIFY`` wake-ups.

Driver: psycopg 3, synchronous, each transaction in a worker thread (`anyio.to_thread`). The same
code then serves asyncio and trio alike (psycopg's async connections are asyncio-only), the C
implementation (``psycopg[binary]``) parses results. The price is a thread hop per transaction
(tens of microseconds on a busy machine, against the ~300 a Postgres commit takes); with the
pool checkout it is most of what a step costs above the raw commit (`benchmarks/RESULTS.md`).

Transient failures (the server restarting, a dropped connection, too many connections, a
deadlock) are retried with backoff for up to ``reconnect_timeout`` seconds. A failure before the
commit was sent is simply retried: the server rolled the transaction back. A connection that breaks
*during* the commit leaves the outcome unknown; then the caller's ``verify`` re-reads what the
transaction would have written and decides (applied: return what it returns; not applied: run it
again), so nothing is lost or written twice. Calls without ``verify`` are idempotent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from durable.store import StoreError

__all__ = ["NOT_APPLIED", "PostgresRunner"]

log = logging.getLogger("durable.store")

_T = TypeVar("_T")


class _NotApplied:
    def __repr__(self) -> str:
        return "NOT_APPLIED"


NOT_APPLIED: Final = _NotApplied()
"""What a ``verify`` function returns when the transaction it checks did not commit."""

_FIRST_DELAY = 0.05
_MAX_DELAY = 1.0


class _CommitUnknown(Exception):
    """Internal: the connection broke while the commit was in flight."""


class PostgresRunner:
    """Runs ``fn(cursor, *args)`` transactions on a pooled connection, through outages.

    Args:
        engine: the SQLAlchemy engine (its pool holds the connections).
        url: the URL for messages (password masked).
        reconnect_timeout: how long a call keeps retrying transient failures.
        channel: the ``NOTIFY`` channel of this database schema.
    """

    def __init__(self, engine: Engine, url: str, reconnect_timeout: float, channel: str) -> None:
        self._engine = engine
        self._url = url
        self._reconnect_timeout = reconnect_timeout
        self.channel = channel
        dbapi = engine.dialect.loaded_dbapi
        self._error: type[Exception] = dbapi.Error
        self._transient: tuple[type[Exception], ...] = (
            dbapi.OperationalError,
            sa.exc.OperationalError,
        )
        self._listen_lock = threading.Lock()
        self._listener: Any = None
        self._closed = False

    # -- transactions ---------------------------------------------------------------------------

    def run(
        self,
        fn: Callable[..., _T],
        args: tuple[Any, ...],
        *,
        verify: Callable[[Any], Any] | None = None,
        notify: bool = False,
        single: bool = False,
    ) -> _T:
        """Run ``fn(cursor, *args)`` in one transaction (plus a ``NOTIFY`` if ``notify``),
        retrying transient failures; see the module docstring for ``verify``. ``single``:
        ``fn`` runs one statement (atomic by itself), so it runs in autocommit mode: one round
        trip instead of three (``BEGIN``, the statement, ``COMMIT``).

        Raises:
            StoreError: the database stayed unreachable for ``reconnect_timeout`` seconds.
            Exception: whatever ``fn`` raises (the transaction is rolled back).
        """
        deadline = time.monotonic() + self._reconnect_timeout
        delay = _FIRST_DELAY
        unknown = False
        while True:
            try:
                if unknown and verify is not None:
                    found = self._transaction(verify, (), notify=False)
                    unknown = False
                    if found is not NOT_APPLIED:
                        return found  # type: ignore[no-any-return]
                return self._transaction(fn, args, notify=notify, single=single and not notify)
            except _CommitUnknown as exc:
                unknown, error = True, exc.__cause__
            except self._transient as exc:
                error = exc
            if self._closed or time.monotonic() + delay > deadline:
                raise StoreError(
                    f"the durable store {self._url!r} failed: {_reason(error)}; the database "
                    f"stayed unreachable for {self._reconnect_timeout:g} s (reconnect_timeout)"
                ) from error
            log.warning(
                "durable store %s: %s; retrying in %.2f s", self._url, _reason(error), delay
            )
            time.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    def _transaction(
        self, fn: Callable[..., _T], args: tuple[Any, ...], *, notify: bool, single: bool = False
    ) -> _T:
        try:
            conn = self._engine.raw_connection()
        except sa.exc.TimeoutError as exc:
            raise StoreError(
                f"the durable store {self._url!r} has no free connection: every pooled "
                "connection stayed busy for pool_timeout; raise SQLStore(pool_size=...) or lower "
                "the worker's concurrency"
            ) from exc
        try:
            if single:
                return self._autocommit(conn, fn, args)
            cur = conn.cursor()
            try:
                result = fn(cur, *args)
                if notify:
                    cur.execute("SELECT pg_notify(%s, '')", (self.channel,))
            except BaseException:
                self._end(conn)
                raise
            try:
                conn.commit()
            except self._error as exc:
                if self._broken(conn):
                    self._end(conn)
                    raise _CommitUnknown() from exc
                raise
            return result
        finally:
            conn.close()

    def _autocommit(self, conn: Any, fn: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        """Run a one-statement ``fn`` in autocommit mode; a connection that breaks while it
        runs leaves its outcome unknown, exactly like a broken ``COMMIT``."""
        raw = conn.dbapi_connection
        raw.autocommit = True
        try:
            return fn(conn.cursor(), *args)
        except self._error as exc:
            if self._broken(conn):
                self._end(conn)
                raise _CommitUnknown() from exc
            raise
        finally:
            if not self._broken(conn):
                raw.autocommit = False

    def _end(self, conn: Any) -> None:
        """Roll back after a failure; a broken connection is dropped, with the idle ones
        (after a server restart they are all dead)."""
        if self._broken(conn):
            conn.invalidate()
            self._engine.pool.dispose()
            return
        try:
            conn.rollback()
        except self._error:
            conn.invalidate()

    @staticmethod
    def _broken(conn: Any) -> bool:
        raw = conn.dbapi_connection
        return raw is None or bool(raw.closed) or bool(getattr(raw, "broken", False))

    # -- notifications --------------------------------------------------------------------------

    def listen(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a ``NOTIFY`` on the channel (one sent while
        nobody waited is still delivered by the next call). If the listening connection cannot
        be opened, it just waits: the caller's claim poll is the fallback.

        Returns:
            Whether a notification arrived.
        """
        end = time.monotonic() + timeout
        with self._listen_lock:
            try:
                listener = self._listener or self._open_listener()
                for _ in listener.notifies(timeout=max(0.0, end - time.monotonic()), stop_after=1):
                    return True
                return False
            except self._error as exc:
                log.warning("durable store %s: listening failed: %s", self._url, _reason(exc))
                self._close_listener()
        time.sleep(max(0.0, end - time.monotonic()))
        return False

    def _open_listener(self) -> Any:
        fairy = self._engine.raw_connection()
        fairy.detach()  # a connection of its own, never back in the pool
        listener = fairy.dbapi_connection
        assert listener is not None
        listener.rollback()
        listener.autocommit = True
        listener.execute(f'LISTEN "{self.channel}"')
        self._listener = listener
        return listener

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.close()
            except self._error:
                pass

    def close(self) -> None:
        """Stop retrying and close the listening connection (waits for a `listen` in
        progress, at most its timeout)."""
        self._closed = True
        with self._listen_lock:
            self._close_listener()


def _reason(exc: BaseException | None) -> str:
    return str(getattr(exc, "orig", None) or exc).strip()
