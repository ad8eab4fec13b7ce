"""`SQLStore`: the store protocol on SQLite (one file, zero setup) or Postgres (many workers).

Every statement is a SQLAlchemy Core statement over the tables of `._schema` (see
`._statements.Statements`), compiled once per store for its dialect and then executed straight
on the DBAPI cursor: the per-call overhead of a SQLAlchemy ``Connection`` would cost more than
the SQLite work itself on the hot path (one `SQLStore.commit` per activity step).

SQLite: one persistent connection guarded by a `threading.Lock`; the calls run synchronously on
the calling thread (cheaper than a thread hop). The driver's implicit transactions are switched
off (``isolation_level = None``); every write transaction starts with ``BEGIN IMMEDIATE``, so it
holds the write lock from its first statement and concurrent writers (other processes sharing the
file) queue on ``busy_timeout`` instead of failing half-way. Reads are single statements in
autocommit mode. The file uses WAL; ``durability="process"`` (``synchronous=NORMAL``) survives a
crash of the process, ``durability="power"`` (``synchronous=FULL``) also a power loss.

Postgres (``postgresql://``, psycopg 3's libpq binding): a pool of non-blocking connections
driven from the event loop (asyncio or trio, no thread), each call in its own transaction
(`._postgres.PostgresRunner`: retries through outages, re-reads when a commit's outcome is
unknown, ``LISTEN``/``NOTIFY`` wake-ups). Statements are compiled with ``$n`` placeholders;
transaction bodies are coroutines so that the same code serves SQLite, whose cursor never
waits. SQLAlchemy's engine only opens the database and creates the schema. The fencing and
atomic-acquire statements are conditional ``UPDATE``s, which Postgres re-checks on the locked
row, so they are safe under concurrency; claiming uses ``FOR UPDATE SKIP LOCKED``.

The schema is created on first use (under a lock, so workers starting together on an empty
database create it once) or ahead of time by ``durable db init URL``. An up-to-date schema is
only read at start-up: no DDL runs, so the application's role needs only SELECT, INSERT,
UPDATE and DELETE on the tables.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeVar

import anyio
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import URL, Engine, make_url

from durable.store import (
    Interruption,
    Lease,
    LeaseLost,
    LeaseOwner,
    PayloadTrust,
    RunRecord,
    RunStatus,
    RunUpdate,
    SchemaVersionError,
    StepRecord,
    StoreError,
)

from ._doorbell import Doorbell
from ._redact import redact, secrets_in
from ._rules import check_step_batch
from ._schema import (
    SCHEMA_VERSION,
    DurableModel,
    migration_ddl,
    run_from_row,
    run_values,
    step_from_row,
    step_values,
    tables,
    unknown_status_text,
)
from ._sqlite import BUSY_SLICE_SECONDS, SQLiteRunner
from ._statements import Compiled, Statements
from ._verify import NOT_APPLIED

if TYPE_CHECKING:  # the driver is imported only when a postgresql:// URL is opened
    pass

__all__ = ["SQLStore"]

log = logging.getLogger("durable.store")

_T = TypeVar("_T")

_SQLITE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite"})
_POSTGRES_DRIVERS = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
_URL_HELP = "use sqlite:///path/to/file.db or postgresql://user:password@host/dbname"
_SYNCHRONOUS = {"process": "NORMAL", "power": "FULL"}
_KEEPALIVES = {  # as `._postgres.KEEPALIVES` (not imported from there: it needs psycopg)
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}
_SCHEMA_LOCK = 0x64757261626C65  # pg_advisory_xact_lock key for creating / upgrading the schema


class _Runner(Protocol):
    """How `SQLStore` reaches its database: `SQLiteRunner` or `PostgresRunner`. The store's
    statements and rules are the same for both; the runners own transactions, retries and
    waiting for other processes' writes."""

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
    ) -> _T:
        """Run ``await fn(cursor, *args)`` in one transaction (see `SQLStore._call`)."""
        ...

    async def wait(self, event: anyio.Event, within: float) -> bool:
        """Wait for ``event`` (the store's doorbell) or another process's write."""
        ...

    def close(self) -> None:
        """Release the connections."""
        ...


class _SQLiteCursor:
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


class _RunExists(Exception):
    """Internal: the run id is already recorded (raised inside the insert's transaction)."""


