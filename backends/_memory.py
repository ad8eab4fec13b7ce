"""`MemoryStore`: the store protocol on plain dicts, for unit tests and throw-away runs.

It has exactly the semantics of `SQLStore` (leases, fencing, atomic acquire, all-or-nothing
commit) but keeps nothing after the process ends: it is a dict, a lock and the pure rules of
`._rules`, which the SQL statements spell too. The dicts, and the writes that change several of
them at once, are `._memory_tables`; `._memory_leases` and `._memory_requests` (requests and
signals) work on the same dicts under the same lock. Every method does its work without awaiting,
so it is atomic within one event loop, and under a `threading.Lock`, so it is also safe to share
with worker threads. Records are frozen dataclasses, so handing them out is safe.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from types import TracebackType
from typing import Self

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

from . import _rules as rules
from ._memory_leases import Leases
from ._memory_requests import Requests
from ._memory_schedules import Schedules
from ._memory_streams import Publications
from ._memory_tables import Tables

__all__ = ["MemoryStore"]


class MemoryStore:
    """An in-memory `durable.store.Store`: fast, isolated, and gone when the process exits.

    Args:
        secret_keys: sign every payload written with the first key, and refuse payloads that
            no key verifies (see README "Security"); default: ``DURABLE_SECRET_KEY``.
        allowed_codecs: the codec names whose payloads may be written and read, e.g.
            ``["json"]``; default: ``DURABLE_ALLOWED_CODECS``, else every codec.

    Example:
        >>> store = MemoryStore()
    """

    def __init__(
        self,
        *,
        secret_keys: str | bytes | Iterable[str | bytes] | None = None,
        allowed_codecs: Iterable[str] | None = None,
    ) -> None:
        """Create an empty store."""
        self.payload_trust = PayloadTrust.configure(
            secret_keys, allowed_codecs, owner="MemoryStore"
        )
        self._tables = Tables()
        self._doorbell = self._tables.doorbell
        self._leases = Leases(self._tables)
        self._requests = Requests(self._tables)
        self._schedules = Schedules(self._tables)
        self._publications = Publications(self._tables)

    def __repr__(self) -> str:
        return f"MemoryStore(runs={len(self._tables.runs)})"

    async def create_run(
        self, run: RunRecord, steps: Sequence[StepRecord] = ()
    ) -> tuple[RunRecord, bool]:
        """Insert ``run`` unless a run with its id exists, with ``steps`` in the same step.

        Returns:
            ``(stored, created)``: the record now in the store, and whether this call created it.
        """
        rules.check_step_batch(run.id, steps)
        with self._tables.lock:
            self._tables.check_open()
            existing = self._tables.runs.get(run.id)
            if existing is not None:
                return existing, False
            self._tables.runs[run.id] = run
            if run.queue is not None and run.queue not in self._tables.queues:
                self._tables.queues[run.queue] = QueueSettings(run.queue, updated_at=run.created_at)
            if steps:
                self._tables.steps[run.id] = {step.seq: step for step in steps}
        self._doorbell.ring(run.id)
        return run, True

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or ``None``."""
        with self._tables.lock:
            self._tables.check_open()
            return self._tables.runs.get(run_id)

    async def find_runs(self, query: RunQuery) -> list[RunRecord]:
        """The runs ``query`` selects, newest first (see `durable.store.Store.find_runs`)."""
        with self._tables.lock:
            self._tables.check_open()
            runs = [r for r in self._tables.runs.values() if rules.matches(r, query)]
        runs.sort(key=rules.newest_first, reverse=True)
        return runs[: max(query.limit, 0)]

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """Runs, optionally only those with ``status``, oldest first (by ``created_at``, id).

        Returns:
            At most ``limit`` runs.
        """
        with self._tables.lock:
            self._tables.check_open()
            if limit <= 0:
                return []
            runs = [r for r in self._tables.runs.values() if status is None or r.status == status]
        runs.sort(key=lambda r: (r.created_at, r.id))
        return runs[:limit]

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
        return self._leases.acquire(run_id, owner, now, duration, takeover_token)

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

        Returns:
            The claimed runs (as before the claim) with their new leases.
        """
        return self._leases.claim(owner, now, duration, limit, workflows, queues)

    async def put_queue(self, settings: QueueSettings) -> None:
        """Record a queue's limits (the latest call wins) and wake waiting workers."""
        with self._tables.lock:
            self._tables.check_open()
            self._tables.queues[settings.name] = settings
        self._doorbell.ring()

    async def list_queues(self) -> list[QueueSettings]:
        """Every queue's stored limits, by name."""
        with self._tables.lock:
            self._tables.check_open()
            return [self._tables.queues[name] for name in sorted(self._tables.queues)]

    async def next_due(
        self, *, workflows: Sequence[str], now: float, queues: Collection[str] | None = None
    ) -> float | None:
        """When `claim` may next take a run by time alone (see
        `durable.store.Store.next_due`)."""
        return self._leases.next_due(now, workflows, queues)

    async def renew_lease(self, lease: Lease, *, now: float, duration: float) -> Lease:
        """Extend the lease to ``now + duration`` (``updated_at`` is left alone).

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``.
        """
        return self._leases.renew(lease, now, duration)

    async def release_lease(self, lease: Lease) -> None:
        """Clear owner / host / pid / expiry if the lease is still ours; otherwise do nothing."""
        self._leases.release(lease)

    async def load_steps(self, run_id: str) -> list[StepRecord]:
        """Every recorded step of the run, ordered by ``seq``."""
        with self._tables.lock:
            self._tables.check_open()
            steps = self._tables.steps.get(run_id, {})
            return [steps[seq] for seq in sorted(steps)]

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
        """Insert ``steps``, replace ``outcomes`` and apply ``update`` in one step, or change
        nothing (see `durable.store.Store.commit`, also for ``check_requests``; ``relaxed``
        changes nothing in memory).

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
        return self._tables.commit(lease, steps, update, now, outcomes, check_requests)

    async def request_cancel(self, run_id: str, *, now: float) -> RunRecord | None:
        """Set ``cancel_requested`` on an unfinished run; a parked one becomes due now.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        return self._requests.change(run_id, now, rules.request_cancel)

    async def request_pause(self, run_id: str, *, now: float) -> RunRecord | None:
        """Set ``pause_requested``; a run nobody executes is ``paused`` at once.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        return self._requests.change(run_id, now, rules.request_pause)

    async def resume(self, run_id: str, *, now: float) -> RunRecord | None:
        """Clear ``pause_requested``; a ``paused`` run becomes ``pending``.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        return self._requests.change(run_id, now, rules.resume)

    async def request_rollback(self, run_id: str, *, now: float) -> RunRecord | None:
        """Turn a ``completed`` run into a ``compensating`` one with ``rollback_requested``.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        return self._requests.change(run_id, now, rules.request_rollback)

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
        """Make a stopped run runnable again (see `durable.store.Store.reset_run`)."""
        with self._tables.lock:
            self._tables.check_open()
            run = self._tables.runs.get(run_id)
            if run is None or not rules.resettable(run, token, status):
                return run
            steps = self._tables.steps.get(run_id, {})
            for seq in drop:
                steps.pop(seq, None)
            withdrawn = self._publications.withdraw_steps(
                run_id, run.generation, frozenset(drop), rules.WITHDRAW_ALL, now
            )
            run = self._tables.runs[run_id] = rules.reset(run, rollback=rollback, now=now)
        self._doorbell.ring(run_id)
        if withdrawn:
            self._doorbell.ring(rules.published_bell(run_id))
        return run

    async def continue_run(self, lease: Lease, args: bytes, *, now: float) -> RunRecord:
        """Start the run's next generation under the same lease: its steps deleted, its
        buffered signals kept (consumed ones are gone already; their idempotency keys stay).
        See `durable.store.Store.continue_run`.

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``; nothing was written.
        """
        with self._tables.lock:
            self._tables.check_open()
            run = self._tables.fenced(lease)
            self._tables.steps.pop(lease.run_id, None)
            run = self._tables.runs[lease.run_id] = rules.continued(run, args, now)
        return run

    async def delete_run(self, run_id: str) -> bool | None:
        """Delete a finished run without an unfinished ancestor (see
        `durable.store.Store.delete_run`)."""
        return self._tables.delete(run_id)

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
        return self._requests.send_signal(run_id, name, payload, now, idempotency_key)

    async def wake(self, run_id: str, *, now: float) -> None:
        """Make a parked run due now (see `durable.store.Store.wake`)."""
        self._requests.wake(run_id, now)

    async def receive_signal(
        self, lease: Lease, name: str, step: StepRecord, *, now: float
    ) -> bytes | None:
        """Consume the oldest buffered signal ``name`` and record ``step`` with its payload.

        Returns:
            The payload, or ``None`` when no such signal is buffered (nothing is written).

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``.
        """
        return self._requests.receive_signal(lease, name, step)

    async def publish(
        self,
        lease: Lease,
        write: EventWrite | StreamWrite,
        *,
        steps: Sequence[StepRecord] = (),
        now: float,
    ) -> int:
        """Record ``steps`` and set the event or append to the stream, fenced (see
        `durable.store.Store.publish`).

        Returns:
            The position of the last stream entry written (0 for an event).
        """
        return self._publications.publish(lease, write, steps, now)

    async def withdraw(
        self, lease: Lease, *, generation: int, seq: int, below: int, now: float
    ) -> int:
        """Withdraw the stream entries of step ``seq``'s attempts below ``below`` (see
        `durable.store.Store.withdraw`); how many were."""
        return self._publications.withdraw(lease, generation, seq, below, now)

    async def read_events(self, run_id: str) -> dict[str, bytes]:
        """The run's events, each key's latest encoded value."""
        return self._publications.read_events(run_id)

    async def read_stream(
        self, run_id: str, key: str, *, after: int, limit: int
    ) -> list[StreamEntry]:
        """The entries of stream ``key`` after position ``after``, at most ``limit``."""
        return self._publications.read_stream(run_id, key, after, limit)

    async def wait_published(self, run_id: str, *, within: float) -> bool:
        """Wait for a publication or the outcome of the run (in this process), at most
        ``within`` seconds."""
        self._tables.check_open()
        return await self._doorbell.watch([run_id, rules.published_bell(run_id)], within)

    async def wait_for_work(
        self,
        *,
        workflows: Sequence[str],
        now: float,
        within: float,
        queues: Collection[str] | None = None,
    ) -> None:
        """Return when a write in this process may have made a run runnable, when `next_due`
        comes, or after ``within`` seconds."""
        soonest = self._leases.next_due(now, workflows, queues)
        if soonest is not None:
            within = min(within, soonest - now)
        await self._doorbell.wait(within)

    async def watch(self, run_ids: Collection[str], *, within: float) -> bool:
        """Wait for a write of this process to one of ``run_ids`` (see `Store.watch`)."""
        self._tables.check_open()
        return await self._doorbell.watch(run_ids, within)

    def wake_waiters(self) -> None:
        """Wake this process's tasks in `wait_for_work` (a test moved its clock)."""
        self._doorbell.ring()

    async def block_unreadable(self, *, now: float, limit: int = 100) -> list[RunRecord]:
        """Nothing to do: records in memory always hold statuses this version knows."""
        self._tables.check_open()
        return []

    async def leased_on(self, host: str, *, workflows: Sequence[str]) -> list[RunRecord]:
        """Unfinished runs of ``workflows`` leased by an executor on ``host``."""
        return self._leases.leased_on(host, workflows)

    async def prune(self, *, before: float, limit: int) -> int:
        """Delete up to ``limit`` finished runs last updated before ``before`` and without
        an unfinished ancestor, with their steps and signals.

        Returns:
            How many runs were deleted.
        """
        return self._tables.prune(before, limit)

    async def close(self) -> None:
        """Make the store unusable (its data is dropped). Idempotent."""
        self._tables.close()

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

    # -- schedules (see `durable.store.Store`) ------------------------------------------------

    async def put_schedule(self, schedule: ScheduleRecord, *, now: float) -> ScheduleRecord:
        """Create or update a schedule; wakes `wait_for_schedules` (see
        `durable.store.Store.put_schedule`)."""
        return self._schedules.put(schedule, now)

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        """The schedule ``name``, or ``None``."""
        return self._schedules.get(name)

    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, ordered by name."""
        return self._schedules.list()

    async def set_schedule_paused(
        self, name: str, paused: bool, *, now: float, next_tick: float | None = None
    ) -> ScheduleRecord | None:
        """Pause or resume a schedule (see `durable.store.Store.set_schedule_paused`)."""
        return self._schedules.set_paused(name, paused, now, next_tick)

    async def delete_schedule(self, name: str) -> bool:
        """Delete a schedule; whether it existed."""
        return self._schedules.delete(name)

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
        """Fire ticks of a schedule, compare-and-set on its next tick (see
        `durable.store.Store.fire_schedule`)."""
        return self._schedules.fire(name, expected_tick, next_tick, last_tick, runs, now)

    async def wait_for_schedules(self, *, within: float) -> bool:
        """Wait for a schedule write of this process, at most ``within`` seconds."""
        self._tables.check_open()
        return await self._doorbell.watch([rules.SCHEDULE_BELL], within)
