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

The parts: `._sql_open` opens the database (engine, schema, runner), `._sql_calls` runs the
transactions and their statements, `._sql_errors` words what fails; the transaction bodies
are `._sql_runs` (runs and leases), `._sql_commits` (fenced writes), `._sql_requests`
(requests and signals), `._sql_schedules` and `._sql_streams` (events and streams);
`._sql_waits` waits for work and writes. `SQLStore` holds them together.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from types import TracebackType
from typing import Literal, Self

from durable.store import (
    EventWrite,
    Interruption,
    Lease,
    LeaseOwner,
    PayloadTrust,
    QueueSettings,
    RunQuery,
    RunRecord,
    RunStatus,
    RunUpdate,
    ScheduleRecord,
    StepRecord,
    StreamEntry,
    StreamWrite,
)

from ._doorbell import Doorbell
from ._rules import published_bell
from ._sql_commits import Commits
from ._sql_open import open_database
from ._sql_queues import QueueStatements
from ._sql_requests import Requests
from ._sql_runs import Runs
from ._sql_schedules import Schedules
from ._sql_streams import Streams
from ._sql_waits import Waits

__all__ = ["SQLStore"]


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
        prepared_statements: Postgres only. ``True`` (default): a statement sent a second
            time on a connection is prepared there (parsed and planned once per connection).
            ``False`` behind a connection pooler in transaction mode that does not keep
            prepared statements (PgBouncer before 1.21, or without ``max_prepared_statements``).
            ``?prepared_statements=false`` in the URL does the same (and wins).
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
        prepared_statements: bool = True,
        secret_keys: str | bytes | Iterable[str | bytes] | None = None,
        allowed_codecs: Iterable[str] | None = None,
    ) -> None:
        """Open (and create, if needed) the store at ``url``. See the class docstring."""
        self.payload_trust = PayloadTrust.configure(secret_keys, allowed_codecs, owner="SQLStore")
        self._doorbell = Doorbell()
        self._db = db = open_database(
            url,
            durability=durability,
            busy_timeout=busy_timeout,
            pool_size=pool_size,
            reconnect_timeout=reconnect_timeout,
            wait_for_server=wait_for_server,
            doorbell=self._doorbell,
            prepared_statements=prepared_statements,
        )
        self.url, self.schema_change = db.url, db.schema_change
        self._runner, self._calls, self._s = db.runner, db.calls, db.calls.s
        self._runs = Runs(self._calls, QueueStatements(self._s))
        self._commits = Commits(self._calls)
        self._requests = Requests(self._calls)
        self._waits = Waits(self._calls, db.runner, self._doorbell)
        self._schedules = Schedules(self._calls, db.runner, self._doorbell)
        self._streams = Streams(self._calls)

    def __repr__(self) -> str:
        return f"SQLStore({self.url!r})"

    async def create_run(
        self, run: RunRecord, steps: Sequence[StepRecord] = ()
    ) -> tuple[RunRecord, bool]:
        """Insert ``run`` unless a run with its id exists, with ``steps``, in one transaction.

        Returns:
            ``(stored, created)``: the record now in the store, and whether this call created it.
        """
        return await self._runs.create_run(run, steps)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or ``None``."""
        return await self._runs.get_run(run_id)

    async def find_runs(self, query: RunQuery) -> list[RunRecord]:
        """The runs ``query`` selects, newest first, at most ``query.limit``."""
        return await self._runs.find_runs(query)

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """At most ``limit`` runs (only those with ``status``), oldest first (created_at, id)."""
        return await self._runs.list_runs(status=status, limit=limit)

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
        return await self._runs.acquire_lease(
            run_id, owner, now=now, duration=duration, takeover_token=takeover_token
        )

    async def claim(
        self,
        owner: LeaseOwner,
        *,
        now: float,
        duration: float,
        limit: int,
        workflows: Sequence[str],
        queues: Collection[str] | None = None,
    ) -> list[tuple[RunRecord, Lease]]:
        """Atomically lease up to ``limit`` runnable runs of ``workflows`` (and ``queues``),
        queued ones only while their queue's limits allow (see `durable.store.Store.claim`).
        Postgres skips rows other claimers hold (``FOR UPDATE SKIP LOCKED``) and locks each
        queue's row while it counts and leases its runs; SQLite's ``BEGIN IMMEDIATE``
        serialises claimers.

        Returns:
            The claimed runs (as before the claim) with their new leases.
        """
        return await self._runs.claim(
            owner, now=now, duration=duration, limit=limit, workflows=workflows, queues=queues
        )

    async def put_queue(self, settings: QueueSettings) -> None:
        """Record a queue's limits, replacing the stored ones (the latest call wins), and wake
        waiting workers, in this process and others."""
        await self._runs.put_queue(settings)

    async def list_queues(self) -> list[QueueSettings]:
        """Every queue's stored limits, by name."""
        return await self._runs.list_queues()

    async def next_due(
        self, *, workflows: Sequence[str], now: float, queues: Collection[str] | None = None
    ) -> float | None:
        """When `claim` may next take a run by time alone (see
        `durable.store.Store.next_due`)."""
        return await self._runs.next_due(workflows, now, queues)

    async def renew_lease(self, lease: Lease, *, now: float, duration: float) -> Lease:
        """Extend the lease to ``now + duration`` (``updated_at`` is left alone).

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``.
        """
        return await self._commits.renew_lease(lease, now=now, duration=duration)

    async def release_lease(self, lease: Lease) -> None:
        """Clear owner / host / pid / expiry if the lease is still ours; otherwise do nothing."""
        await self._commits.release_lease(lease)

    async def load_steps(self, run_id: str) -> list[StepRecord]:
        """Every recorded step of the run, ordered by ``seq``."""
        return await self._runs.load_steps(run_id)

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
        return await self._commits.commit(
            lease, steps, update, now, outcomes, check_requests, relaxed
        )

    async def request_cancel(self, run_id: str, *, now: float) -> RunRecord | None:
        """Set ``cancel_requested`` on an unfinished run; the run as it is now, or ``None``
        when missing."""
        return await self._requests.request(self._s.request_cancel, run_id, now)

    async def request_pause(self, run_id: str, *, now: float) -> RunRecord | None:
        """Set ``pause_requested``; a run nobody executes is ``paused`` at once. The run as it
        is now, or ``None`` when missing."""
        return await self._requests.request(self._s.request_pause, run_id, now)

    async def resume(self, run_id: str, *, now: float) -> RunRecord | None:
        """Clear ``pause_requested``; a ``paused`` run becomes ``pending``. The run as it is
        now, or ``None`` when missing."""
        return await self._requests.request(self._s.resume, run_id, now)

    async def request_rollback(self, run_id: str, *, now: float) -> RunRecord | None:
        """Turn a ``completed`` run into a ``compensating`` one with ``rollback_requested``.
        The run as it is now, or ``None`` when missing."""
        return await self._requests.request(self._s.request_rollback, run_id, now)

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
        return await self._requests.send_signal(
            run_id, name, payload, now=now, idempotency_key=idempotency_key
        )

    async def wake(self, run_id: str, *, now: float) -> None:
        """Make a parked run due now (see `durable.store.Store.wake`)."""
        await self._requests.wake(run_id, now=now)

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
        return await self._requests.receive_signal(lease, name, step, now=now)

    # -- events and streams (see `durable.store.Store`; `._sql_streams`) ----------------------

    async def publish(
        self,
        lease: Lease,
        write: EventWrite | StreamWrite,
        *,
        steps: Sequence[StepRecord] = (),
        now: float,
    ) -> int:
        """Record ``steps`` and set the event or append to the stream, in one transaction
        fenced by ``lease`` (see `durable.store.Store.publish`); wakes the run's readers in
        every process (Postgres: ``NOTIFY``; SQLite: its data version).

        Returns:
            The position of the last stream entry written (0 for an event).
        """
        return await self._streams.publish(lease, write, steps, now)

    async def withdraw(
        self, lease: Lease, *, generation: int, seq: int, below: int, now: float
    ) -> int:
        """Withdraw the stream entries of step ``seq``'s attempts below ``below``, with their
        markers, in one fenced transaction (see `durable.store.Store.withdraw`); how many
        were."""
        return await self._streams.withdraw(lease, generation, seq, below, now)

    async def read_events(self, run_id: str) -> dict[str, bytes]:
        """The run's events, each key's latest encoded value."""
        return await self._streams.read_events(run_id)

    async def read_stream(
        self, run_id: str, key: str, *, after: int, limit: int
    ) -> list[StreamEntry]:
        """The entries of stream ``key`` after position ``after``, at most ``limit``."""
        return await self._streams.read_stream(run_id, key, after, limit)

    async def wait_published(self, run_id: str, *, within: float) -> bool:
        """Wait for a publication or the outcome of the run (see
        `durable.store.Store.wait_published`): this process's at once, others' through
        ``NOTIFY`` (Postgres) or the data version (SQLite, looked at every 50 ms)."""
        return await self._waits.watch([run_id, published_bell(run_id)], within)

    async def wait_for_work(
        self,
        *,
        workflows: Sequence[str],
        now: float,
        within: float,
        queues: Collection[str] | None = None,
    ) -> None:
        """Return when a run of ``workflows`` (and ``queues``) may have become runnable, or
        after ``within``.

        Woken by writes of this process at once, by other processes' writes through the
        runner (Postgres: ``NOTIFY``; SQLite: its data version, looked at every 50 ms), and at
        `next_due`.
        """
        soonest = await self._runs.next_due(workflows, now, queues)
        if soonest is not None:
            within = min(within, soonest - now)
        await self._waits.wait_for_work(within)

    async def watch(self, run_ids: Collection[str], *, within: float) -> bool:
        """Wait for a write to one of ``run_ids`` (see `durable.store.Store.watch`).

        This process's writes wake at once; other processes' writes do on Postgres through
        ``NOTIFY``, and on SQLite when its data version changes (a commit by another
        connection), looked at every 50 ms by one waiting task at a time.
        """
        return await self._waits.watch(run_ids, within)

    def wake_waiters(self) -> None:
        """Wake this process's tasks in `wait_for_work` (a test moved its clock)."""
        self._doorbell.ring()

    async def block_unreadable(self, *, now: float, limit: int = 100) -> list[RunRecord]:
        """Make runs whose stored status this version does not know ``blocked`` (see
        `durable.store.Store.block_unreadable`).

        Returns:
            The runs blocked now.
        """
        return await self._runs.block_unreadable(now=now, limit=limit)

    async def leased_on(self, host: str, *, workflows: Sequence[str]) -> list[RunRecord]:
        """Unfinished runs of ``workflows`` leased by an executor on ``host``."""
        return await self._runs.leased_on(host, workflows=workflows)

    async def reset_run(
        self,
        run_id: str,
        *,
        token: int,
        status: RunStatus,
        drop: Collection[int],
        rollback: bool,
        now: float,
    ) -> RunRecord | None:
        """Make a stopped run runnable again, in one transaction (see
        `durable.store.Store.reset_run`)."""
        return await self._runs.reset_run(
            run_id,
            token=token,
            status=status,
            drop=drop,
            rollback=rollback,
            now=now,
            withdraw=self._streams.withdraw_steps,
        )

    async def continue_run(self, lease: Lease, args: bytes, *, now: float) -> RunRecord:
        """Start the run's next generation under the same lease, in one transaction fenced
        by it: its steps and consumed signals deleted (a consumed signal's idempotency key is
        kept), its buffered signals kept (see `durable.store.Store.continue_run`).

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``; nothing was written.
        """
        return await self._runs.continue_run(lease, args, now=now)

    async def delete_run(self, run_id: str) -> bool | None:
        """Delete a finished run without an unfinished ancestor, with its steps and signals
        (see `durable.store.Store.delete_run`)."""
        return await self._runs.delete_run(run_id)

    async def prune(self, *, before: float, limit: int) -> int:
        """Delete up to ``limit`` finished runs last updated before ``before`` and without an
        unfinished ancestor, with their steps and signals, in one transaction (rows other
        transactions lock are skipped).

        Returns:
            How many runs were deleted.
        """
        return await self._runs.prune(before=before, limit=limit)

    async def close(self) -> None:
        """Close the connections. The store is unusable afterwards. Idempotent."""
        self._db.close()

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

    # -- schedules (see `durable.store.Store`; `._sql_schedules`) -----------------------------

    async def put_schedule(self, schedule: ScheduleRecord, *, now: float) -> ScheduleRecord:
        """Create or update a schedule in one transaction; wakes `wait_for_schedules` in
        every process (see `durable.store.Store.put_schedule`)."""
        return await self._schedules.put(schedule, now)

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        """The schedule ``name``, or ``None``."""
        return await self._schedules.get(name)

    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, ordered by name."""
        return await self._schedules.list()

    async def set_schedule_paused(
        self, name: str, paused: bool, *, now: float, next_tick: float | None = None
    ) -> ScheduleRecord | None:
        """Pause or resume a schedule (see `durable.store.Store.set_schedule_paused`)."""
        return await self._schedules.set_paused(name, paused, now, next_tick)

    async def delete_schedule(self, name: str) -> bool:
        """Delete a schedule; whether it existed."""
        return await self._schedules.delete(name)

    async def fire_schedule(
        self,
        name: str,
        *,
        expected_tick: float,
        next_tick: float | None,
        last_tick: float | None,
        runs: Sequence[RunRecord],
        now: float,
    ) -> ScheduleRecord | None:
        """Fire ticks of a schedule in one transaction, compare-and-set on its next tick
        (see `durable.store.Store.fire_schedule`)."""
        return await self._schedules.fire(name, expected_tick, next_tick, last_tick, runs, now)

    async def wait_for_schedules(self, *, within: float) -> bool:
        """Wait for a schedule write (see `durable.store.Store.wait_for_schedules`): this
        process's at once, others' through ``NOTIFY`` (Postgres) or the data version
        (SQLite, where any commit wakes it)."""
        return await self._schedules.wait(within)
