"""The Postgres connections under `._postgres.PostgresRunner`: one libpq connection in
non-blocking mode (`PgConnection`), the cursor the store's transactions use on it (`PgCursor`),
the decoders of binary results, and the pool (`PgPool`).

Driver: psycopg 3's libpq binding (`psycopg.pq`, its C implementation with ``psycopg[binary]``),
in non-blocking mode: a query is sent, and the task waits for the socket with
`anyio.wait_readable`, so the same code runs under asyncio and trio and no thread is involved
(psycopg's async connections are asyncio-only, and running its blocking ones in a worker
thread cost ~180 µs per statement on the project's machine, more than half of what a Postgres
commit costs: `benchmarks/RESULTS.md`). Parameters are sent as text (``bytes`` as binary) and
results come back in binary, decoded by column type: the store's statements use only a few types.

Every query has a deadline (`QUERY_TIMEOUT`): a server that stops answering breaks the
connection (and the runner retries the call) instead of holding the task forever.
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import anyio
import anyio.to_thread
import psycopg
from psycopg import errors as pg_errors
from psycopg import pq

from durable.store import PoolTimeout, StoreError

__all__ = ["DECODERS", "POOL_TIMEOUT", "QUERY_TIMEOUT", "PgConnection", "PgCursor", "PgPool"]

POOL_TIMEOUT = 60.0
"""The longest a call waits for a free connection of the pool (then `PoolTimeout`)."""

MAX_PREPARED = 256
"""The most statements one connection prepares (`PgConnection`); others are sent unnamed."""

QUERY_TIMEOUT = 30.0
"""The longest a query may wait for the server's reply; then the connection is given up as
broken (the call is retried like any dropped connection)."""


_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
_BINARY = pq.Format.BINARY
_TEXT = pq.Format.TEXT
_SQLSTATE = pq.DiagnosticField.SQLSTATE
_BYTES_LIKE = (bytes, bytearray, memoryview)  # sent in binary
_MAX_FIELD = 0x3FFFFFFF  # Postgres holds at most 1 GB in one field (and in one message)

_INT8 = struct.Struct(">q").unpack
_FLOAT8 = struct.Struct(">d").unpack
_FLOAT4 = struct.Struct(">f").unpack


def _int(value: bytes) -> int:
    return int.from_bytes(value, "big", signed=True)


DECODERS: dict[int, Callable[[bytes], Any]] = {
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

    def __init__(self, conn: PgConnection) -> None:
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
            decoders.append(DECODERS[oid])
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


class PgConnection:
    """One libpq connection in non-blocking mode; one task uses it at a time.

    A statement with parameters that was sent once before on this connection is prepared on
    it (a named server-side statement, up to `MAX_PREPARED` of them), and from then on sent by
    name: the server parses and plans it once per connection instead of at every call (for
    the store's fenced step writes that was three quarters of their cost on the server). A
    statement sent only once is not prepared."""

    __slots__ = ("_most", "_names", "_pg", "_prepared", "_seen")

    def __init__(self, pgconn: pq.abc.PGconn, *, prepare: bool = True) -> None:
        pgconn.nonblocking = 1
        self._pg = pgconn
        self._most = MAX_PREPARED if prepare else 0  # statements it may prepare
        self._prepared: dict[str, bytes] = {}  # statement -> its name on this connection
        self._seen: set[str] = set()  # statements sent once, unnamed
        self._names = 0  # names given so far (a name is never reused)

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
        if self._to_prepare(sql, params):  # prepared and run in one round trip
            [[outcome]] = await self.pipeline([[(sql, params)]])
            if isinstance(outcome, psycopg.Error):
                raise outcome
            return outcome
        pg = self._pg
        self._send(sql, *self._encode(params))
        result = None
        with anyio.move_on_after(QUERY_TIMEOUT) as deadline:
            await self._flush()
            while True:
                got = await self._next()
                if got is None:
                    break
                result = got
        if deadline.cancelled_caught:
            self._timed_out()
        if result is None or pg.status != pq.ConnStatus.OK:
            self._lost()
        if result.status not in _OK:
            raise _error(result)
        return result

    async def pipeline(
        self, transactions: Sequence[Sequence[tuple[str, Sequence[Any]]]]
    ) -> list[list[pq.abc.PGresult | psycopg.Error]]:
        """Run each of ``transactions`` (statements with their parameters) as one transaction,
        all sent at once in libpq's pipeline mode: one write, one wait for the replies, instead
        of a round trip per statement. Each transaction is the implicit one that ends at its
        sync point: it commits there, or, if one of its statements fails, none of it is
        written (that statement's entry is its error, the later ones' a `psycopg.Error` that
        says they were not run). A connection that breaks raises `psycopg.OperationalError`:
        which transactions committed is then unknown.

        Returns:
            Per transaction, per statement: its result or its error.
        """
        pg = self._pg
        encoded = [  # every parameter converted before anything is sent
            [(sql, self._encode(params)) for sql, params in statements]
            for statements in transactions
        ]
        # Statements to prepare first, at a sync point of their own: no failure of another
        # statement can keep them from being prepared.
        preparing = list(
            dict.fromkeys(
                sql
                for statements in encoded
                for sql, (values, _) in statements
                if self._to_prepare(sql, values)
            )
        )
        pg.enter_pipeline_mode()
        try:
            for sql in preparing:
                self._names += 1
                self._prepared[sql] = name = f"durable_{self._names}".encode()
                pg.send_prepare(name, sql.encode())
            if preparing:
                pg.pipeline_sync()
            for statements in encoded:
                for sql, (values, formats) in statements:
                    self._send(sql, values, formats)
                pg.pipeline_sync()
            out: list[list[pq.abc.PGresult | psycopg.Error]] = []
            with anyio.move_on_after(QUERY_TIMEOUT) as deadline:
                await self._flush()
                for sql in preparing:
                    done = await self._result()
                    if done.status == pq.ExecStatus.COMMAND_OK:
                        self._seen.discard(sql)
                    else:  # not prepared: sent unnamed until it is
                        del self._prepared[sql]
                if preparing:
                    await self._sync()
                for statements in encoded:
                    out.append([_outcome(await self._result()) for _ in statements])
                    await self._sync()
            if deadline.cancelled_caught:
                self._timed_out()
            pg.exit_pipeline_mode()
        except BaseException:
            if pg.pipeline_status != pq.PipelineStatus.OFF:  # replies left unread: unusable
                pg.finish()
            raise
        return out

    def _to_prepare(self, sql: str, params: Sequence[object]) -> bool:
        """Whether to prepare ``sql`` now: it has parameters (a statement without any is a
        transaction's ``BEGIN`` / ``COMMIT``, or a one-off), was sent unnamed before, is not
        prepared yet, and there is room."""
        return (
            bool(params)
            and sql in self._seen
            and sql not in self._prepared
            and len(self._prepared) < self._most
        )

    @staticmethod
    def _encode(params: Sequence[Any]) -> tuple[list[bytes | None], list[pq.Format]]:
        """The parameters as sent: text, ``bytes`` in binary (the common types looked up by
        their exact type first: a step write sends a dozen)."""
        values: list[bytes | None] = []
        formats: list[pq.Format] = []
        for value in params:
            kind = type(value)
            if kind is str:
                try:
                    values.append(value.encode())
                except UnicodeEncodeError:
                    values.append(_param(value))  # raises, saying which character
            elif value is None:
                values.append(None)
            elif kind is int:
                values.append(str(value).encode())
            else:
                values.append(_param(value))
                if isinstance(value, _BYTES_LIKE):
                    formats.append(_BINARY)
                    continue
            formats.append(_TEXT)
        return values, formats

    def _send(self, sql: str, values: list[bytes | None], formats: list[pq.Format]) -> None:
        """Send a statement (by name if prepared); its result comes in binary."""
        if not values:
            self._pg.send_query_params(sql.encode(), None, None, None, _BINARY)
            return
        name = self._prepared.get(sql)
        if name is not None:
            self._pg.send_query_prepared(name, values, formats, _BINARY)
            return
        self._pg.send_query_params(sql.encode(), values, None, formats, _BINARY)
        if len(self._seen) >= MAX_PREPARED:  # statements made up as they go: no end of them
            self._seen.clear()
        self._seen.add(sql)

    async def _result(self) -> pq.abc.PGresult:
        """In a pipeline: the next statement's result."""
        result = await self._next()
        if result is None or await self._next() is not None:
            self._lost()
        return result

    async def _sync(self) -> None:
        """In a pipeline: the next sync point."""
        sync = await self._next()
        if sync is None or sync.status != pq.ExecStatus.PIPELINE_SYNC:
            self._lost()

    async def _next(self) -> pq.abc.PGresult | None:
        """The next result (``None``: the end of a statement's results)."""
        pg = self._pg
        while pg.is_busy():
            await anyio.wait_readable(pg.socket)
            pg.consume_input()
        return pg.get_result()

    def _timed_out(self) -> NoReturn:
        self._pg.finish()  # the reply may still come: the connection cannot be reused
        raise psycopg.OperationalError(
            f"the server sent no reply within {QUERY_TIMEOUT:g} s (QUERY_TIMEOUT)"
        )

    def _lost(self) -> NoReturn:
        message = self._pg.get_error_message() or "the connection was lost"
        if self._pg.status == pq.ConnStatus.OK:  # a reply out of order: do not reuse it
            self._pg.finish()
        raise psycopg.OperationalError(message)

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


def _outcome(result: pq.abc.PGresult) -> pq.abc.PGresult | psycopg.Error:
    """A statement's result in a pipeline, or its error (not run: the transaction failed)."""
    if result.status in _OK:
        return result
    if result.status == pq.ExecStatus.PIPELINE_ABORTED:
        return psycopg.DatabaseError("not run: an earlier statement of its transaction failed")
    return _error(result)


def _error(result: pq.abc.PGresult) -> psycopg.Error:
    message = (result.error_message or b"").decode(errors="replace").strip()
    code = result.error_field(_SQLSTATE)
    try:
        cls = pg_errors.lookup(code.decode()) if code else psycopg.DatabaseError
    except KeyError:
        cls = psycopg.DatabaseError
    return cls(message)


class _Waiter:
    """A task waiting for a connection: `PgPool.give` hands one to it directly."""

    __slots__ = ("conn", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.conn: PgConnection | None = None  # the connection handed over, if any


class PgPool:
    """Up to ``limit`` open connections, of which ``keep`` stay open when idle; callers wait
    (at most ``POOL_TIMEOUT`` s) for one, first come first served.

    A connection given back goes to the longest waiting task directly (waking it alone:
    waking every waiter to race for it cost work in proportion to their number, which made
    100 runs in flight slower than 10). Bookkeeping is guarded by a thread lock, and nothing
    the pool keeps between calls is bound to one event loop (a store may outlive the loop that
    opened it)."""

    def __init__(self, conninfo: str, keep: int, limit: int, *, prepare: bool = True) -> None:
        self._conninfo = conninfo.encode()
        self._prepare = prepare  # its connections prepare statements (see `PgConnection`)
        self._keep = keep
        self._limit = limit
        self._idle: deque[PgConnection] = deque()
        self._waiters: deque[_Waiter] = deque()
        self._open = 0
        self._lock = threading.Lock()
        self.closed = False  # then connections given back are closed, not kept

    async def connect(self) -> PgConnection:
        """A new connection outside the pool (blocking libpq connect, in a worker thread)."""
        pgconn = await anyio.to_thread.run_sync(pq.PGconn.connect, self._conninfo)
        if pgconn.status != pq.ConnStatus.OK:
            message = (pgconn.get_error_message() or "cannot connect").strip()
            pgconn.finish()
            raise psycopg.OperationalError(message)
        return PgConnection(pgconn, prepare=self._prepare)

    async def take(self, url: str) -> PgConnection:
        deadline = anyio.current_time() + POOL_TIMEOUT
        while True:
            waiter = None
            with self._lock:
                if self._idle:
                    return self._idle.pop()
                opening = self._open < self._limit
                if opening:
                    self._open += 1
                else:
                    waiter = _Waiter()
                    self._waiters.append(waiter)
            if waiter is None:
                try:
                    return await self.connect()
                except BaseException:
                    with self._lock:
                        self._open -= 1
                    self._wake_one()  # the slot it held is free again
                    raise
            conn = await self._wait(waiter, deadline - anyio.current_time())
            if conn is not None:
                return conn
            if anyio.current_time() >= deadline:
                raise PoolTimeout(
                    f"the durable store {url!r} has no free connection: all {self._limit} "
                    f"stayed busy for {POOL_TIMEOUT:g} s; raise SQLStore(pool_size=...) or "
                    "lower the worker's concurrency"
                )

    async def _wait(self, waiter: _Waiter, within: float) -> PgConnection | None:
        """Wait (at most ``within`` s) to be handed a connection, or told a slot is free
        (``None``: look again). A waiter cancelled after the hand-over passes on what it was
        handed."""
        try:
            with anyio.move_on_after(max(within, 0)):
                await waiter.event.wait()
        except BaseException:
            conn = self._leave(waiter)
            if conn is not None:  # the next waiter gets what this one was given
                self.give(conn)
            elif waiter.event.is_set():  # or the free slot it was told of
                self._wake_one()
            raise
        return self._leave(waiter)

    def _leave(self, waiter: _Waiter) -> PgConnection | None:
        """Take ``waiter`` out of the queue; what it was handed, if anything."""
        with self._lock:
            conn, waiter.conn = waiter.conn, None
            if not waiter.event.is_set():
                self._waiters.remove(waiter)
        return conn

    def give(self, conn: PgConnection) -> None:
        """Return a connection: to the longest waiting task, else to the idle ones. A broken
        one, one left inside a transaction, or one beyond ``keep`` idle ones is closed (and a
        waiter is told it may open one)."""
        with self._lock:
            kept = not self.closed and not conn.broken and conn.idle
            waiter = self._waiters.popleft() if self._waiters else None
            if kept and waiter is not None:
                waiter.conn = conn
            elif kept and len(self._idle) < self._keep:
                self._idle.append(conn)
            else:
                kept = False
                self._open -= 1
        if not kept:
            conn.close()
        if waiter is not None:
            waiter.event.set()

    def _wake_one(self) -> None:
        """Tell the longest waiting task that a slot is free (it opens a connection)."""
        with self._lock:
            waiter = self._waiters.popleft() if self._waiters else None
        if waiter is not None:
            waiter.event.set()

    def drop_idle(self) -> None:
        """Close the idle connections (after a server restart they are all dead)."""
        with self._lock:
            idle, self._idle = list(self._idle), deque()
            self._open -= len(idle)
        for conn in idle:
            conn.close()
