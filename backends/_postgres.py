"""Running `SQLStore` transactions on Postgres: a pool of libpq connections driven from the
event loop, retries through outages, re-reads when a commit's outcome is unknown, and
``LISTEN``/``NOTIFY`` wake-ups.

The connections, their cursor and the pool are `._pg_conn`'s (psycopg 3's libpq binding in
non-blocking mode, waited on with `anyio`: asyncio and trio alike, no thread).

Transient failures (the server restarting, a dropped connection, too many connections, a
deadlock or serialization failure) are retried with backoff for up to ``reconnect_timeout``
seconds. Every other error is permanent (a value too large, a constraint or data error, a full
disk): retrying would only repeat it, so it is raised at once (`SQLStore` words it). A failure
before the commit was sent is simply retried: the server rolled the transaction back. A
connection that breaks *during* the commit leaves the outcome unknown; then the caller's
``verify`` re-reads what the transaction would have written and decides (applied: return what
it returns; not applied: run it again), so nothing is lost or written twice. Calls without
``verify`` are idempotent.

Only the transaction itself is shielded from cancellation: once started it finishes (or
fails), so a connection never goes back to the pool in the middle of a query; waiting for a free
connection and the pauses between retries can be cancelled. Every query has a deadline
(`._pg_conn.QUERY_TIMEOUT`): a server that stops answering breaks the connection (and the call is
retried) instead of holding the task forever; TCP keepalives (which `SQLStore` adds to a URL
that sets none) find a dead peer even on an idle connection.

Grouped writes (`._group.GroupCommit`): the one-statement step writes of runs ready at the same
moment are sent together in libpq's pipeline mode, one transaction for the strict ones and one
for the relaxed ones (`PostgresRunner._pipeline`). A grouped call waits for its batch whatever
happens (shielded, waiting for the batch's connection included): others rely on its leader.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, TypeVar, cast

import anyio
import psycopg

from durable.store import PoolTimeout, StoreError

from ._doorbell import Doorbell
from ._group import GroupCommit, Grouped, fail_all
from ._pg_conn import QUERY_TIMEOUT, PgConnection, PgCursor, PgPool
from ._redact import redact, secrets_in
from ._verify import NOT_APPLIED

__all__ = ["NOT_APPLIED", "QUERY_TIMEOUT", "PgCursor", "PostgresRunner"]

log = logging.getLogger("durable.store")

_T = TypeVar("_T")


_FIRST_DELAY = 0.05
_MAX_DELAY = 1.0

# SQLSTATEs worth retrying besides class 08 (connection exceptions); an error without one
# means the connection failed, which is retried as well. Everything else is permanent.
_TRANSIENT_STATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "53300",  # too_many_connections
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up)
        "57P05",  # idle_session_timeout
    }
)


class _Piped(NamedTuple):
    """What a grouped call carries (`Grouped.args`): its own ``fn`` arguments and ``verify``,
    and the one statement ``fn`` runs, with its parameters, sent in the batch's pipeline."""

    args: tuple[Any, ...]
    verify: Callable[[Any], Awaitable[Any]]
    statement: tuple[str, Sequence[Any]]


def _piped(request: Grouped) -> _Piped:
    return cast(_Piped, request.args)


class _CommitUnknown(Exception):
    """Internal: the connection broke while the commit was in flight."""


