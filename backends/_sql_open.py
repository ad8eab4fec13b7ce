"""Opening a `SQLStore`'s database: the URL and the engine, the connection (waiting for a busy
or, if asked, an absent Postgres server), the schema check, creation and upgrade, the message
for a database that cannot be opened, and the runner the store's calls go through.

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
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import URL, Engine, make_url

from durable.store import SchemaVersionError, StoreError

from ._doorbell import Doorbell
from ._redact import redact, secrets_in
from ._schema import SCHEMA_VERSION, DurableModel, migration_ddl, tables
from ._sql_calls import Calls, Runner
from ._sql_errors import Messages
from ._sqlite import BUSY_SLICE_SECONDS, SQLiteCursor, SQLiteRunner
from ._statements import Statements

__all__ = ["Database", "open_database"]

log = logging.getLogger("durable.store")

_SQLITE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite"})
_POSTGRES_DRIVERS = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
_URL_HELP = "use sqlite:///path/to/file.db or postgresql://user:password@host/dbname"
_SYNCHRONOUS = {"process": "NORMAL", "power": "FULL"}
_KEEPALIVES = {  # TCP keepalives: a vanished server is noticed even on an idle connection
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}
_SCHEMA_LOCK = 0x64757261626C65  # pg_advisory_xact_lock key for creating / upgrading the schema


class Database:
    """An opened store database: what `SQLStore` keeps of it, and closes.

    Attributes:
        url: the URL for messages (password masked).
        schema_change: ``"current"``, ``"created"`` or ``"upgraded from version N"``.
        runner: runs the store's transactions.
        calls: the store's way to run them (its statements, the wording of its errors).
    """

    def __init__(
        self,
        url: str,
        schema_change: str,
        engine: Engine,
        conn: sa.Connection | None,
        runner: Runner,
        calls: Calls,
    ) -> None:
        self.url = url
        self.schema_change = schema_change
        self.runner = runner
        self.calls = calls
        self._engine = engine  # it opened the database (Postgres: only that)
        self._conn = conn  # SQLite's one connection; None on Postgres
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop the runner, close the connections and refuse further calls. Idempotent."""
        self.runner.close()
        with self._lock:
            if self.calls.closed:
                return
            self.calls.closed = True
            try:
                if self._conn is not None:
                    self._conn.close()
            finally:
                self._conn = None
                self._engine.dispose()


