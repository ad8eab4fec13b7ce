"""`SQLStore`: the store protocol on SQLite (one file, zero setup) or Postgres (many workers).

Every statement is a SQLAlchemy Core statement over the tables of `._schema` (see
`._schema.Statements`), compiled once per store for its dialect and then executed straight on the
DBAPI cursor: the per-call overhead of a
SQLAlchemy ``Connection`` would cost more than the SQLite work itself on the hot path (one
`SQLStore.commit` per activity step).

SQLite: one persistent connection guarded by a `threading.Lock`; the calls run synchronously on
the calling thread (cheaper than a thread hop). The driver's implicit transactions are switched
off (``isolation_level = None``); every write transaction starts with ``BEGIN IMMEDIATE``, so it
holds the write lock from its first statement and concurrent writers (other processes sharing the
file) queue on ``busy_timeout`` instead of failing half-way. Reads are single statements in
autocommit mode. The file uses WAL; ``durability="process"`` (``synchronous=NORMAL``) survives a
crash of the process, ``durability="power"`` (``synchronous=FULL``) also a power loss.

Postgres (``postgresql://``, driver psycopg 3): a connection pool; each call runs in a worker
thread in its own transaction. The fencing and atomic-acquire statements are conditional
``UPDATE``s, which Postgres re-checks on the locked row, so they are safe under concurrency.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from durable.store import (
    Lease,
    LeaseLost,
    LeaseOwner,
    RunRecord,
    RunStatus,
    RunUpdate,
    SchemaVersionError,
    StepRecord,
    StoreError,
)

from ._schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Compiled,
    DurableModel,
    Statements,
    check_step_batch,
    run_from_row,
    run_values,
    step_from_row,
    step_values,
    tables,
)

__all__ = ["SQLStore"]

_T = TypeVar("_T")

_SQLITE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite"})
_POSTGRES_DRIVERS = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
_URL_HELP = "use sqlite:///path/to/file.db or postgresql://user:password@host/dbname"
_SYNCHRONOUS = {"process": "NORMAL", "power": "FULL"}


class _RunExists(Exception):
    """Internal: the run id is already recorded (raised inside the insert's transaction)."""


class SQLStore:
    """A `durable.store.Store` on SQLite or Postgres.

    Args:
        url: ``sqlite:///path/to/file.db`` (created if missing) or
            ``postgresql://user:password@host/dbname`` (needs ``pip install 'psycopg[binary]'``).
        durability: SQLite only. ``"process"`` (default): a committed step survives a crash of
            the process (WAL, ``synchronous=NORMAL``). ``"power"``: it also survives a power
            loss or OS crash (``synchronous=FULL``; each commit waits for an fsync).
        busy_timeout: SQLite only. Seconds a write waits for another process that holds the
            database's write lock before failing with `StoreError`.

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
    ) -> None:
        """Open (and create, if needed) the store at ``url``. See the class docstring."""
        self._lock = threading.Lock()
        self._closed = False
        self._busy_timeout = busy_timeout
        self._engine, self._sqlite, self.url = _make_engine(url, durability, busy_timeout)
        dbapi = self._engine.dialect.loaded_dbapi
        self._dbapi_error: type[Exception] = dbapi.Error
        self._integrity_error: type[Exception] = dbapi.IntegrityError
        try:
            conn = self._engine.connect()
            try:
                self._prepare(conn)
            except BaseException:
                conn.close()
                raise
        except (sa.exc.DBAPIError, self._dbapi_error) as exc:
            self._engine.dispose()
            raise StoreError(self._open_failure(exc)) from exc
        except BaseException:
            self._engine.dispose()
            raise
        self._s = Statements(self._engine.dialect)
        self._conn: sa.Connection | None = None
        self._raw: Any = None
        self._cur: Any = None
        if self._sqlite:
            self._conn = conn
            self._raw = conn.connection.dbapi_connection
            self._cur = self._raw.cursor()
        else:
            conn.close()

    def __repr__(self) -> str:
        return f"SQLStore({self.url!r})"

    # -- opening ------------------------------------------------------------------------------

    def _prepare(self, conn: sa.Connection) -> None:
        """Check the schema version, or create the tables in a database that has none."""
        for attempt in (1, 2):
            if self._sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                self._check_schema(conn)
                conn.commit()
                return
            except sa.exc.DBAPIError:
                conn.rollback()
                if self._sqlite or attempt == 2:
                    raise
                # Postgres: another process created the tables at the same moment; look again.
            except BaseException:
                conn.rollback()
                raise

    def _check_schema(self, conn: sa.Connection) -> None:
        runs, _, schema = tables()
        inspector = sa.inspect(conn)
        version: int | None = None
        if inspector.has_table(schema.name):
            version = conn.execute(
                sa.select(schema.c.version).where(schema.c.id == 1)
            ).scalar_one_or_none()
        if version is None:
            if inspector.has_table(runs.name):
                raise StoreError(
                    f"the database {self.url!r} has a {runs.name} table but no durable schema "
                    "version: it is not a durable database (or a damaged one); point the URL at "
                    "a new database or at one created by durable"
                )
            DurableModel.metadata.create_all(conn)
            conn.execute(sa.insert(schema).values(id=1, version=SCHEMA_VERSION))
        elif version > SCHEMA_VERSION:
            raise SchemaVersionError(self.url, version, SCHEMA_VERSION)
        elif version < SCHEMA_VERSION and version >= 1:
            false = "0" if self._sqlite else "false"
            for step in range(version, SCHEMA_VERSION):
                for ddl in MIGRATIONS[step]:
                    conn.exec_driver_sql(ddl.format(false=false))
            DurableModel.metadata.create_all(conn)  # tables added since (checkfirst)
            conn.execute(sa.update(schema).where(schema.c.id == 1).values(version=SCHEMA_VERSION))
        elif version < 1:
            raise StoreError(
                f"the database {self.url!r} has an invalid durable schema version {version}; "
                "it is damaged: point the URL at another database"
            )

    def _open_failure(self, exc: BaseException) -> str:
        reason = str(getattr(exc, "orig", None) or exc).strip()
        if self._sqlite and "not a database" in reason:
            return (
                f"cannot open the durable store {self.url!r}: the file is not a SQLite database "
                f"({reason}); point the URL at a new file or at a database created by durable"
            )
        return (
            f"cannot open the durable store {self.url!r}: {reason}; check the URL and that the "
            "database (for SQLite, the file's directory) exists and is reachable"
        )

    # -- running statements -------------------------------------------------------------------

    async def _call(self, write: bool, fn: Callable[..., _T], *args: Any) -> _T:
        if self._sqlite:
            return self._run_sync(write, fn, args)
        return await anyio.to_thread.run_sync(self._run_sync, write, fn, args)

    def _run_sync(self, write: bool, fn: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        try:
            if self._sqlite:
                with self._lock:
                    self._check_open()
                    return self._transaction(self._raw, self._cur, write, fn, args)
            self._check_open()
            conn = self._engine.raw_connection()
            try:
                return self._transaction(conn, conn.cursor(), write, fn, args)
            finally:
                conn.close()
        except (self._dbapi_error, sa.exc.DBAPIError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip()
            if self._sqlite and "locked" in reason:
                reason += (
                    f"; another process held the database's write lock for longer than "
                    f"busy_timeout ({self._busy_timeout:g} s)"
                )
            raise StoreError(f"the durable store {self.url!r} failed: {reason}") from exc

    def _transaction(
        self, conn: Any, cur: Any, write: bool, fn: Callable[..., _T], args: tuple[Any, ...]
    ) -> _T:
        """Run ``fn(cur, *args)`` in one transaction.

        SQLite: a write starts with ``BEGIN IMMEDIATE``; a read is one autocommit statement.
        Postgres: the driver opens the transaction implicitly.
        """
        if self._sqlite:
            if not write:
                return fn(cur, *args)
            cur.execute("BEGIN IMMEDIATE")
        try:
            result = fn(cur, *args)
        except BaseException:
            try:
                conn.rollback()
            except self._dbapi_error:
                pass  # the original error says more
            raise
        conn.commit()
        return result

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.url!r} is closed; open a new SQLStore")

    @staticmethod
    def _fetch_one(cur: Any, statement: Compiled, values: Mapping[str, Any]) -> Any:
        cur.execute(statement.sql, statement.args(values))
        return cur.fetchone()

    @staticmethod
    def _fetch_all(cur: Any, statement: Compiled, values: Mapping[str, Any]) -> list[Any]:
        cur.execute(statement.sql, statement.args(values))
        return list(cur.fetchall())

    @staticmethod
    def _execute(cur: Any, statement: Compiled, values: Mapping[str, Any]) -> int:
        cur.execute(statement.sql, statement.args(values))
        return int(cur.rowcount)

    def _fence_detail(self, cur: Any, lease: Lease) -> str:
        row = self._fetch_one(cur, self._s.token, {"rid": lease.run_id})
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
            await self._call(True, self._insert_run, run_values(run))
        except _RunExists as exc:
            # Someone recorded the id first (maybe at the same moment): theirs is the run.
            existing = await self.get_run(run.id)
            if existing is None:
                raise StoreError(
                    f"cannot record run {run.id!r} in {self.url!r}: {exc.__cause__}"
                ) from exc
            return existing, False
        return run, True

    def _insert_run(self, cur: Any, values: Mapping[str, Any]) -> None:
        try:
            self._execute(cur, self._s.insert_run, values)
        except self._integrity_error as exc:
            raise _RunExists() from exc

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or ``None``."""
        row = await self._call(False, self._fetch_one, self._s.get_run, {"rid": run_id})
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
        token = await self._call(True, self._acquire, values)
        return None if token is None else Lease(run_id, owner, token, expires)

    def _acquire(self, cur: Any, values: Mapping[str, Any]) -> int | None:
        if self._execute(cur, self._s.acquire, values) != 1:
            return None
        row = self._fetch_one(cur, self._s.token, {"rid": values["rid"]})
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
        return await self._call(True, self._claim, statement, values, owner, now, duration)

    def _claim(
        self,
        cur: Any,
        statement: Compiled,
        values: Mapping[str, Any],
        owner: LeaseOwner,
        now: float,
        duration: float,
    ) -> list[tuple[RunRecord, Lease]]:
        claimed = []
        for row in self._fetch_all(cur, statement, values):
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
            token = self._acquire(cur, acquire)
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
        await self._call(True, self._fenced_write, self._s.renew, lease, values)
        return Lease(lease.run_id, lease.owner, lease.token, expires)

    def _fenced_write(
        self, cur: Any, statement: Compiled, lease: Lease, values: Mapping[str, Any]
    ) -> None:
        if self._execute(cur, statement, values) != 1:
            raise LeaseLost(lease.run_id, self._fence_detail(cur, lease))

    async def release_lease(self, lease: Lease) -> None:
        """Clear owner / host / pid / expiry if the lease is still ours; otherwise do nothing."""
        values = {"rid": lease.run_id, "token": lease.token}
        await self._call(True, self._execute, self._s.release, values)

    async def load_steps(self, run_id: str) -> list[StepRecord]:
        """Every recorded step of the run, ordered by ``seq``."""
        rows = await self._call(False, self._fetch_all, self._s.load_steps, {"rid": run_id})
        return [step_from_row(row) for row in rows]

    async def commit(
        self,
        lease: Lease,
        steps: Sequence[StepRecord] = (),
        update: RunUpdate | None = None,
        *,
        now: float,
        outcomes: Sequence[StepRecord] = (),
    ) -> None:
        """Insert ``steps``, replace ``outcomes`` and apply ``update`` in one transaction.

        With an ``update``, ``updated_at`` becomes ``now``; a ``None`` ``result`` / ``error`` /
        ``cancelled_seq`` keeps the stored value; ``error_text`` is always replaced.

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``; nothing was written.
            StoreError: a step is already recorded, repeats a ``seq`` in the batch, belongs to
                another run, or an outcome has no ``started`` step to replace; nothing was
                written.
        """
        check_step_batch(lease.run_id, [*steps, *outcomes])
        values: dict[str, Any] = {"rid": lease.run_id, "token": lease.token, "now": now}
        if update is None:
            statement = self._s.check_token
        else:
            statement = self._s.update_release if update.release else self._s.update
            values["new_status"] = str(update.status)
            values["new_result"] = update.result
            values["new_error"] = update.error
            values["new_error_text"] = update.error_text
            values["new_cancelled_seq"] = update.cancelled_seq
            values["new_wake_at"] = update.wake_at
        insert = self._s.insert_step
        rows = [insert.args(step_values(step)) for step in steps]
        replacements = [
            self._s.replace_step.args({**step_values(step), "rid": step.run_id})
            for step in outcomes
        ]
        await self._call(True, self._commit, statement, lease, values, rows, replacements)

    def _commit(
        self,
        cur: Any,
        statement: Compiled,
        lease: Lease,
        values: Mapping[str, Any],
        rows: list[Any],
        replacements: list[Any],
    ) -> None:
        if statement is self._s.check_token:
            row = self._fetch_one(cur, statement, {"rid": lease.run_id})
            if row is None or row[0] != lease.token:
                raise LeaseLost(lease.run_id, self._fence_detail(cur, lease))
        else:
            self._fenced_write(cur, statement, lease, values)
        for args in replacements:
            cur.execute(self._s.replace_step.sql, args)
            if cur.rowcount != 1:
                raise StoreError(
                    f"cannot record the outcome of a step of run {lease.run_id!r} in "
                    f"{self.url!r}: it has no recorded intent (status 'started') to replace; "
                    "nothing was written"
                )
        if not rows:
            return
        try:
            cur.executemany(self._s.insert_step.sql, rows)
        except self._integrity_error as exc:
            raise StoreError(
                f"cannot commit steps to run {lease.run_id!r} in {self.url!r}: one of them is "
                f"already recorded (a step is written once); nothing was written ({exc})"
            ) from exc

    async def request_cancel(self, run_id: str, *, now: float) -> RunRecord | None:
        """Set ``cancel_requested`` on an unfinished run.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        values = {"rid": run_id, "now": now}
        return await self._call(True, self._request, self._s.request_cancel, values)

    async def request_pause(self, run_id: str, *, now: float) -> RunRecord | None:
        """Set ``pause_requested``; a run nobody executes is ``paused`` at once.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        values = {"rid": run_id, "now": now}
        return await self._call(True, self._request, self._s.request_pause, values)

    async def resume(self, run_id: str, *, now: float) -> RunRecord | None:
        """Clear ``pause_requested``; a ``paused`` run becomes ``pending``.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        values = {"rid": run_id, "now": now}
        return await self._call(True, self._request, self._s.resume, values)

    async def request_rollback(self, run_id: str, *, now: float) -> RunRecord | None:
        """Turn a ``completed`` run into a ``compensating`` one with ``rollback_requested``.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        values = {"rid": run_id, "now": now}
        return await self._call(True, self._request, self._s.request_rollback, values)

    def _request(
        self, cur: Any, statement: Compiled, values: Mapping[str, Any]
    ) -> RunRecord | None:
        """Apply a conditional request update and return the run, in one transaction.

        If the update matched nothing but the run now qualifies (created or changed by a
        concurrent transaction between the two statements, as Postgres' read-committed
        statements can see), the update is tried again, so a request is never reported done
        without having been applied.
        """
        for _ in range(5):
            changed = self._execute(cur, statement, values)
            row = self._fetch_one(cur, self._s.get_run, {"rid": values["rid"]})
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
        self, run_id: str, name: str, payload: bytes, *, now: float
    ) -> RunRecord | None:
        """Buffer signal ``name`` for an unfinished run.

        Returns:
            The run (nothing recorded when it is finished), or ``None`` when missing.
        """
        values = {"rid": run_id, "name": name, "payload": payload, "now": now}
        return await self._call(True, self._send_signal, values)

    def _send_signal(self, cur: Any, values: Mapping[str, Any]) -> RunRecord | None:
        # The run row is locked (Postgres FOR SHARE) so it cannot finish between the check and
        # the insert: a signal is never buffered for a run that no longer waits.
        row = self._fetch_one(cur, self._s.run_status_locked, {"rid": values["rid"]})
        if row is None:
            return None
        if not RunStatus(row[0]).finished:
            self._execute(cur, self._s.insert_signal, values)
            self._execute(cur, self._s.wake_waiting, {"rid": values["rid"], "now": values["now"]})
        found = self._fetch_one(cur, self._s.get_run, {"rid": values["rid"]})
        return None if found is None else run_from_row(found)

    async def wake(self, run_id: str, *, now: float) -> None:
        """Make a parked run due now (see `durable.store.Store.wake`)."""
        await self._call(True, self._execute, self._s.wake_parked, {"rid": run_id, "now": now})

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
        return await self._call(True, self._receive_signal, lease, name, step)

    def _receive_signal(self, cur: Any, lease: Lease, name: str, step: StepRecord) -> bytes | None:
        row = self._fetch_one(cur, self._s.check_token, {"rid": lease.run_id})
        if row is None or row[0] != lease.token:
            raise LeaseLost(lease.run_id, self._fence_detail(cur, lease))
        found = self._fetch_one(cur, self._s.oldest_signal, {"rid": lease.run_id, "name": name})
        if found is None:
            return None
        signal_id, payload = found[0], bytes(found[1])
        self._execute(cur, self._s.consume_signal, {"sid": signal_id, "seq": step.seq})
        values = {**step_values(step), "rid": step.run_id, "result": payload}
        cur.execute(self._s.replace_step.sql, self._s.replace_step.args(values))
        if cur.rowcount != 1:
            cur.execute(self._s.insert_step.sql, self._s.insert_step.args(values))
        return payload

    async def close(self) -> None:
        """Close the connections. The store is unusable afterwards. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._cur is not None:
                    self._cur.close()
                if self._conn is not None:
                    self._conn.close()
            finally:
                self._cur = self._raw = self._conn = None
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


def _make_engine(url: str, durability: str, busy_timeout: float) -> tuple[Engine, bool, str]:
    """Build the engine for ``url``.

    Returns:
        ``(engine, is_sqlite, url_for_messages)``; the last has any password masked.
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"cannot use the store URL {url!r}: it is not a URL; {_URL_HELP}") from exc
    shown = url if parsed.password is None else parsed.render_as_string(hide_password=True)
    if durability not in _SYNCHRONOUS:
        raise StoreError(
            f"cannot open the store {shown!r}: durability must be 'process' or 'power', "
            f"not {durability!r}"
        )
    if parsed.drivername in _SQLITE_DRIVERS:
        return _sqlite_engine(parsed, durability, busy_timeout), True, shown
    if parsed.drivername in _POSTGRES_DRIVERS:
        try:
            engine = sa.create_engine(
                parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True
            )
        except ImportError as exc:
            raise StoreError(
                f"cannot open the store {shown!r}: Postgres needs the psycopg (3) driver; "
                "install it with: pip install 'psycopg[binary]'"
            ) from exc
        return engine, False, shown
    raise StoreError(
        f"cannot use the store URL {shown!r}: unknown scheme {parsed.drivername!r}; {_URL_HELP}"
    )


def _sqlite_engine(url: URL, durability: str, busy_timeout: float) -> Engine:
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})
    pragmas = (
        f"PRAGMA busy_timeout = {max(0, int(busy_timeout * 1000))}",
        "PRAGMA journal_mode = WAL",
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