class PostgresRunner:
    """Runs ``await fn(cursor, *args)`` transactions on pooled connections, through outages.

    Args:
        conninfo: the libpq connection string (a ``postgresql://`` URL).
        url: the URL for messages (password masked).
        pool_size: connections opened at once; up to twice as many are opened under load,
            and kept open once opened.
        reconnect_timeout: how long a call keeps retrying transient failures.
        channel: the ``NOTIFY`` channel of this database schema.
        prepared_statements: connections prepare the statements sent again (`PgConnection`).
    """

    loses_replies = True  # a connection can break while the commit is in flight
    relaxes_by_statement = True  # synchronous_commit off, in the statement's transaction

    def __init__(
        self,
        conninfo: str,
        url: str,
        pool_size: int,
        reconnect_timeout: float,
        channel: str,
        doorbell: Doorbell,
        prepared_statements: bool = True,
    ) -> None:
        # Connections opened under load are kept (up to the limit): closing the ones beyond
        # pool_size as soon as they were given back made a busy worker reconnect all the time
        # (a server process forked per connect, the connect itself on a worker thread), which
        # delayed lease renewals past short leases.
        self._pool = PgPool(conninfo, 2 * pool_size, 2 * pool_size, prepare=prepared_statements)
        self._url = url
        self._secrets = secrets_in(conninfo)
        self._reconnect_timeout = reconnect_timeout
        self.channel = channel
        self._notify_sql = "SELECT pg_notify($1, $2)"
        self._listener: PgConnection | None = None
        self._listening = False  # a task reads the listening connection
        self._doorbell = doorbell  # rung for each notification heard (payload: the run id)
        self._reader_left = Doorbell()  # the reading task stopped: another one takes over
        self._closed = False
        self._group = GroupCommit(self._grouped_alone, self._pipeline)

    # -- transactions ---------------------------------------------------------------------------

    async def run(
        self,
        fn: Callable[..., Awaitable[_T]],
        args: tuple[Any, ...],
        *,
        write: bool = True,
        verify: Callable[[Any], Awaitable[Any]] | None = None,
        notify: str | None = None,
        single: bool = False,
        no_flush: bool = False,
        group: bool = False,
        pipelined: tuple[str, Sequence[Any]] | None = None,
    ) -> _T:
        """Run ``fn(cursor, *args)`` in one transaction (plus a ``NOTIFY`` whose payload is
        ``notify``, the run written or ``""``, unless it is ``None``),
        retrying transient failures; see the module docstring for ``verify``. ``single``:
        ``fn`` runs one statement (atomic by itself), so no ``BEGIN``/``COMMIT`` is sent.
        ``group`` with ``pipelined`` (``fn``'s statement, when changing one row is all it
        does): the statement may share one transaction with other runs' made at the same
        moment (`_pipeline`). ``no_flush``: the statement itself says so (SQLite only);
        here it only keeps relaxed statements out of strict transactions.

        Raises:
            StoreError: the database stayed unreachable for ``reconnect_timeout`` seconds.
            Exception: whatever ``fn`` raises (the transaction is rolled back).
        """
        del write  # a read is a single statement (the store says so)
        single = single and notify is None
        if group and pipelined is not None and single and verify is not None:
            piped = _Piped(args, verify, pipelined)
            grouped: _T = await self._group.run(fn, piped, no_flush)
            return grouped
        return await self._run(fn, args, verify, notify, single)

    async def _run(
        self,
        fn: Callable[..., Awaitable[_T]],
        args: tuple[Any, ...],
        verify: Callable[[Any], Awaitable[Any]] | None,
        notify: str | None,
        single: bool,
        unknown: bool = False,
    ) -> _T:
        """`run`, one transaction of its own; ``unknown``: it may have been committed already
        (``verify`` says)."""
        deadline = anyio.current_time() + self._reconnect_timeout
        delay = _FIRST_DELAY
        while True:
            try:
                if unknown and verify is not None:
                    found = await self._transaction(verify, (), notify=None, single=False)
                    unknown = False
                    if found is not NOT_APPLIED:
                        return found  # type: ignore[no-any-return]
                return await self._transaction(fn, args, notify=notify, single=single)
            except _CommitUnknown as exc:
                unknown, error = True, exc.__cause__
            except psycopg.OperationalError as exc:
                if not _transient(exc):
                    raise  # retrying cannot help: the caller says what went wrong
                error = exc
            reason = redact(_reason(error), self._secrets)
            if self._closed or anyio.current_time() + delay > deadline:
                raise StoreError(
                    f"the durable store {self._url!r} failed: {reason}; the database "
                    f"stayed unreachable for {self._reconnect_timeout:g} s (reconnect_timeout)"
                ) from error
            log.warning("durable store %s: %s; retrying in %.2f s", self._url, reason, delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    async def _transaction(
        self,
        fn: Callable[..., Awaitable[_T]],
        args: tuple[Any, ...],
        *,
        notify: str | None,
        single: bool,
    ) -> _T:
        conn = await self._pool.take(self._url)  # waiting for a connection can be cancelled
        with anyio.CancelScope(shield=True):  # a started transaction finishes (or fails)
            result = await self._in_transaction(conn, fn, args, notify=notify, single=single)
        return result

    async def _in_transaction(
        self,
        conn: PgConnection,
        fn: Callable[..., Awaitable[_T]],
        args: tuple[Any, ...],
        *,
        notify: str | None,
        single: bool,
    ) -> _T:
        try:
            cur = PgCursor(conn)
            if single:  # the statement is its own commit: a break now leaves it unknown
                try:
                    return await fn(cur, *args)
                except psycopg.OperationalError as exc:
                    if conn.broken:
                        raise _CommitUnknown() from exc
                    raise
            await conn.query("BEGIN")
            try:
                result = await fn(cur, *args)
                if notify is not None:
                    await conn.query(self._notify_sql, (self.channel, notify))
            except BaseException:
                await self._rollback(conn)
                raise
            try:
                await self._commit(conn)
            except psycopg.Error as exc:
                if conn.broken:
                    raise _CommitUnknown() from exc
                raise
            return result
        except psycopg.OperationalError:
            if conn.broken:
                self._pool.drop_idle()  # a restart: the idle ones are dead as well
            raise
        finally:
            self._pool.give(conn)

    async def _commit(self, conn: PgConnection) -> None:
        """``COMMIT`` (a method of its own so tests can lose its reply)."""
        await conn.query("COMMIT")

    @staticmethod
    async def _rollback(conn: PgConnection) -> None:
        if conn.broken:
            return
        try:
            await conn.query("ROLLBACK")
        except psycopg.Error:
            conn.close()

    # -- grouped statements ---------------------------------------------------------------------

    async def _grouped_alone(
        self, fn: Callable[..., Awaitable[_T]], piped: tuple[Any, ...], relaxed: bool
    ) -> _T:
        args, verify, _ = cast(_Piped, piped)
        return await self._run(fn, args, verify, None, True)

    async def _pipeline(self, batch: Sequence[Grouped]) -> None:
        """Write a batch of grouped statements in shared transactions, sent at once (one for
        the strict statements, one for the relaxed ones: a relaxed statement turns the WAL
        flush off for its whole transaction). A statement that changed one row is done; one
        that changed none wrote nothing, and its call runs again alone, which says why (the
        lease was lost, a request stops the step). If a statement fails, its transaction wrote
        nothing, and each of its calls runs alone to get its own outcome; if the connection
        breaks, each call first re-reads whether its write was applied (``verify``)."""
        groups = [[r for r in batch if not r.relaxed], [r for r in batch if r.relaxed]]
        groups = [g for g in groups if g]
        outcomes: list[list[Any]] = [[] for _ in groups]  # none: each call runs alone
        unknown = False
        try:
            conn = await self._pool.take(self._url)
        except PoolTimeout as exc:  # every connection stayed busy: so would each call's
            fail_all(batch, exc)
            return
        except Exception:  # connecting failed: each call retries through the outage
            pass
        else:
            try:
                outcomes = await conn.pipeline([[_piped(r).statement for r in g] for g in groups])
            except psycopg.Error:  # a value it cannot send (nothing was), or a broken line
                unknown = conn.broken
                if conn.broken:
                    self._pool.drop_idle()  # a restart: the idle ones are dead as well
            finally:
                self._pool.give(conn)
        for group, results in zip(groups, outcomes, strict=True):
            committed = bool(results) and not any(isinstance(r, psycopg.Error) for r in results)
            for k, request in enumerate(group):
                if committed and results[k].command_tuples == 1:
                    continue  # written; ``fn`` returns None then
                piped = _piped(request)
                try:
                    request.result = await self._run(
                        request.fn, piped.args, piped.verify, None, True, unknown
                    )
                except Exception as exc:
                    request.error = exc

    # -- notifications --------------------------------------------------------------------------

    async def wait(self, event: anyio.Event, within: float) -> bool:
        """Wait up to ``within`` seconds for ``event`` (from the store's doorbell), which a
        write of this process or a ``NOTIFY`` from any process sets. One task at a time reads
        the listening connection and rings the doorbell for what it hears (the payload names
        the run written); when it leaves, a waiting task takes over. If the connection cannot
        be opened, this just waits: the caller's poll is the fallback.

        Returns:
            Whether ``event`` was set (or the reading task left, which makes callers look).
        """
        deadline = anyio.current_time() + within
        while not event.is_set():
            left = deadline - anyio.current_time()
            if left <= 0 or self._closed:
                return False
            if self._listening:  # another task reads: wait for the event, or for it to leave
                self._reader_left.add(event)
                try:
                    with anyio.move_on_after(left):
                        await event.wait()
                finally:
                    self._reader_left.forget(event)
                continue
            self._listening = True
            try:
                await self._read_notifications(event, left)
            finally:
                self._listening = False
                if self._closed:
                    self._close_listener()
                self._reader_left.ring()
        return True

    async def _read_notifications(self, event: anyio.Event, within: float) -> None:
        with anyio.move_on_after(within):
            try:
                listener = self._listener or await self._open_listener()
                while True:
                    for payload in listener.notifications():
                        self._doorbell.ring(payload or None)
                    if event.is_set():
                        return
                    await anyio.wait_readable(listener.socket)
            except psycopg.Error as exc:
                log.warning(
                    "durable store %s: listening failed: %s",
                    self._url,
                    redact(_reason(exc), self._secrets),
                )
                self._close_listener()
            await anyio.sleep(within)

    async def _open_listener(self) -> PgConnection:
        listener = await self._pool.connect()
        try:
            await listener.query(f'LISTEN "{self.channel}"')
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        return listener

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def close(self) -> None:
        """Stop retrying; close the idle connections and the listening one."""
        self._closed = self._pool.closed = True
        self._pool.drop_idle()
        if not self._listening:
            self._close_listener()


def _reason(exc: BaseException | None) -> str:
    return " ".join(str(getattr(exc, "orig", None) or exc).split())


def _transient(exc: psycopg.OperationalError) -> bool:
    """Whether retrying ``exc`` (on a new connection, after a pause) may succeed: the
    connection failed (no SQLSTATE: refused, dropped, lost), or the server said so (class 08,
    `_TRANSIENT_STATES`). A value too large (class 54), a full disk (53100), a cancelled
    statement and the like fail the same way every time."""
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _TRANSIENT_STATES