def open_database(
    url: str,
    *,
    durability: str,
    busy_timeout: float,
    pool_size: int,
    reconnect_timeout: float,
    wait_for_server: float,
    doorbell: Doorbell,
    prepared_statements: bool = True,
) -> Database:
    """Open (and create or upgrade, if needed) the database at ``url`` for a `SQLStore`; the
    arguments are `SQLStore`'s. ``doorbell``: the store's; rung after its own writes, and by
    the Postgres runner for each notification of another process's write.

    Raises:
        StoreError: an argument is invalid, the URL is not supported, the database cannot be
            opened, or it is not a durable database.
        SchemaVersionError: the database was written by a newer version of durable.
    """
    if not isinstance(pool_size, int) or pool_size < 1:
        raise StoreError(f"SQLStore(pool_size=...) must be an int >= 1, not {pool_size!r}")
    if not isinstance(prepared_statements, bool):
        raise StoreError(
            f"SQLStore(prepared_statements=...) must be True or False, not {prepared_statements!r}"
        )
    for name, seconds in (
        ("reconnect_timeout", reconnect_timeout),
        ("wait_for_server", wait_for_server),
    ):
        if not seconds >= 0:
            raise StoreError(f"SQLStore({name}=...) must be a number of seconds >= 0")
    prepared_statements = _prepared_option(url, prepared_statements)
    secrets = secrets_in(url)
    engine, sqlite, shown = _make_engine(url, durability, busy_timeout, pool_size)
    messages = Messages(shown, secrets, sqlite=sqlite, busy_timeout=busy_timeout)
    dbapi = engine.dialect.loaded_dbapi
    dbapi_error: type[Exception] = dbapi.Error
    conn, schema_change = _connect(
        engine, messages, dbapi_error, sqlite, reconnect_timeout, wait_for_server
    )
    statements = Statements(
        engine.dialect if sqlite else PGDialect_psycopg(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
    )
    kept: sa.Connection | None = None
    runner: Runner
    if sqlite:
        kept = conn
        raw: Any = conn.connection.dbapi_connection
        runner = SQLiteRunner(
            raw,
            SQLiteCursor(raw.cursor()),
            power_safe=durability == "power",
            busy_timeout=busy_timeout,
            dbapi_error=dbapi_error,
        )
    else:
        # One NOTIFY channel per database schema: stores in other schemas of the same
        # database (another application, another test session) do not wake each other.
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        conn.close()
        engine.dispose()  # it only prepared the schema; calls use the runner's pool
        from ._postgres import PostgresRunner

        conninfo = engine.url.set(drivername="postgresql")
        runner = PostgresRunner(
            conninfo.render_as_string(hide_password=False),
            shown,
            pool_size,
            float(reconnect_timeout),
            f"durable.{schema}",
            doorbell,
            prepared_statements=prepared_statements,
        )
    calls = Calls(
        runner,
        doorbell,
        statements,
        messages,
        dbapi_error=dbapi_error,
        integrity_error=dbapi.IntegrityError,
    )
    return Database(shown, schema_change, engine, kept, runner, calls)


def _connect(
    engine: Engine,
    messages: Messages,
    dbapi_error: type[Exception],
    sqlite: bool,
    reconnect_timeout: float,
    wait_for_server: float,
) -> tuple[sa.Connection, str]:
    """Connect and prepare the schema, retrying while a Postgres server is busy (or, within
    ``wait_for_server``, absent).

    Returns:
        The connection and the schema change (see `Database.schema_change`).
    """
    started = time.monotonic()
    delay = 0.1
    while True:
        try:
            conn = engine.connect()
            try:
                return conn, _prepare(conn, engine, messages.url, sqlite)
            except BaseException:
                conn.close()
                raise
        except (sa.exc.DBAPIError, dbapi_error) as exc:
            # A server that answers but is busy is waited for as long as a call would be;
            # one that accepts no connection at all only when the caller asked to wait.
            patience = -1.0
            if not sqlite and _server_busy(exc):
                patience = max(reconnect_timeout, wait_for_server)
            elif not sqlite and _server_unreachable(exc):
                patience = wait_for_server
            waited = time.monotonic() - started
            if waited + delay > patience:
                engine.dispose()
                raise StoreError(
                    _open_failure(exc, wait_for_server, engine, messages, sqlite)
                ) from exc
            log.warning(
                "durable store %s: %s; retrying in %.1f s",
                messages.url,
                messages.reason(exc),
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        except BaseException:
            engine.dispose()
            raise


def _prepare(conn: sa.Connection, engine: Engine, url: str, sqlite: bool) -> str:
    """Check the schema version; create or upgrade the tables only when they are missing or
    older. An up-to-date database is only read (no DDL, no lock), so an application role
    with SELECT, INSERT, UPDATE and DELETE is enough.

    Returns:
        ``"current"``, ``"created"`` or ``"upgraded from version N"``.
    """
    version = _read_version(conn, url)
    conn.rollback()
    if sqlite:
        # Only now, when the file is known to be durable's (or new): a database durable
        # refuses is left exactly as it was, in its own journal mode.
        conn.exec_driver_sql("PRAGMA journal_mode = WAL")
        conn.rollback()
    if version == SCHEMA_VERSION:
        return "current"
    # Creating or upgrading: one process at a time (several workers may start together on
    # an empty database). SQLite: the write lock; Postgres: a transaction advisory lock.
    if sqlite:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
    try:
        change = _create_or_upgrade(conn, engine, _read_version(conn, url))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return change


def _read_version(conn: sa.Connection, url: str) -> int | None:
    """The recorded schema version, or ``None`` in a database without durable's tables.

    Raises:
        StoreError: the database has durable's table names but is not a durable database,
            or it records an invalid version.
        SchemaVersionError: a newer version of durable wrote the database.
    """
    runs, _, _ = tables()
    version = _recorded_version(conn)
    if version is None:
        if sa.inspect(conn).has_table(runs.name):
            raise StoreError(
                f"the database {url!r} has a {runs.name} table but no durable schema "
                "version: it is not a durable database (or a damaged one); point the URL at "
                "a new database or at one created by durable"
            )
        return None
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(url, version, SCHEMA_VERSION)
    if version < 1:
        raise StoreError(
            f"the database {url!r} has an invalid durable schema version {version}; "
            "it is damaged: point the URL at another database"
        )
    return int(version)


def _recorded_version(conn: sa.Connection) -> int | None:
    """The version in ``durable_schema``, or ``None`` when the table or its row is missing."""
    _, _, schema = tables()
    if not sa.inspect(conn).has_table(schema.name):
        return None
    found = conn.execute(sa.select(schema.c.version).where(schema.c.id == 1))
    version: int | None = found.scalar_one_or_none()
    return version


def _create_or_upgrade(conn: sa.Connection, engine: Engine, version: int | None) -> str:
    _, _, schema = tables()
    if version is None:
        DurableModel.metadata.create_all(conn)
        conn.execute(sa.insert(schema).values(id=1, version=SCHEMA_VERSION))
        return "created"
    if version == SCHEMA_VERSION:
        return "current"  # another process did it while we waited for the lock
    for step in range(version, SCHEMA_VERSION):
        existing = frozenset(sa.inspect(conn).get_table_names())
        for ddl in migration_ddl(step, engine.dialect, existing):
            conn.exec_driver_sql(ddl)
    DurableModel.metadata.create_all(conn)  # tables added since (checkfirst)
    conn.execute(sa.update(schema).where(schema.c.id == 1).values(version=SCHEMA_VERSION))
    return f"upgraded from version {version}"


def _open_failure(
    exc: BaseException, waited: float, engine: Engine, messages: Messages, sqlite: bool
) -> str:
    """The message for a database that cannot be opened; ``waited``: the seconds the
    caller let an unreachable server take (``wait_for_server``)."""
    reason = messages.reason(exc)
    shown = messages.url
    if sqlite and "not a database" in reason:
        return (
            f"cannot open the durable store {shown!r}: the file is not a SQLite database "
            f"({reason}); point the URL at a new file or at a database created by durable"
        )
    if not sqlite and _server_unreachable(exc):
        url = engine.url
        host = url.host or url.query.get("host") or "localhost"
        port = url.port or url.query.get("port") or 5432
        after = f" (waited {waited:g} s: wait_for_server)" if waited > 0 else ""
        return (
            f"cannot open the durable store {shown!r}: no Postgres server accepts "
            f"connections at host {host!r}, port {port}{after}: {reason}; start the server "
            "or correct the host and port in the URL. A worker that may start before its "
            "database can wait for it: SQLStore(url, wait_for_server=SECONDS), or "
            "durable worker --wait-for-db SECONDS"
        )
    return (
        f"cannot open the durable store {shown!r}: {reason}; check the URL and that the "
        "database (for SQLite, the file's directory) exists and is reachable"
    )


_BUSY_SERVER = (
    "too many clients",
    "starting up",
    "shutting down",
    "recovery mode",
    "terminating connection",
    "server closed the connection",
)


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


_PREPARED_OPTION = "prepared_statements"
_BOOLEANS = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}


def _prepared_option(url: str, given: bool) -> bool:
    """``SQLStore(prepared_statements=...)``, or ``?prepared_statements=false`` in a Postgres
    URL (for stores opened from a URL alone: ``DURABLE_URL``, the CLI); the URL's wins."""
    try:
        value = make_url(url).query.get(_PREPARED_OPTION)
    except sa.exc.ArgumentError:
        return given  # not a URL: opening it says so
    if value is None:
        return given
    if isinstance(value, tuple) or value.lower() not in _BOOLEANS:
        raise StoreError(
            f"cannot open the store {redact(url)!r}: ?{_PREPARED_OPTION}= must be true or "
            f"false, not {value!r}"
        )
    return _BOOLEANS[value.lower()]


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
            # durable's own option (see `_prepared_option`), not libpq's
            parsed = parsed.difference_update_query([_PREPARED_OPTION])
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
