"""Running `SQLStore` transactions on Postgres: a pool of libpq connections driven from the
event loop, retries through outages, re-reads when a commit's outcome is unknown, and
``LISTEN``/``NOTIFY`` wake-ups.

Driver: psycopg 3's libpq binding (`psycopg.pq`, its C implementation with ``psycopg[binary]``),
in non-blocking mode: a query is sent, and the task waits for the socket with
`anyio.wait_readable`, so the same code runs under asyncio and trio and no thread is involved
(psycopg's async connections are asyncio-only, and running its blocking ones in a worker
thread cost ~180 µs per statement on the project's machine, more than half of what a Postgres
commit costs: `benchmarks/RESULTS.md`). Parameters are sent as text (``bytes`` as binary) and
results come back in binary, decoded by column type: the store's statements use only a few types.

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
(`QUERY_TIMEOUT`): a server that stops answering breaks the connection (and the call is
retried) instead of holding the task forever; TCP keepalives (which `SQLStore` adds to a URL
that sets none) find a dead peer even on an idle connection.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import psycopg
from psycopg import errors as pg_errors
from psycopg import pq

from durable.store import PoolTimeout, StoreError

from ._doorbell import Doorbell
from ._redact import redact, secrets_in
from ._verify import NOT_APPLIED

__all__ = ["NOT_APPLIED", "QUERY_TIMEOUT", "PgCursor", "PostgresRunner"]

log = logging.getLogger("durable.store")

_T = TypeVar("_T")


_FIRST_DELAY = 0.05
_MAX_DELAY = 1.0
_POOL_TIMEOUT = 60.0

QUERY_TIMEOUT = 30.0
"""The longest a query may wait for the server's reply; then the connection is given up as
broken (the call is retried like any dropped connection)."""


_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
_BINARY = pq.Format.BINARY
_TEXT = pq.Format.TEXT
_SQLSTATE = pq.DiagnosticField.SQLSTATE
_BYTES_LIKE = (bytes, bytearray, memoryview)  # sent in binary
_MAX_FIELD = 0x3FFFFFFF  # Postgres holds at most 1 GB in one field (and in one message)

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

_INT8 = struct.Struct(">q").unpack
_FLOAT8 = struct.Struct(">d").unpack
_FLOAT4 = struct.Struct(">f").unpack


def _int(value: bytes) -> int:
    return int.from_bytes(value, "big", signed=True)


_DECODERS: dict[int, Callable[[bytes], Any]] = {
    16: lambda v: v == b"\x01",  # bool
    17: bytes,  # bytea
    19: bytes.decode,  # name
    20: _int,  # int8
    21: _int,  # int2
    23: _int,  # int4
    25: bytes.decode,  # text
    700: lambda v: _FLOAT4(v)[0],  # float4
    701: lambda v: _FLOAT8(v)[0],  # float8
    1042: bytes.decode,  # bpchar
    1043: bytes.decode,  # varchar
}


def _param(value: Any) -> bytes | None:
    if value is None:
        return value
    if isinstance(value, bytes):
        if len(value) > _MAX_FIELD:  # the server would drop the connection: not an outage
            raise pg_errors.ProgramLimitExceeded(
                f"a value of {len(value):,} bytes is larger than the 1 GB a Postgres field holds"
            )
        return value
    if isinstance(value, str):
        try:
            return value.encode()
        except UnicodeEncodeError as exc:  # a lone surrogate: no database can store it
            raise pg_errors.CharacterNotInRepertoire(
                f"invalid text: {exc.object[exc.start : exc.end]!r} is not a character UTF-8 "
                "can encode"
            ) from None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"durable's Postgres store cannot send a {type(value).__name__} parameter")


class PgCursor:
    """The part of a DBAPI cursor the store's transactions use, over one connection; its
    `execute` is awaited. Results are read whole into memory (the store's queries are small)."""

    __slots__ = ("_conn", "_rows", "rowcount")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._rows: list[tuple[Any, ...]] = []
        self.rowcount = -1

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement with ``$n`` placeholders."""
        result = await self._conn.query(sql, params)
        self._rows = _rows(result)
        tuples = result.command_tuples
        self.rowcount = tuples if tuples is not None else -1

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement per parameter row; ``rowcount`` is their total."""
        total = 0
        for params in rows:
            await self.execute(sql, params)
            total += max(self.rowcount, 0)
        self.rowcount = total

    def fetchone(self) -> tuple[Any, ...] | None:
        """The next row of the last statement, or ``None``."""
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        """The remaining rows of the last statement."""
        rows, self._rows = self._rows, []
        return rows


def _rows(result: pq.abc.PGresult) -> list[tuple[Any, ...]]:
    ntuples = result.ntuples
    if not ntuples:
        return []
    nfields = result.nfields
    decoders = []
    for col in range(nfields):
        oid = result.ftype(col)
        try:
            decoders.append(_DECODERS[oid])
        except KeyError:
            name = (result.fname(col) or b"?").decode()
            raise StoreError(f"durable cannot read column {name!r} of type oid {oid}") from None
    get = result.get_value
    rows = []
    for row in range(ntuples):
        values = []
        for col in range(nfields):
            raw = get(row, col)
            values.append(None if raw is None else decoders[col](raw))
        rows.append(tuple(values))
    return rows


class _Connection:
    """One libpq connection in non-blocking mode; one task uses it at a time."""

    __slots__ = ("_pg",)

    def __init__(self, pgconn: pq.abc.PGconn) -> None:
        pgconn.nonblocking = 1
        self._pg = pgconn

    @property
    def broken(self) -> bool:
        return self._pg.status != pq.ConnStatus.OK  # a finished connection is BAD too

    @property
    def idle(self) -> bool:
        return self._pg.transaction_status == pq.TransactionStatus.IDLE

    def close(self) -> None:
        self._pg.finish()

    async def query(self, sql: str, params: Sequence[Any] = ()) -> pq.abc.PGresult:
        """Send one statement, wait for its result; raise psycopg's error for a failure."""
        pg = self._pg
        if params:
            values = [_param(v) for v in params]
            formats = [_BINARY if isinstance(v, _BYTES_LIKE) else _TEXT for v in params]
            pg.send_query_params(sql.encode(), values, None, formats, _BINARY)
        else:
            pg.send_query_params(sql.encode(), None, None, None, _BINARY)
        result = None
        with anyio.move_on_after(QUERY_TIMEOUT) as deadline:
            await self._flush()
            while True:
                while pg.is_busy():
                    await anyio.wait_readable(pg.socket)
                    pg.consume_input()
                got = pg.get_result()
                if got is None:
                    break
                result = got
        if deadline.cancelled_caught:
            pg.finish()  # the reply may still come: the connection cannot be reused
            raise psycopg.OperationalError(
                f"the server sent no reply within {QUERY_TIMEOUT:g} s (QUERY_TIMEOUT)"
            )
        if result is None or pg.status != pq.ConnStatus.OK:
            message = pg.get_error_message() or "the connection was lost"
            raise psycopg.OperationalError(message)
        if result.status not in _OK:
            raise _error(result)
        return result

    async def _flush(self) -> None:
        pg = self._pg
        while pg.flush():
            await anyio.wait_writable(pg.socket)

    def notifications(self) -> list[str]:
        """Read what arrived: the payloads of the notifications in it."""
        pg = self._pg
        pg.consume_input()
        payloads = []
        while (notice := pg.notifies()) is not None:
            payloads.append(notice.extra.decode())
        if pg.status != pq.ConnStatus.OK:
            raise psycopg.OperationalError(pg.get_error_message() or "the connection was lost")
        return payloads

    @property
    def socket(self) -> int:
        return self._pg.socket


def _error(result: pq.abc.PGresult) -> psycopg.Error:
    message = (result.error_message or b"").decode(errors="replace").strip()
    code = result.error_field(_SQLSTATE)
    try:
        cls = pg_errors.lookup(code.decode()) if code else psycopg.DatabaseError
    except KeyError:
        cls = psycopg.DatabaseError
    return cls(message)


class _CommitUnknown(Exception):
    """Internal: the connection broke while the commit was in flight."""


class _Pool:
    """Up to ``limit`` open connections, of which ``keep`` stay open when idle; callers wait
    (at most ``_POOL_TIMEOUT`` s) for one.

    Bookkeeping is guarded by a thread lock and waiters are woken through a `Doorbell`, so the
    pool holds nothing bound to one event loop (a store may outlive the loop that opened it)."""

    def __init__(self, conninfo: str, keep: int, limit: int) -> None:
        self._conninfo = conninfo.encode()
        self._keep = keep
        self._limit = limit
        self._idle: deque[_Connection] = deque()
        self._open = 0
        self._lock = threading.Lock()
        self._freed = Doorbell()
        self.closed = False  # then connections given back are closed, not kept

    async def connect(self) -> _Connection:
        """A new connection outside the pool (blocking libpq connect, in a worker thread)."""
        pgconn = await anyio.to_thread.run_sync(pq.PGconn.connect, self._conninfo)
        if pgconn.status != pq.ConnStatus.OK:
            message = (pgconn.get_error_message() or "cannot connect").strip()
            pgconn.finish()
            raise psycopg.OperationalError(message)
        return _Connection(pgconn)

    async def take(self, url: str) -> _Connection:
        deadline = anyio.current_time() + _POOL_TIMEOUT
        while True:
            with self._lock:
                if self._idle:
                    return self._idle.pop()
                opening = self._open < self._limit
                if opening:
                    self._open += 1
            if opening:
                try:
                    return await self.connect()
                except BaseException:
                    with self._lock:
                        self._open -= 1
                    raise
            left = deadline - anyio.current_time()
            if left <= 0:
                raise PoolTimeout(
                    f"the durable store {url!r} has no free connection: all {self._limit} "
                    f"stayed busy for {_POOL_TIMEOUT:g} s; raise SQLStore(pool_size=...) or "
                    "lower the worker's concurrency"
                )
            await self._freed.wait(left)

    def give(self, conn: _Connection) -> None:
        """Return a connection; a broken one, one left inside a transaction, or one beyond
        ``keep`` idle ones is closed."""
        with self._lock:
            kept = (
                not self.closed and not conn.broken and conn.idle and len(self._idle) < self._keep
            )
            if kept:
                self._idle.append(conn)
            else:
                self._open -= 1
        if not kept:
            conn.close()
        self._freed.ring()

    def drop_idle(self) -> None:
        """Close the idle connections (after a server restart they are all dead)."""
        with self._lock:
            idle, self._idle = list(self._idle), deque()
            self._open -= len(idle)
        for conn in idle:
            conn.close()


class PostgresRunner:
    """Runs ``await fn(cursor, *args)`` transactions on pooled connections, through outages.

    Args:
        conninfo: the libpq connection string (a ``postgresql://`` URL).
        url: the URL for messages (password masked).
        pool_size: connections opened at once; up to twice as many are opened under load,
            and kept open once opened.
        reconnect_timeout: how long a call keeps retrying transient failures.
        channel: the ``NOTIFY`` channel of this database schema.
    """

    def __init__(
        self,
        conninfo: str,
        url: str,
        pool_size: int,
        reconnect_timeout: float,
        channel: str,
        doorbell: Doorbell,
    ) -> None:
        # Connections opened under load are kept (up to the limit): closing the ones beyond
        # pool_size as soon as they were given back made a busy worker reconnect all the time
        # (a server process forked per connect, the connect itself on a worker thread), which
        # delayed lease renewals past short leases.
        self._pool = _Pool(conninfo, 2 * pool_size, 2 * pool_size)
        self._url = url
        self._secrets = secrets_in(conninfo)
        self._reconnect_timeout = reconnect_timeout
        self.channel = channel
        self._notify_sql = "SELECT pg_notify($1, $2)"
        self._listener: _Connection | None = None
        self._listening = False  # a task reads the listening connection
        self._doorbell = doorbell  # rung for each notification heard (payload: the run id)
        self._reader_left = Doorbell()  # the reading task stopped: another one takes over
        self._closed = False

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
    ) -> _T:
        """Run ``fn(cursor, *args)`` in one transaction (plus a ``NOTIFY`` whose payload is
        ``notify``, the run written or ``""``, unless it is ``None``),
        retrying transient failures; see the module docstring for ``verify``. ``single``:
        ``fn`` runs one statement (atomic by itself), so no ``BEGIN``/``COMMIT`` is sent.

        Raises:
            StoreError: the database stayed unreachable for ``reconnect_timeout`` seconds.
            Exception: whatever ``fn`` raises (the transaction is rolled back).
        """
        del write, no_flush  # a read is a single statement (the store says so); no_flush: SQLite
        return await self._run(fn, args, verify, notify, single and notify is None)

    async def _run(
        self,
        fn: Callable[..., Awaitable[_T]],
        args: tuple[Any, ...],
        verify: Callable[[Any], Awaitable[Any]] | None,
        notify: str | None,
        single: bool,
    ) -> _T:
        deadline = anyio.current_time() + self._reconnect_timeout
        delay = _FIRST_DELAY
        unknown = False
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
        conn: _Connection,
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

    async def _commit(self, conn: _Connection) -> None:
        """``COMMIT`` (a method of its own so tests can lose its reply)."""
        await conn.query("COMMIT")

    @staticmethod
    async def _rollback(conn: _Connection) -> None:
        if conn.broken:
            return
        try:
            await conn.query("ROLLBACK")
        except psycopg.Error:
            conn.close()

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

    async def _open_listener(self) -> _Connection:
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