class SQLStore:
    """A `durable.store.Store` on SQLite or Postgres.

    Args:
        url: ``sqlite:///path/to/file.db`` (created if missing) or
            ``postgresql://user:password@host/dbname`` (needs the ``postgres`` extra:
            ``pip install 'durable-sdk[postgres]'``).
        durability: SQLite only. ``"process"`` (default): a committed step survives a crash of
            the process (WAL, ``synchronous=NORMAL``). ``"power"``: it also survives a power
            loss or OS crash (``synchronous=FULL``; each commit waits for an fsync).
        busy_timeout: SQLite only. Seconds a write waits for another process that holds the
            database's write lock before failing with `StoreError`.
        pool_size: Postgres only. Connections kept open; up to twice as many are opened under
            load (and then kept), plus one that listens for wake-ups. Size the server's
            ``max_connections`` for ``processes * (2 * pool_size + 1)``.
        reconnect_timeout: Postgres only. How long a call keeps retrying while the server is
            unreachable (restarting, a dropped connection, too many clients) before it fails
            with `StoreError`; opening the store waits as long for a server that answers but
            is busy (starting up, shutting down, too many clients). Errors that no retry can
            cure (a value too large, a constraint or data error) fail at once.
        wait_for_server: Postgres only. How long opening the store waits for a server that
            accepts no connections at all (refused, unknown host, timed out), retrying with
            a warning in the log: for workers that start before their database. ``0``
            (default): opening fails at once (within the connect timeout, 10 s unless the
            URL sets ``connect_timeout``) with a `StoreError` naming the host and port.
        secret_keys: sign every payload written with the first key, and refuse payloads that
            no key verifies (see README "Security"); default: ``DURABLE_SECRET_KEY``.
        allowed_codecs: the codec names whose payloads may be written and read, e.g.
            ``["json"]``; default: ``DURABLE_ALLOWED_CODECS``, else every codec.

    Raises:
        StoreError: the URL is not supported, the database cannot be opened, or it is not a
            durable database.
        SchemaVersionError: the database was written by a newer version of durable.

    Example:
        >>> async with SQLStore("sqlite:///durable.db") as store:  # doctest: +SKIP
        ...     run = await store.get_run("order-1")
    """

    def __init__(
        self,
        url: str,
        *,
        durability: Literal["process", "power"] = "process",
        busy_timeout: float = 30.0,
        pool_size: int = 5,
        reconnect_timeout: float = 60.0,
        wait_for_server: float = 0.0,
        secret_keys: str | bytes | Iterable[str | bytes] | None = None,
        allowed_codecs: Iterable[str] | None = None,
    ) -> None:
        """Open (and create, if needed) the store at ``url``. See the class docstring."""
        self.payload_trust = PayloadTrust.configure(secret_keys, allowed_codecs, owner="SQLStore")
        self._lock = threading.Lock()
        self._closed = False
        self._busy_timeout = busy_timeout
        self._power_safe = durability == "power"
        self._doorbell = Doorbell()
        if not isinstance(pool_size, int) or pool_size < 1:
            raise StoreError(f"SQLStore(pool_size=...) must be an int >= 1, not {pool_size!r}")
        for name, seconds in (
            ("reconnect_timeout", reconnect_timeout),
            ("wait_for_server", wait_for_server),
        ):
            if not seconds >= 0:
                raise StoreError(f"SQLStore({name}=...) must be a number of seconds >= 0")
        self._secrets = secrets_in(url)
        self._engine, self._sqlite, self.url = _make_engine(
            url, durability, busy_timeout, pool_size
        )
        dbapi = self._engine.dialect.loaded_dbapi
        self._dbapi_error: type[Exception] = dbapi.Error
        self._integrity_error: type[Exception] = dbapi.IntegrityError
        started = time.monotonic()
        delay = 0.1
        while True:
            try:
                conn = self._engine.connect()
                try:
                    self.schema_change = self._prepare(conn)
                except BaseException:
                    conn.close()
                    raise
                break
            except (sa.exc.DBAPIError, self._dbapi_error) as exc:
                # A server that answers but is busy is waited for as long as a call would be;
                # one that accepts no connection at all only when the caller asked to wait.
                patience = -1.0
                if not self._sqlite and _server_busy(exc):
                    patience = max(reconnect_timeout, wait_for_server)
                elif not self._sqlite and _server_unreachable(exc):
                    patience = wait_for_server
                waited = time.monotonic() - started
                if waited + delay > patience:
                    self._engine.dispose()
                    raise StoreError(self._open_failure(exc, wait_for_server)) from exc
                log.warning(
                    "durable store %s: %s; retrying in %.1f s", self.url, self._reason(exc), delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except BaseException:
                self._engine.dispose()
                raise
        self._s = Statements(
            self._engine.dialect if self._sqlite else PGDialect_psycopg(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
        )
        self._conn: sa.Connection | None = None
        self._runner: _Runner
        if self._sqlite:
            self._conn = conn
            raw: Any = conn.connection.dbapi_connection
            self._runner = SQLiteRunner(
                raw,
                _SQLiteCursor(raw.cursor()),
                power_safe=self._power_safe,
                busy_timeout=busy_timeout,
                dbapi_error=self._dbapi_error,
            )
        else:
            # One NOTIFY channel per database schema: stores in other schemas of the same
            # database (another application, another test session) do not wake each other.
            schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
            conn.close()
            self._engine.dispose()  # it only prepared the schema; calls use the runner's pool
            from ._postgres import PostgresRunner

            conninfo = self._engine.url.set(drivername="postgresql")
            self._runner = PostgresRunner(
                conninfo.render_as_string(hide_password=False),
                self.url,
                pool_size,
                float(reconnect_timeout),
                f"durable.{schema}",
                self._doorbell,
            )

    def __repr__(self) -> str:
        return f"SQLStore({self.url!r})"

    # -- opening ------------------------------------------------------------------------------

    def _prepare(self, conn: sa.Connection) -> str:
        """Check the schema version; create or upgrade the tables only when they are missing or
        older. An up-to-date database is only read (no DDL, no lock), so an application role
        with SELECT, INSERT, UPDATE and DELETE is enough.

        Returns:
            ``"current"``, ``"created"`` or ``"upgraded from version N"``.
        """
        version = self._read_version(conn)
        conn.rollback()
        if self._sqlite:
            # Only now, when the file is known to be durable's (or new): a database durable
            # refuses is left exactly as it was, in its own journal mode.
            conn.exec_driver_sql("PRAGMA journal_mode = WAL")
            conn.rollback()
        if version == SCHEMA_VERSION:
            return "current"
        # Creating or upgrading: one process at a time (several workers may start together on
        # an empty database). SQLite: the write lock; Postgres: a transaction advisory lock.
        if self._sqlite:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
        try:
            change = self._create_or_upgrade(conn, self._read_version(conn))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return change

    def _read_version(self, conn: sa.Connection) -> int | None:
        """The recorded schema version, or ``None`` in a database without durable's tables.

        Raises:
            StoreError: the database has durable's table names but is not a durable database,
                or it records an invalid version.
            SchemaVersionError: a newer version of durable wrote the database.
        """
        runs, _, _ = tables()
        version = self._recorded_version(conn)
        if version is None:
            if sa.inspect(conn).has_table(runs.name):
                # Another process may have created both tables (in one transaction) between
                # the two looks: look for the version once more before refusing the database.
                version = self._recorded_version(conn)
        if version is None:
            if sa.inspect(conn).has_table(runs.name):
                raise StoreError(
                    f"the database {self.url!r} has a {runs.name} table but no durable schema "
                    "version: it is not a durable database (or a damaged one); point the URL at "
                    "a new database or at one created by durable"
                )
            return None
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(self.url, version, SCHEMA_VERSION)
        if version < 1:
            raise StoreError(
                f"the database {self.url!r} has an invalid durable schema version {version}; "
                "it is damaged: point the URL at another database"
            )
        return int(version)

    @staticmethod
    def _recorded_version(conn: sa.Connection) -> int | None:
        """The version in ``durable_schema``, or ``None`` when the table or its row is missing."""
        _, _, schema = tables()
        if not sa.inspect(conn).has_table(schema.name):
            return None
        found = conn.execute(sa.select(schema.c.version).where(schema.c.id == 1))
        version: int | None = found.scalar_one_or_none()
        return version

    def _create_or_upgrade(self, conn: sa.Connection, version: int | None) -> str:
        _, _, schema = tables()
        if version is None:
            DurableModel.metadata.create_all(conn)
            conn.execute(sa.insert(schema).values(id=1, version=SCHEMA_VERSION))
            return "created"
        if version == SCHEMA_VERSION:
            return "current"  # another process did it while we waited for the lock
        for step in range(version, SCHEMA_VERSION):
            existing = frozenset(sa.inspect(conn).get_table_names())
            for ddl in migration_ddl(step, self._engine.dialect, existing):
                conn.exec_driver_sql(ddl)
        DurableModel.metadata.create_all(conn)  # tables added since (checkfirst)
        conn.execute(sa.update(schema).where(schema.c.id == 1).values(version=SCHEMA_VERSION))
        return f"upgraded from version {version}"

    def _reason(self, exc: BaseException) -> str:
        """The driver's message for ``exc`` on one line, passwords masked."""
        return redact(" ".join(str(getattr(exc, "orig", None) or exc).split()), self._secrets)

    def _open_failure(self, exc: BaseException, waited: float) -> str:
        """The message for a database that cannot be opened; ``waited``: the seconds the
        caller let an unreachable server take (``wait_for_server``)."""
        reason = self._reason(exc)
        if self._sqlite and "not a database" in reason:
            return (
                f"cannot open the durable store {self.url!r}: the file is not a SQLite database "
                f"({reason}); point the URL at a new file or at a database created by durable"
            )
        if not self._sqlite and _server_unreachable(exc):
            url = self._engine.url
            host = url.host or url.query.get("host") or "localhost"
            port = url.port or url.query.get("port") or 5432
            after = f" (waited {waited:g} s: wait_for_server)" if waited > 0 else ""
            return (
                f"cannot open the durable store {self.url!r}: no Postgres server accepts "
                f"connections at host {host!r}, port {port}{after}: {reason}; start the server "
                "or correct the host and port in the URL. A worker that may start before its "
                "database can wait for it: SQLStore(url, wait_for_server=SECONDS), or "
                "durable worker --wait-for-db SECONDS"
            )
        return (
            f"cannot open the durable store {self.url!r}: {reason}; check the URL and that the "
            "database (for SQLite, the file's directory) exists and is reachable"
        )

    # -- running statements -------------------------------------------------------------------

    async def _call(
        self,
        write: bool,
        fn: Callable[..., Awaitable[_T]],
        *args: Any,
        verify: Callable[[Any], Awaitable[Any]] | None = None,
        notify: bool = False,
        single: bool = False,
        no_flush: bool = False,
        run_id: str | None = None,
        steps: Sequence[StepRecord] = (),
    ) -> _T:
        """Run ``await fn(cursor, *args)`` in one transaction.

        ``notify``: the write may make a run runnable; waiting workers are woken (in this
        process, and on Postgres in every process, by a ``NOTIFY`` sent with the commit).
        ``verify``: Postgres only, see `._postgres.PostgresRunner.run`. ``single``: ``fn`` runs
        one statement (reads always do): Postgres sends no ``BEGIN``/``COMMIT`` around it.
        ``no_flush``: SQLite with ``durability="power"`` commits without waiting for an fsync
        (``synchronous=NORMAL`` for this transaction; the next full commit syncs it too).
        ``run_id`` and ``steps``: what the call reads or writes, named in its errors.
        """
        self._check_open()
        try:
            result = await self._runner.run(
                fn,
                args,
                write=write,
                verify=verify,
                notify=(run_id or "") if notify else None,
                single=single or not write,
                no_flush=no_flush,
            )
        except (self._dbapi_error, sa.exc.DBAPIError) as exc:
            raise self._failure(exc, write, run_id, steps) from exc
        if notify:
            self._doorbell.ring(run_id)
        return result

    def _failure(
        self,
        exc: BaseException,
        write: bool,
        run_id: str | None,
        steps: Sequence[StepRecord],
    ) -> StoreError:
        """The `StoreError` for a database error that retrying cannot cure (Postgres retries
        the others, `._postgres`): what was being read or written, what went wrong, and what
        to do, without the URL's password."""
        reason = self._reason(exc)
        what = "write to" if write else "read from"
        if run_id is not None:
            seqs = sorted({step.seq for step in steps})
            if seqs:
                numbers = ", ".join(str(seq) for seq in seqs)
                what += f" step{'s' if len(seqs) > 1 else ''} {numbers} of run {run_id!r} in"
            else:
                what += f" run {run_id!r} in"
        head = f"the durable store {self.url!r} could not {what} the database ({reason})"
        kept = (
            "; nothing of this write was recorded, and everything recorded before is kept"
            if write
            else ""
        )
        code = str(getattr(getattr(exc, "orig", None) or exc, "sqlstate", None) or "")
        lowered = reason.lower()
        if "database or disk is full" in lowered or code == "53100":
            where = "the database's disk" if self._sqlite else "the database server's disk"
            return StoreError(
                f"{head}: {where} is full{kept}. Free disk space, then run it again: it resumes "
                "where it stopped"
            )
        if "too big" in lowered or "too large" in lowered or code.startswith("54"):
            return StoreError(
                f"{head}: a value is too large for the database{kept}. Retrying cannot help: "
                "make the value smaller (a payload, a name, an idempotency key); one field "
                "holds at most 1 GB (SQLite: 1,000,000,000 bytes) and an indexed one about 2 kB"
            )
        if code.startswith("22"):
            return StoreError(
                f"{head}: the database cannot store a value (a data error){kept}. Retrying "
                "cannot help: the value must change (e.g. text holding a NUL character, or a "
                "number out of the column's range)"
            )
        if code.startswith("23"):
            return StoreError(
                f"{head}: the database refused the row (a constraint){kept}. Retrying cannot "
                "help: the database was changed outside durable, or is damaged"
            )
        if self._sqlite and "locked" in lowered:
            return StoreError(
                f"{head}: another process held the database's write lock for longer than "
                f"busy_timeout ({self._busy_timeout:g} s){kept}"
            )
        return StoreError(f"{head}{kept}")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.url!r} is closed; open a new SQLStore")

    @staticmethod
    async def _fetch_one(cur: Any, statement: Compiled, values: Mapping[str, Any]) -> Any:
        await cur.execute(statement.sql, statement.args(values))
        return cur.fetchone()

    @staticmethod
    async def _fetch_all(cur: Any, statement: Compiled, values: Mapping[str, Any]) -> list[Any]:
        await cur.execute(statement.sql, statement.args(values))
        return list(cur.fetchall())

    @staticmethod
    async def _execute(cur: Any, statement: Compiled, values: Mapping[str, Any]) -> int:
        await cur.execute(statement.sql, statement.args(values))
        return int(cur.rowcount)

    async def _fence_detail(self, cur: Any, lease: Lease) -> str:
        row = await self._fetch_one(cur, self._s.token, {"rid": lease.run_id})
        if row is None:
            return "the run no longer exists"
        return f"its fencing token is {row[0]}, not {lease.token}"

    # -- the Store protocol -------------------------------------------------------------------

    async def create_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        """Insert ``run`` unless a run with its id exists.

        Returns:
            ``(stored, created)``: the record now in the store, and whether this call created it.
        """
        try:
            values = run_values(run)
            await self._call(
                True,
                self._insert_run,
                values,
                verify=partial(self._verify_insert_run, values),
                notify=True,
                run_id=run.id,
            )
        except _RunExists as exc:
            # Someone recorded the id first (maybe at the same moment): theirs is the run.
            existing = await self.get_run(run.id)
            if existing is None:
                raise StoreError(
                    f"cannot record run {run.id!r} in {self.url!r}: "
                    f"{self._reason(exc.__cause__ or exc)}"
                ) from exc
            return existing, False
        return run, True

    async def _insert_run(self, cur: Any, values: Mapping[str, Any]) -> None:
        try:
            await self._execute(cur, self._s.insert_run, values)
        except self._integrity_error as exc:
            if not _duplicate(exc):
                raise  # another constraint: not a run recorded first
            raise _RunExists() from exc

    async def _verify_insert_run(self, values: Mapping[str, Any], cur: Any) -> Any:
        row = await self._fetch_one(cur, self._s.get_run, {"rid": values["id"]})
        if row is not None and run_values(run_from_row(row)) == values:
            return None
        return NOT_APPLIED  # not there (or someone else's: the retry reports it)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or ``None``."""
        row = await self._call(
            False, self._fetch_one, self._s.get_run, {"rid": run_id}, run_id=run_id
        )
        return None if row is None else run_from_row(row)

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """Runs, optionally only those with ``status``, oldest first (by ``created_at``, id).

        Returns:
            At most ``limit`` runs.
        """
        self._check_open()
        if limit <= 0:
            return []
        values: dict[str, Any] = {"lim": limit}
        statement = self._s.list_all
        if status is not None:
            statement = self._s.list_status
            values["filter_status"] = str(status)
        rows = await self._call(False, self._fetch_all, statement, values)
        return [run_from_row(row) for row in rows]

    async def acquire_lease(
        self,
        run_id: str,
        owner: LeaseOwner,
        *,
        now: float,
        duration: float,
        takeover_token: int | None = None,
    ) -> Lease | None:
        """Atomically take the lease on an unfinished run (see `durable.store.Store`).

        Returns:
            The new lease, or ``None`` when the run is missing, finished, or leased to someone
            else.
        """
        expires = now + duration
        values = {
            "rid": run_id,
            "owner": owner.owner,
            "host": owner.host,
            "pid": owner.pid,
            "expires": expires,
            "now": now,
            "takeover": takeover_token,
        }
        token = await self._call(
            True,
            self._acquire,
            values,
            verify=partial(self._verify_acquire, values),
            run_id=run_id,
        )
        return None if token is None else Lease(run_id, owner, token, expires)

    async def _verify_acquire(self, values: Mapping[str, Any], cur: Any) -> Any:
        owned = {"owner": values["owner"], "expires": values["expires"]}
        for run_id, token in await self._fetch_all(cur, self._s.leased_by, owned):
            if run_id == values["rid"]:
                return int(token)
        return NOT_APPLIED

    async def _acquire(self, cur: Any, values: Mapping[str, Any]) -> int | None:
        if await self._execute(cur, self._s.acquire, values) != 1:
            return None
        row = await self._fetch_one(cur, self._s.token, {"rid": values["rid"]})
        return int(row[0])

    async def claim(
        self,
        owner: LeaseOwner,
        *,
        now: float,
        duration: float,
        limit: int,
        workflows: Sequence[str],
    ) -> list[tuple[RunRecord, Lease]]:
        """Atomically lease up to ``limit`` runnable runs of ``workflows`` (see
        `durable.store.Store.claim`). Postgres skips rows other claimers hold
        (``FOR UPDATE SKIP LOCKED``); SQLite's ``BEGIN IMMEDIATE`` serialises claimers.

        Returns:
            The claimed runs (as before the claim) with their new leases.
        """
        if limit <= 0 or not workflows:
            return []
        statement = self._s.claimable(tuple(sorted(set(workflows))))
        values = {"now": now, "lim": limit}
        owned = {"owner": owner.owner, "expires": now + duration}
        return await self._call(
            True,
            self._claim,
            statement,
            values,
            owner,
            now,
            duration,
            verify=partial(self._forget_claim, owned),
        )

    async def _forget_claim(self, owned: Mapping[str, Any], cur: Any) -> list[Any]:
        """After a claim whose commit outcome is unknown: expire whatever it leased, so any
        worker (this one included) claims those runs again at once."""
        await self._execute(cur, self._s.expire_leases_of, owned)
        return []

    async def _claim(
        self,
        cur: Any,
        statement: Compiled,
        values: Mapping[str, Any],
        owner: LeaseOwner,
        now: float,
        duration: float,
    ) -> list[tuple[RunRecord, Lease]]:
        claimed = []
        for row in await self._fetch_all(cur, statement, values):
            run = run_from_row(row)
            acquire = {
                "rid": run.id,
                "owner": owner.owner,
                "host": owner.host,
                "pid": owner.pid,
                "expires": now + duration,
                "now": now,
                "takeover": run.lease_token,
            }
            token = await self._acquire(cur, acquire)
            if token is not None:
                claimed.append((run, Lease(run.id, owner, token, now + duration)))
        return claimed

    async def renew_lease(self, lease: Lease, *, now: float, duration: float) -> Lease:
        """Extend the lease to ``now + duration`` (``updated_at`` is left alone).

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``.
        """
        expires = now + duration
        values = {"rid": lease.run_id, "token": lease.token, "expires": expires}
        await self._call(
            True, self._fenced_write, self._s.renew, lease, values, run_id=lease.run_id
        )
        return Lease(lease.run_id, lease.owner, lease.token, expires)

    async def _fenced_write(
        self, cur: Any, statement: Compiled, lease: Lease, values: Mapping[str, Any]
    ) -> None:
        if await self._execute(cur, statement, values) != 1:
            raise LeaseLost(lease.run_id, await self._fence_detail(cur, lease))

    async def release_lease(self, lease: Lease) -> None:
        """Clear owner / host / pid / expiry if the lease is still ours; otherwise do nothing."""
        values = {"rid": lease.run_id, "token": lease.token}
        await self._call(
            True, self._execute, self._s.release, values, notify=True, run_id=lease.run_id
        )

    async def load_steps(self, run_id: str) -> list[StepRecord]:
        """Every recorded step of the run, ordered by ``seq``."""
        rows = await self._call(
            False, self._fetch_all, self._s.load_steps, {"rid": run_id}, run_id=run_id
        )
        return [step_from_row(row) for row in rows]

    async def commit(
        self,
        lease: Lease,
        steps: Sequence[StepRecord] = (),
        update: RunUpdate | None = None,
        *,
        now: float,
        outcomes: Sequence[StepRecord] = (),
        check_requests: bool = False,
        relaxed: bool = False,
    ) -> Interruption | None:
        """Insert ``steps``, replace ``outcomes`` and apply ``update`` in one transaction
        (see `durable.store.Store.commit`, also for ``check_requests`` and ``relaxed``).

        With an ``update``, ``updated_at`` becomes ``now``; a ``None`` ``result`` / ``error`` /
        ``cancelled_seq`` keeps the stored value; ``error_text`` is always replaced.

        Returns:
            ``None``, or the `Interruption` that stopped a ``check_requests`` commit.

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``; nothing was written.
            StoreError: a step is already recorded, repeats a ``seq`` in the batch, belongs to
                another run, or an outcome has no ``started`` step to replace; nothing was
                written.
        """
        check_step_batch(lease.run_id, [*steps, *outcomes])
        # Re-reading an unknown commit outcome is Postgres' concern (SQLite never loses a reply).
        verify = (
            None
            if self._sqlite
            else partial(self._verify_commit, lease, steps, outcomes, update, now)
        )
        if update is None and len(steps) + len(outcomes) == 1 and not (check_requests and outcomes):
            # The hot paths, one statement each (Postgres: one round trip, no BEGIN / COMMIT;
            # SQLite: one statement inside BEGIN IMMEDIATE): a step starting or recorded at
            # once, or the outcome of a started one.
            fenced = self._s.insert_step_fenced
            if outcomes:
                fenced = self._s.replace_step_fenced
            elif check_requests:
                starting = self._s.insert_step_starting
                fenced = starting[relaxed and not self._sqlite]
            step = (steps or outcomes)[0]
            args = fenced.args({**step_values(step), "rid": lease.run_id, "token": lease.token})
            return await self._call(
                True,
                self._write_fenced,
                fenced,
                lease,
                args,
                step,
                verify=verify,
                single=True,
                no_flush=relaxed,
                run_id=lease.run_id,
                steps=(step,),
            )
        values: dict[str, Any] = {"rid": lease.run_id, "token": lease.token, "now": now}
        if update is not None:
            values["new_status"] = str(update.status)
            values["new_result"] = update.result
            values["new_error"] = update.error
            values["new_error_text"] = update.error_text
            values["new_cancelled_seq"] = update.cancelled_seq
            values["new_wake_at"] = update.wake_at
        insert = self._s.insert_step
        rows = [insert.args(step_values(step)) for step in steps]
        replacements = [
            (self._s.replace_step.args({**step_values(step), "rid": step.run_id}), step)
            for step in outcomes
        ]
        return await self._call(
            True,
            self._commit,
            update,
            lease,
            values,
            rows,
            replacements,
            check_requests,
            verify=verify,
            notify=update is not None and update.release,
            no_flush=relaxed,
            run_id=lease.run_id,
            steps=[*steps, *outcomes],
        )

    async def _verify_commit(
        self,
        lease: Lease,
        steps: Sequence[StepRecord],
        outcomes: Sequence[StepRecord],
        update: RunUpdate | None,
        now: float,
        cur: Any,
    ) -> Any:
        """Whether a commit whose outcome is unknown was applied (it is all or nothing, so one
        of its effects tells)."""
        if steps or outcomes:
            step = steps[0] if steps else outcomes[0]
            row = await self._fetch_one(
                cur, self._s.step_status, {"rid": lease.run_id, "seq": step.seq}
            )
            applied = row is not None and (
                bool(steps) or (row[0], row[1]) == (str(step.status), step.attempts)
            )
            return None if applied else NOT_APPLIED
        if update is not None:
            row = await self._fetch_one(cur, self._s.get_run, {"rid": lease.run_id})
            run = None if row is None else run_from_row(row)
            applied = run is not None and (run.status, run.updated_at) == (update.status, now)
            return None if applied else NOT_APPLIED
        return NOT_APPLIED  # a token check only: running it again is harmless

    def _already_recorded(self, lease: Lease, exc: Exception) -> StoreError:
        return StoreError(
            f"cannot commit steps to run {lease.run_id!r} in {self.url!r}: one of them is "
            f"already recorded (a step is written once); nothing was written "
            f"({self._reason(exc)})"
        )

    async def _write_fenced(
        self, cur: Any, statement: Compiled, lease: Lease, args: Any, step: StepRecord
    ) -> Interruption | None:
        """One fenced statement that writes one step row; if it wrote nothing, say why (read
        in a statement of its own: if what stopped a starting step is gone by then, a
        request delivered meanwhile, the step is tried again)."""
        for _ in range(5):
            try:
                await cur.execute(statement.sql, args)
            except self._integrity_error as exc:
                if not _duplicate(exc):
                    raise
                raise self._already_recorded(lease, exc) from exc
            if cur.rowcount == 1:
                return None
            row = await self._fetch_one(cur, self._s.check_control, {"rid": lease.run_id})
            if row is None or row[0] != lease.token:
                raise LeaseLost(lease.run_id, await self._fence_detail(cur, lease))
            if statement is self._s.replace_step_fenced:
                await self._insert_lost_start(cur, lease, step)
                return None
            stopped = _interruption(row)
            if stopped is not None:
                return stopped
        raise StoreError(
            f"the durable store {self.url!r} could not start a step of run {lease.run_id!r}: "
            "its requests kept changing; try again"
        )

    async def _insert_lost_start(self, cur: Any, lease: Lease, step: StepRecord) -> None:
        """A step whose ``started`` row is missing gets its row now (fenced). A relaxed start
        can be lost when the database crashes before the outcome's commit flushes it; the
        outcome is then written again after reconnecting, and must not be refused."""
        found = await self._fetch_one(
            cur, self._s.step_status, {"rid": lease.run_id, "seq": step.seq}
        )
        if found is not None:
            raise StoreError(
                f"cannot record the outcome of step {step.seq} of run {lease.run_id!r} in "
                f"{self.url!r}: it is already recorded as {found[0]!r} (a step is written "
                "once); nothing was written"
            )
        fenced = self._s.insert_step_fenced
        args = fenced.args({**step_values(step), "rid": lease.run_id, "token": lease.token})
        try:
            await cur.execute(fenced.sql, args)
        except self._integrity_error as exc:
            if not _duplicate(exc):
                raise
            raise self._already_recorded(lease, exc) from exc
        if cur.rowcount != 1:
            raise LeaseLost(lease.run_id, await self._fence_detail(cur, lease))

    async def _commit(
        self,
        cur: Any,
        update: RunUpdate | None,
        lease: Lease,
        values: Mapping[str, Any],
        rows: list[Any],
        replacements: list[tuple[Any, StepRecord]],
        check_requests: bool,
    ) -> Interruption | None:
        if update is None or check_requests:
            row = await self._fetch_one(cur, self._s.check_control, {"rid": lease.run_id})
            if row is None or row[0] != lease.token:
                raise LeaseLost(lease.run_id, await self._fence_detail(cur, lease))
            stopped = _interruption(row) if check_requests else None
            if stopped is not None:
                return stopped
        if update is not None:
            statement = self._s.update_release if update.release else self._s.update
            await self._fenced_write(cur, statement, lease, values)
        for args, step in replacements:
            await cur.execute(self._s.replace_step.sql, args)
            if cur.rowcount != 1:
                await self._insert_lost_start(cur, lease, step)
        if not rows:
            return None
        try:
            if len(rows) == 1:  # the common case; psycopg's executemany opens a pipeline
                await cur.execute(self._s.insert_step.sql, rows[0])
            else:
                await cur.executemany(self._s.insert_step.sql, rows)
        except self._integrity_error as exc:
            if not _duplicate(exc):
                raise
            raise self._already_recorded(lease, exc) from exc
        return None

    async def request_cancel(self, run_id: str, *, now: float) -> RunRecord | None:
        """Set ``cancel_requested`` on an unfinished run.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        values = {"rid": run_id, "now": now}
        return await self._call(
            True, self._request, self._s.request_cancel, values, notify=True, run_id=run_id
        )

    async def request_pause(self, run_id: str, *, now: float) -> RunRecord | None:
        """Set ``pause_requested``; a run nobody executes is ``paused`` at once.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        values = {"rid": run_id, "now": now}
        return await self._call(
            True, self._request, self._s.request_pause, values, notify=True, run_id=run_id
        )

    async def resume(self, run_id: str, *, now: float) -> RunRecord | None:
        """Clear ``pause_requested``; a ``paused`` run becomes ``pending``.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        values = {"rid": run_id, "now": now}
        return await self._call(
            True, self._request, self._s.resume, values, notify=True, run_id=run_id
        )

    async def request_rollback(self, run_id: str, *, now: float) -> RunRecord | None:
        """Turn a ``completed`` run into a ``compensating`` one with ``rollback_requested``.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        values = {"rid": run_id, "now": now}
        return await self._call(
            True, self._request, self._s.request_rollback, values, notify=True, run_id=run_id
        )

    async def _request(
        self, cur: Any, statement: Compiled, values: Mapping[str, Any]
    ) -> RunRecord | None:
        """Apply a conditional request update and return the run, in one transaction.

        If the update matched nothing but the run now qualifies (created or changed by a
        concurrent transaction between the two statements, as Postgres' read-committed
        statements can see), the update is tried again, so a request is never reported done
        without having been applied.
        """
        for _ in range(5):
            changed = await self._execute(cur, statement, values)
            row = await self._fetch_one(cur, self._s.get_run, {"rid": values["rid"]})
            run = None if row is None else run_from_row(row)
            if changed == 1 or run is None:
                return run
            qualifies = (
                run.status == RunStatus.COMPLETED
                if statement is self._s.request_rollback
                else not run.status.finished
            )
            if not qualifies:
                return run
        raise StoreError(
            f"the durable store {self.url!r} could not apply a request to run "
            f"{values['rid']!r}: it kept changing; try again"
        )

    async def send_signal(
        self,
        run_id: str,
        name: str,
        payload: bytes,
        *,
        now: float,
        idempotency_key: str | None = None,
    ) -> RunRecord | None:
        """Buffer signal ``name`` for an unfinished run (once per ``idempotency_key``).

        Returns:
            The run (nothing recorded when it is finished), or ``None`` when missing.
        """
        values = {
            "rid": run_id,
            "name": name,
            "payload": payload,
            "now": now,
            "key": idempotency_key,
        }
        verify = partial(self._verify_signal, values)
        return await self._call(
            True, self._send_signal, values, verify=verify, notify=True, run_id=run_id
        )

    async def _verify_signal(self, values: Mapping[str, Any], cur: Any) -> Any:
        if await self._fetch_one(cur, self._s.find_signal, values) is None:
            return NOT_APPLIED
        found = await self._fetch_one(cur, self._s.get_run, {"rid": values["rid"]})
        return None if found is None else run_from_row(found)

    async def _send_signal(self, cur: Any, values: Mapping[str, Any]) -> RunRecord | None:
        # The run row is locked (Postgres FOR SHARE) so it cannot finish between the check and
        # the insert: a signal is never buffered for a run that no longer waits.
        row = await self._fetch_one(cur, self._s.run_status_locked, {"rid": values["rid"]})
        if row is None:
            return None
        known = row[0] in _UNFINISHED
        if known and await self._execute(cur, self._s.insert_signal, values) == 1:
            await self._execute(
                cur, self._s.wake_waiting, {"rid": values["rid"], "now": values["now"]}
            )
        found = await self._fetch_one(cur, self._s.get_run, {"rid": values["rid"]})
        return None if found is None else run_from_row(found)

    async def wake(self, run_id: str, *, now: float) -> None:
        """Make a parked run due now (see `durable.store.Store.wake`)."""
        values = {"rid": run_id, "now": now}
        await self._call(
            True, self._execute, self._s.wake_parked, values, notify=True, run_id=run_id
        )

    async def receive_signal(
        self, lease: Lease, name: str, step: StepRecord, *, now: float
    ) -> bytes | None:
        """Consume the oldest buffered signal ``name`` and record ``step`` with its payload,
        in one fenced transaction.

        Returns:
            The payload, or ``None`` when no such signal is buffered (nothing is written).

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``.
        """
        check_step_batch(lease.run_id, [step])
        verify = partial(self._verify_receive, step)
        return await self._call(
            True,
            self._receive_signal,
            lease,
            name,
            step,
            verify=verify,
            run_id=lease.run_id,
            steps=(step,),
        )

    async def _verify_receive(self, step: StepRecord, cur: Any) -> Any:
        row = await self._fetch_one(cur, self._s.step_status, {"rid": step.run_id, "seq": step.seq})
        return NOT_APPLIED if row is None else bytes(row[2])

    async def _receive_signal(
        self, cur: Any, lease: Lease, name: str, step: StepRecord
    ) -> bytes | None:
        row = await self._fetch_one(cur, self._s.check_token, {"rid": lease.run_id})
        if row is None or row[0] != lease.token:
            raise LeaseLost(lease.run_id, await self._fence_detail(cur, lease))
        found = await self._fetch_one(
            cur, self._s.oldest_signal, {"rid": lease.run_id, "name": name}
        )
        if found is None:
            return None
        signal_id, payload = found[0], bytes(found[1])
        await self._execute(cur, self._s.consume_signal, {"sid": signal_id, "seq": step.seq})
        values = {**step_values(step), "rid": step.run_id, "result": payload}
        await cur.execute(self._s.replace_step.sql, self._s.replace_step.args(values))
        if cur.rowcount != 1:
            try:
                await cur.execute(self._s.insert_step.sql, self._s.insert_step.args(values))
            except self._integrity_error as exc:  # a finished step is never rewritten
                if not _duplicate(exc):
                    raise
                raise self._already_recorded(lease, exc) from exc
        return payload

    async def wait_for_work(self, *, workflows: Sequence[str], now: float, within: float) -> None:
        """Return when a run of ``workflows`` may have become runnable, or after ``within``.

        Woken by writes of this process at once, by other processes' writes through the
        runner (Postgres: ``NOTIFY``; SQLite: its data version, looked at every 50 ms), and at
        the next parked run's wake time or lease expiry.
        """
        if workflows:
            statement = self._s.due(tuple(sorted(set(workflows))))
            row = await self._call(False, self._fetch_one, statement, {})
            if row is not None and row[0] is not None:
                within = min(within, float(row[0]) - now)
        if within <= 0:
            return
        event = self._doorbell.work()
        try:
            await self._runner.wait(event, within)
        finally:
            self._doorbell.forget(event)

    async def watch(self, run_ids: Collection[str], *, within: float) -> bool:
        """Wait for a write to one of ``run_ids`` (see `durable.store.Store.watch`).

        This process's writes wake at once; other processes' writes do on Postgres through
        ``NOTIFY``, and on SQLite when its data version changes (a commit by another
        connection), looked at every 50 ms by one waiting task at a time.
        """
        self._check_open()
        event = self._doorbell.watcher(run_ids)
        try:
            return await self._runner.wait(event, within)
        finally:
            self._doorbell.forget(event)

    def wake_waiters(self) -> None:
        """Wake this process's tasks in `wait_for_work` (a test moved its clock)."""
        self._doorbell.ring()

    async def block_unreadable(self, *, now: float, limit: int = 100) -> list[RunRecord]:
        """Make runs whose stored status this version does not know ``blocked`` (see
        `durable.store.Store.block_unreadable`).

        Returns:
            The runs blocked now.
        """
        if limit <= 0:
            return []
        return await self._call(True, self._block_unreadable, now, limit)

    async def _block_unreadable(self, cur: Any, now: float, limit: int) -> list[RunRecord]:
        blocked = []
        for run_id, status in await self._fetch_all(cur, self._s.unknown_status, {"lim": limit}):
            text = unknown_status_text(run_id, status)
            values = {"rid": run_id, "old_status": status, "text": text, "now": now}
            if await self._execute(cur, self._s.block_run, values) == 1:
                row = await self._fetch_one(cur, self._s.get_run, {"rid": run_id})
                blocked.append(run_from_row(row))
        return blocked

    async def leased_on(self, host: str, *, workflows: Sequence[str]) -> list[RunRecord]:
        """Unfinished runs of ``workflows`` leased by an executor on ``host``."""
        if not workflows:
            return []
        statement = self._s.leased_on(tuple(sorted(set(workflows))))
        rows = await self._call(False, self._fetch_all, statement, {"host": host})
        return [run_from_row(row) for row in rows]

    async def prune(self, *, before: float, limit: int) -> int:
        """Delete up to ``limit`` finished runs last updated before ``before`` and without an
        unfinished ancestor, with their steps and signals, in one transaction (rows other
        transactions lock are skipped).

        Returns:
            How many runs were deleted.
        """
        if limit <= 0:
            return 0
        values = {"before": before, "lim": limit}
        return await self._call(True, self._prune, values)

    async def _prune(self, cur: Any, values: Mapping[str, Any]) -> int:
        ids = [{"rid": row[0]} for row in await self._fetch_all(cur, self._s.prune_ids, values)]
        if ids:
            for statement in (self._s.delete_signals, self._s.delete_steps, self._s.delete_run):
                await cur.executemany(statement.sql, [statement.args(v) for v in ids])
        return len(ids)

    async def close(self) -> None:
        """Close the connections. The store is unusable afterwards. Idempotent."""
        self._runner.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._conn is not None:
                    self._conn.close()
            finally:
                self._conn = None
                self._engine.dispose()

    async def __aenter__(self) -> Self:
        """Return the store itself."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        await self.close()


_BUSY_SERVER = (
    "too many clients",
    "starting up",
    "shutting down",
    "recovery mode",
    "terminating connection",
    "server closed the connection",
)


_UNFINISHED = frozenset(s.value for s in RunStatus if not s.finished)


def _interruption(row: Sequence[Any]) -> Interruption | None:
    """The requests in a `Statements.check_control` row that stop a starting step."""
    _, pause, cancel, cancelled_seq = row
    stop_cancel = bool(cancel) and cancelled_seq is None
    if stop_cancel or pause:
        return Interruption(cancel=stop_cancel, pause=bool(pause))
    return None


_UNREACHABLE_SERVER = (
    "connection refused",
    "could not translate host name",
    "name or service not known",
    "temporary failure in name resolution",
    "no route to host",
    "network is unreachable",
    "timeout expired",
    "timed out",
    "no such file or directory",  # no server's socket in the directory
)


def _duplicate(exc: BaseException) -> bool:
    """An integrity error that says the key is taken (not another constraint)."""
    return getattr(exc, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(exc)


def _server_busy(exc: BaseException) -> bool:
    """A Postgres failure worth waiting out when opening: the server answers but is
    restarting or full, or it dropped the connection."""
    reason = str(getattr(exc, "orig", None) or exc).lower()
    return not _server_unreachable(exc) and any(sign in reason for sign in _BUSY_SERVER)


def _server_unreachable(exc: BaseException) -> bool:
    """No Postgres server accepts connections where the URL points (refused, unknown host,
    no route, timed out)."""
    reason = str(getattr(exc, "orig", None) or exc).lower()
    return any(sign in reason for sign in _UNREACHABLE_SERVER)


def _create_private(path: str | None) -> None:
    """Create a new SQLite database file readable and writable by its owner only (0600);
    SQLite gives the ``-wal`` and ``-shm`` files it makes beside it the same mode. A file that
    exists keeps its mode; a path that cannot be created is left for SQLite to report."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError:
        pass


def _make_engine(
    url: str, durability: str, busy_timeout: float, pool_size: int
) -> tuple[Engine, bool, str]:
    """Build the engine for ``url``.

    Returns:
        ``(engine, is_sqlite, url_for_messages)``; the last has any password masked.
    """
    shown = redact(url)
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError(
            f"cannot use the store URL {shown!r}: it is not a URL; {_URL_HELP}"
        ) from None  # the driver's message would quote the URL unmasked
    if durability not in _SYNCHRONOUS:
        raise StoreError(
            f"cannot open the store {shown!r}: durability must be 'process' or 'power', "
            f"not {durability!r}"
        )
    if parsed.drivername in _SQLITE_DRIVERS:
        return _sqlite_engine(parsed, durability, busy_timeout), True, shown
    if parsed.drivername in _POSTGRES_DRIVERS:
        try:
            # No pre-ping (a round trip per call): a dead connection fails its transaction,
            # which `PostgresRunner` retries on a fresh one.
            if "connect_timeout" not in parsed.query:  # a stalled connect fails, or is retried
                parsed = parsed.update_query_dict({"connect_timeout": "10"})
            if not any(key.startswith("keepalives") for key in parsed.query):
                parsed = parsed.update_query_dict(_KEEPALIVES)  # a vanished peer is noticed
            engine = sa.create_engine(
                parsed.set(drivername="postgresql+psycopg"),
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_timeout=60,
            )
        except ImportError as exc:
            raise StoreError(
                f"cannot open the store {shown!r}: Postgres needs the psycopg (3) driver, "
                "which is not installed; install it with: pip install 'durable-sdk[postgres]'"
            ) from exc
        return engine, False, shown
    raise StoreError(
        f"cannot use the store URL {shown!r}: unknown scheme {parsed.drivername!r}; {_URL_HELP}"
    )


def _sqlite_engine(url: URL, durability: str, busy_timeout: float) -> Engine:
    _create_private(url.database)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})
    pragmas = (
        # SQLite waits for another process's write lock one slice at a time; the runner retries
        # (the event loop runs meanwhile) until busy_timeout in all.
        f"PRAGMA busy_timeout = {int(min(busy_timeout, BUSY_SLICE_SECONDS) * 1000)}",
        f"PRAGMA synchronous = {_SYNCHRONOUS[durability]}",
    )

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module: we emit BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    sa.event.listen(engine, "connect", on_connect)
    return engine
