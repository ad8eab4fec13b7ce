"""Running `SQLStore`'s transactions: `Calls` hands a transaction body to the store's runner
(`._sqlite.SQLiteRunner` or `._postgres.PostgresRunner`), words what fails and rings the
doorbell after a write that may make a run runnable; the statement helpers run one compiled
statement on the body's cursor.

A transaction body is ``async def body(cur, *args)``: the cursor's ``execute`` is awaited, so
the same bodies serve SQLite (whose cursor never waits) and Postgres. Every store call goes
through `Calls.call`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import anyio
import sqlalchemy as sa

from durable.store import Lease, LeaseLost, StepRecord, StoreError

from ._doorbell import Doorbell
from ._sql_errors import Messages
from ._statements import Compiled, Statements

__all__ = [
    "Calls",
    "Runner",
    "execute",
    "fence_detail",
    "fenced_write",
    "fetch_all",
    "fetch_one",
]

_T = TypeVar("_T")


class Runner(Protocol):
    """How `SQLStore` reaches its database: `SQLiteRunner` or `PostgresRunner`. The store's
    statements and rules are the same for both; the runners own transactions, retries and
    waiting for other processes' writes.

    Attributes:
        loses_replies: a commit's reply can be lost with the connection (Postgres): a write
            passes ``verify`` to re-read what it would have written.
        relaxes_by_statement: a relaxed start is its own statement (Postgres: commit without
            waiting for the WAL flush); otherwise ``no_flush`` relaxes it (SQLite).
    """

    loses_replies: bool
    relaxes_by_statement: bool

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
        """Run ``await fn(cursor, *args)`` in one transaction (see `Calls.call`)."""
        ...

    async def wait(self, event: anyio.Event, within: float) -> bool:
        """Wait for ``event`` (the store's doorbell) or another process's write."""
        ...

    def close(self) -> None:
        """Release the connections."""
        ...


class Calls:
    """One store's way to its database, as its transaction bodies and helpers see it.

    Attributes:
        s: the store's compiled statements.
        say: the wording of its errors.
        url: its URL for messages (password masked).
        integrity_error: the driver's integrity error (a key taken, a constraint).
        closed: the store was closed; every call raises `StoreError`.
    """

    def __init__(
        self,
        runner: Runner,
        doorbell: Doorbell,
        statements: Statements,
        messages: Messages,
        *,
        dbapi_error: type[Exception],
        integrity_error: type[Exception],
    ) -> None:
        self._runner = runner
        self._doorbell = doorbell
        self._dbapi_error = dbapi_error
        self.s = statements
        self.say = messages
        self.url = messages.url
        self.integrity_error = integrity_error
        self.closed = False
        self.loses_replies = runner.loses_replies
        self.relaxes_by_statement = runner.relaxes_by_statement

    async def call(
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
        bell: str | None = None,
        group: bool = False,
        pipelined: tuple[str, Sequence[Any]] | None = None,
    ) -> _T:
        """Run ``await fn(cursor, *args)`` in one transaction.

        ``notify``: the write may make a run runnable; waiting workers are woken (in this
        process, and on Postgres in every process, by a ``NOTIFY`` sent with the commit).
        ``verify``: Postgres only, see `._postgres.PostgresRunner.run`. ``single``: ``fn`` runs
        one statement (reads always do): Postgres sends no ``BEGIN``/``COMMIT`` around it.
        ``no_flush``: SQLite with ``durability="power"`` commits without waiting for an fsync
        (``synchronous=NORMAL`` for this transaction; the next full commit syncs it too).
        ``run_id`` and ``steps``: what the call reads or writes, named in its errors.
        ``bell``: what ``notify`` rings instead of ``run_id`` (a run's publications,
        `._rules.published_bell`). ``group``: the write may share one transaction with other
        runs' grouped writes made at the same moment (`._group.GroupCommit`); its outcome is
        its own all the same. ``pipelined``: ``fn``'s one statement and its parameters, when
        ``fn`` returns ``None`` as soon as that statement changed one row (Postgres sends
        grouped ones together, `._postgres.PostgresRunner.run`).
        """
        self.check_open()
        try:
            result = await self._runner.run(
                fn,
                args,
                write=write,
                verify=verify,
                notify=(bell or run_id or "") if notify else None,
                single=single or not write,
                no_flush=no_flush,
                group=group,
                pipelined=pipelined,
            )
        except (self._dbapi_error, sa.exc.DBAPIError) as exc:
            raise self.say.failure(exc, write, run_id, steps) from exc
        if notify:
            self._doorbell.ring(bell or run_id)
        return result

    def check_open(self) -> None:
        """Raise `StoreError` if the store was closed."""
        if self.closed:
            raise StoreError(f"the store {self.url!r} is closed; open a new SQLStore")


async def fetch_one(cur: Any, statement: Compiled, values: Mapping[str, Any]) -> Any:
    """Run ``statement``; its first row, or ``None``."""
    await cur.execute(statement.sql, statement.args(values))
    return cur.fetchone()


async def fetch_all(cur: Any, statement: Compiled, values: Mapping[str, Any]) -> list[Any]:
    """Run ``statement``; all its rows."""
    await cur.execute(statement.sql, statement.args(values))
    return list(cur.fetchall())


async def execute(cur: Any, statement: Compiled, values: Mapping[str, Any]) -> int:
    """Run ``statement``; the number of rows it wrote."""
    await cur.execute(statement.sql, statement.args(values))
    return int(cur.rowcount)


async def fence_detail(cur: Any, s: Statements, lease: Lease) -> str:
    """Why ``lease`` no longer fences its run (for `LeaseLost`)."""
    row = await fetch_one(cur, s.token, {"rid": lease.run_id})
    if row is None:
        return "the run no longer exists"
    return f"its fencing token is {row[0]}, not {lease.token}"


async def fenced_write(
    cur: Any, s: Statements, statement: Compiled, lease: Lease, values: Mapping[str, Any]
) -> None:
    """Run a statement fenced by ``lease`` that writes the run row.

    Raises:
        LeaseLost: it wrote nothing: the run's token is no longer ``lease.token``.
    """
    if await execute(cur, statement, values) != 1:
        raise LeaseLost(lease.run_id, await fence_detail(cur, s, lease))
