"""The store contract: what the engine needs from a database, and nothing more.

The engine depends only on this module. A backend (``durable.backends.MemoryStore``,
``durable.backends.SQLStore``) implements `Store` and may import nothing else from `durable`
except the error names re-exported here.

Guarantees every implementation gives (DESIGN.md, "What the store must guarantee"):

* `Store.commit` writes its steps and its run update in one transaction, or not at all.
* Every write an executor makes goes through `Store.commit` / `renew_lease` / `release_lease`
  and carries the executor's `Lease`; it is refused with `LeaseLost` when the run's fencing
  token is no longer the lease's token (someone took the run over).
* `Store.acquire_lease` is atomic: of any number of concurrent callers, at most one gets the
  lease, and each success increments the run's fencing token.
* Payloads are opaque bytes: stores never decode them.
* `Store.fire_schedule` is a compare-and-set on the schedule's next tick, in one transaction
  with the tick's runs: of any number of concurrent callers firing a tick, one records it.

Timestamps are float seconds since the Unix epoch (UTC), passed in by the caller so that a test
clock controls them.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, runtime_checkable

from durable._errors import (
    LeaseLost,
    PoolTimeout,
    SchemaVersionError,
    StoreError,
    WorkflowIdConflict,
    WorkflowNotFound,
)
from durable._trust import PayloadTrust
from durable._types import RunStatus, StepKind, StepStatus

__all__ = [
    "EntryKind",
    "EventWrite",
    "Interruption",
    "Lease",
    "LeaseLost",
    "LeaseOwner",
    "PayloadTrust",
    "PoolTimeout",
    "QueueSettings",
    "RunQuery",
    "RunRecord",
    "RunStatus",
    "RunUpdate",
    "ScheduleRecord",
    "SchemaVersionError",
    "StepKind",
    "StepRecord",
    "StepStatus",
    "Store",
    "StoreError",
    "StreamEntry",
    "StreamWrite",
    "UnreadableRecord",
    "WorkflowIdConflict",
    "WorkflowNotFound",
    "due_at",
]


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as stored.

    Attributes:
        id: the caller-chosen run id (primary key).
        workflow: the workflow's registered name.
        status: where the run is.
        args: encoded ``(args, kwargs)`` the run was started with.
        created_at: when the run was first recorded.
        updated_at: when the run record last changed.
        parent_id: the parent run's id for a child workflow.
        result: encoded result, once completed.
        error: encoded exception, once failed.
        error_text: human-readable reason for ``failed`` / ``blocked``.
        lease_owner: the executor holding the lease, or ``None``.
        lease_host: that executor's host name.
        lease_pid: that executor's process id.
        lease_token: the fencing token; incremented by every successful `Store.acquire_lease`.
        lease_expires_at: when the current lease expires.
        cancel_requested: `Store.request_cancel` was called; the executor delivers it.
        cancelled_seq: the step at which the workflow was told it is cancelled (replays
            deliver it at the same step).
        rollback_requested: `Store.request_rollback` turned the completed run into a
            compensating one; its executor runs every undo.
        wake_at: for a parked run (``sleeping`` / ``waiting`` without a lease), when it becomes
            runnable again (its earliest timer or signal deadline; ``now`` when a signal
            arrives); ``None`` when only a signal can wake it. For a ``pending`` run, a delayed
            start: `Store.claim` leaves it until then (``None``: at once).
        pause_requested: `Store.request_pause` was called; the executor stops the run at its
            next step boundary (status ``paused``) until `Store.resume`.
        code_version: the version of the workflow's code the run started under (see
            ``@workflow(version=...)``); ``None`` for runs recorded before versions were.
        recoveries: how often the run was taken over from an executor that still held its
            lease (it died, or stalled past the lease): `Store.acquire_lease` and
            `Store.claim` count them. Compared with the workflow's ``max_recoveries``.
        trace_context: the OpenTelemetry trace context of the code that started the run
            (``durable.start`` / ``run`` / ``execute``, or the parent run for a child run),
            as JSON of its W3C ``traceparent`` / ``tracestate`` carrier; ``None`` when the
            caller traced nothing. Executions of the run join that trace. Written by
            `Store.create_run`, never changed.
        queue: the `durable.Queue` the run was started on, or ``None``: `Store.claim` takes a
            queued run only while its queue's limits allow (see `QueueSettings`).
        queue_key: the run's key within its queue (a tenant id, say), for
            ``per_key_concurrency``; ``None`` when it has none.
        priority: among the runnable runs of its queue, smaller runs first (then by due time).
        started_at: when an executor first took the run up (its first lease; never changed
            after): a queue's ``rate_limit`` counts these.
        deadline: when the run times out (epoch seconds), or ``None``: set by ``timeout=``
            when the run is recorded (a child gets at most its parent's); the engine then
            cancels it and records ``timed_out``. A parked run wakes for it.
        generation: which generation of the run this is: 1, plus one for each
            ``durable.continue_as_new`` (which empties the history and starts it again).
    """

    id: str
    workflow: str
    status: RunStatus
    args: bytes
    created_at: float
    updated_at: float
    parent_id: str | None = None
    result: bytes | None = None
    error: bytes | None = None
    error_text: str | None = None
    lease_owner: str | None = None
    lease_host: str | None = None
    lease_pid: int | None = None
    lease_token: int = 0
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    cancelled_seq: int | None = None
    rollback_requested: bool = False
    wake_at: float | None = None
    pause_requested: bool = False
    code_version: str | None = None
    recoveries: int = 0
    trace_context: str | None = None
    queue: str | None = None
    queue_key: str | None = None
    priority: int = 0
    started_at: float | None = None
    deadline: float | None = None
    generation: int = 1


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """The limits of one queue, as stored (the latest `Store.put_queue` wins).

    A queued run is *executing* while an executor holds its lease (a parked run is not); it
    *started* when it was first leased (``RunRecord.started_at``). `Store.claim` and
    `Store.acquire_lease` take a queued run that nobody holds only while, counting it, at most
    ``concurrency`` runs of the queue execute, at most ``per_key_concurrency`` of them under
    its ``queue_key`` (runs without a key are not limited per key), and, when it has not started
    before, at most ``rate_count`` runs of the queue started in the last ``rate_period``
    seconds. Taking over a run whose lease lapsed is never refused (it already counts).

    Attributes:
        name: the queue's name.
        concurrency: at most this many runs executing at once; ``None``: no limit.
        per_key_concurrency: at most this many runs executing at once per key; ``None``: no
            limit.
        rate_count: at most this many runs started per ``rate_period``; ``None``: no limit.
        rate_period: the rate limit's window, in seconds (set with ``rate_count``).
        updated_at: when these settings were written.
    """

    name: str
    concurrency: int | None = None
    per_key_concurrency: int | None = None
    rate_count: int | None = None
    rate_period: float | None = None
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One recorded step.

    Attributes:
        run_id: the run the step belongs to.
        seq: the step number, from 1 in call order; ``(run_id, seq)`` is the key.
        kind: what the step was.
        name: activity / workflow name, or the helper name.
        status: completed or failed; ``started`` while its outcome is not recorded: an
            activity, compensation, child or signal send whose attempt began (recorded before
            the attempt starts, so a crash cannot hide it), or a signal wait.
        attempts: attempts started (an attempt is counted when it starts, so attempts cut
            off by a crash count too).
        started_at: when the step started.
        finished_at: when it ended.
        result: encoded result (completed steps).
        error: encoded exception (failed steps).
        location: ``"file:line"`` of the call in workflow code, for replay-check messages.
    """

    run_id: str
    seq: int
    kind: StepKind
    name: str
    status: StepStatus
    attempts: int
    started_at: float
    finished_at: float
    result: bytes | None = None
    error: bytes | None = None
    location: str | None = None


@dataclass(frozen=True, slots=True)
class LeaseOwner:
    """Who executes a run: a unique owner id plus host and pid (to detect a dead local process)."""

    owner: str
    host: str
    pid: int


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof that an executor may advance a run until ``expires_at``, fenced by ``token``."""

    run_id: str
    owner: LeaseOwner
    token: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class RunUpdate:
    """A change to a run record, applied by `Store.commit` in the same transaction as its steps.

    Attributes:
        status: the new status.
        result: encoded result to store (completed runs).
        error: encoded exception to store (failed runs).
        error_text: human-readable reason (failed / blocked runs); ``None`` clears it.
        release: also release the lease (clear owner, host, pid and expiry; keep the token).
        cancelled_seq: record the step at which cancellation was delivered (``None`` keeps it).
        wake_at: when a parked run becomes runnable (set with a parking status and
            ``release``; ``None`` keeps the stored value). With ``release``, a wake time a
            signal set while the run was leased wins when it is earlier.
    """

    status: RunStatus
    result: bytes | None = None
    error: bytes | None = None
    error_text: str | None = None
    release: bool = False
    cancelled_seq: int | None = None
    wake_at: float | None = None


@dataclass(frozen=True, slots=True)
class RunQuery:
    """Which runs `Store.find_runs` returns: newest first (``created_at``, then id, both
    descending), every filter given applying.

    Attributes:
        statuses: only runs in one of these statuses.
        workflows: only runs of one of these workflows.
        id_prefix: only runs whose id starts with this (matched literally).
        parent_id: only the children of this run.
        created_after: only runs created strictly after this time.
        created_before: only runs created strictly before this time.
        older_than: a page's cursor: only runs strictly older than ``(created_at, id)``.
        limit: at most this many runs.
    """

    statuses: frozenset[RunStatus] | None = None
    workflows: frozenset[str] | None = None
    id_prefix: str | None = None
    parent_id: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    older_than: tuple[float, str] | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class Interruption:
    """Why `Store.commit` with ``check_requests=True`` wrote nothing: the run was asked to
    stop before the step could start.

    Attributes:
        cancel: a cancel was requested and not yet delivered (``cancelled_seq`` is unset).
        pause: a pause was requested.
    """

    cancel: bool
    pause: bool


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """One cron schedule as stored (see ``durable.schedule``).

    Attributes:
        name: the schedule's name (primary key); its runs' ids are ``"<name>@<tick>"``.
        workflow: the registered name of the workflow each tick starts.
        cron: the cron expression (5 fields, or 6 with seconds first).
        timezone: the IANA time zone the expression is read in (``"UTC"``, ``"Europe/Paris"``).
        args: encoded ``(args, kwargs)`` of every run it starts.
        catch_up: ``"latest"``, ``"all"`` or ``"none"``: what a worker does with ticks that
            passed while no worker fired them.
        queue: the `durable.Queue` name its runs are started on, or ``None``.
        paused: no tick fires while set (`Store.set_schedule_paused`).
        next_tick: the next tick to fire (epoch seconds), or ``None`` when the expression
            never fires again. `Store.fire_schedule` advances it, compare-and-set.
        last_tick: the tick fired last, or ``None``.
        created_at: when the schedule was first stored.
        updated_at: when it last changed.
    """

    name: str
    workflow: str
    cron: str
    timezone: str
    args: bytes
    catch_up: str
    queue: str | None
    paused: bool
    next_tick: float | None
    last_tick: float | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class EventWrite:
    """What `Store.publish` writes for ``durable.set_event``: the run's event ``key`` now
    holds ``value`` (encoded), replacing what it held."""

    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class StreamWrite:
    """What `Store.publish` appends to the run's stream ``key``: ``values`` (encoded), each at
    the stream's next position, then a close entry if ``close``.

    Attributes:
        key: the stream.
        values: the encoded values, in order.
        close: append a close entry after them (readers stop there).
        generation: the run generation of the step that writes them.
        seq: that step: the workflow's own ``stream`` / ``stream_close`` step, or the activity
            (or compensation) step whose attempt writes them.
        attempt: the activity attempt writing them, or ``None`` for a workflow step. A later
            `Store.withdraw` of the attempt withdraws them.
    """

    key: str
    values: Sequence[bytes] = ()
    close: bool = False
    generation: int = 1
    seq: int = 0
    attempt: int | None = None


class EntryKind(enum.StrEnum):
    """What a stream entry is."""

    VALUE = "value"
    RETRY = "retry"
    CLOSE = "close"


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One entry of a run's stream, as stored: a value, a close, or the marker a withdrawal
    appends (``retry``).

    Attributes:
        run_id: the run.
        key: the stream.
        position: the entry's place in the stream, from 1; ``(run_id, key, position)`` is the
            key. Markers and withdrawn entries keep theirs.
        kind: value, close, or retry (a marker).
        value: the encoded value (``value`` entries), else ``None``.
        generation: the run generation of the step that wrote the entry (a marker: of the
            entries it withdraws).
        seq: that step (a marker: the step whose entries it withdraws).
        attempt: the activity attempt that wrote the entry, or ``None`` for a workflow step (a
            marker: the attempt it withdraws).
        withdrawn: the entry was withdrawn (its attempt failed, or a retry of the run dropped
            its step); a marker with the same origin follows it. Markers never are.
        written_at: when it was written.
    """

    run_id: str
    key: str
    position: int
    kind: EntryKind
    value: bytes | None
    generation: int
    seq: int
    attempt: int | None
    withdrawn: bool
    written_at: float


class UnreadableRecord(StoreError):
    """A stored row holds a value this version of durable does not know (a step kind, a step
    or run status): written by hand, by a newer version, or damaged. Raised by the store
    when it reads such a step; the executor then blocks the run.

    Attributes:
        run_id: the run.
        seq: the step number, or ``None`` for the run row itself.
        field: the column holding the unknown value.
        value: the value.
    """

    def __init__(self, run_id: str, seq: int | None, field: str, value: object) -> None:
        where = f"step {seq} of run {run_id!r}" if seq is not None else f"run {run_id!r}"
        super().__init__(
            f"{where} has {field} {value!r}, which this version of durable does not know: "
            "the database was written by a newer (or different) version of durable, or the "
            "row is damaged; the run is blocked: repair the row (or run the version of "
            "durable that wrote it), then run it again"
        )
        self.run_id = run_id
        self.seq = seq
        self.field = field
        self.value = value


def due_at(run: RunRecord) -> float | None:
    """When `Store.claim` may take ``run`` by time alone (maybe already past): a pending run
    at once (or at its ``wake_at``: a delayed start), a parked one at its wake time, a leased
    one when its lease lapses. ``None`` when
    only a write can make it claimable (finished, blocked, paused, or waiting for a signal
    without a timeout). `Store.wait_for_work` sleeps until the soonest of these."""
    status = RunStatus(run.status)
    if status.finished or status in (RunStatus.BLOCKED, RunStatus.PAUSED):
        return None
    if run.lease_owner is not None:
        return run.lease_expires_at
    if status == RunStatus.PENDING:
        return run.created_at if run.wake_at is None else run.wake_at
    return run.wake_at if status in (RunStatus.SLEEPING, RunStatus.WAITING) else None


@runtime_checkable
class Store(Protocol):
    """The async store protocol. See the module docstring for the guarantees."""

    async def create_run(
        self, run: RunRecord, steps: Sequence[StepRecord] = ()
    ) -> tuple[RunRecord, bool]:
        """Insert ``run`` unless a run with its id exists, with ``steps`` (its first recorded
        steps: a fork copies another run's) in the same transaction.

        Returns:
            ``(stored, created)``: the record now in the store (the existing one when ``created``
            is False; the caller checks that its workflow name matches).
        """
        ...

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or ``None``."""
        ...

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """Runs, optionally only those with ``status``, oldest first, at most ``limit``."""
        ...

    async def find_runs(self, query: RunQuery) -> list[RunRecord]:
        """The runs ``query`` selects, newest first, at most ``query.limit`` of them."""
        ...

    async def acquire_lease(
        self,
        run_id: str,
        owner: LeaseOwner,
        *,
        now: float,
        duration: float,
        takeover_token: int | None = None,
    ) -> Lease | None:
        """Atomically take the lease on an unfinished run.

        Succeeds when the run exists, its status is not finished, and either nobody holds the
        lease, or the lease expired (``lease_expires_at <= now``), or the run's current token
        equals ``takeover_token`` (the caller verified that the holder is dead). On success the
        token is incremented, owner / host / pid / expiry are set, the status becomes
        ``running``, and ``error_text`` and ``wake_at`` are cleared, ``started_at`` is set
        unless it was; taking the lease from an owner that still held it (expired, or
        ``takeover_token``) counts one more ``recoveries``. A run whose status this version
        does not know is never acquired, and a queued run that nobody holds only while its
        queue's limits allow (`QueueSettings`).

        Returns:
            The new lease, or ``None`` when the run is missing, finished, or leased to someone
            else.
        """
        ...

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
        """Atomically lease up to ``limit`` runnable runs of the given workflows, oldest due
        first, as `acquire_lease` does for each. Concurrent claimers never get the same run.

        Runnable: ``pending`` and not leased; parked (``sleeping`` / ``waiting``, not leased)
        with ``wake_at <= now``; or unfinished (not ``blocked`` or ``paused``) with an expired
        lease (its executor died). A ``paused`` run is taken only after `resume`.

        Queued runs are taken only while their queue's limits allow (`QueueSettings`, checked
        under a lock on the queue, so concurrent claimers never exceed them together), in
        the order ``(priority, due time, id)`` within their queue. ``queues``: take only runs
        of these queues; ``None``: runs of every queue and runs of none.

        Returns:
            The claimed runs (as they were before the claim) with their new leases.
        """
        ...

    async def put_queue(self, settings: QueueSettings) -> None:
        """Record a queue's limits, replacing what was stored for its name (the latest
        declaration wins), and wake waiting workers (the limits may have grown)."""
        ...

    async def list_queues(self) -> list[QueueSettings]:
        """Every queue's stored limits, by name. `create_run` of a run on a queue that has
        none records the queue without limits."""
        ...

    async def next_due(
        self, *, workflows: Sequence[str], now: float, queues: Collection[str] | None = None
    ) -> float | None:
        """When `claim` (with the same ``workflows`` and ``queues``) may next take a run by
        time alone, maybe already past: the soonest `due_at` of their runs, where a queued run
        nobody holds counts only while its queue has room (at once, or when its rate window
        frees a start), since a release, not time, frees a queue that is full. ``None``: only
        a write can make one claimable."""
        ...

    async def renew_lease(self, lease: Lease, *, now: float, duration: float) -> Lease:
        """Extend the lease to ``now + duration``.

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``.
        """
        ...

    async def release_lease(self, lease: Lease) -> None:
        """Clear owner / host / pid / expiry if the lease is still ours; otherwise do nothing."""
        ...

    async def load_steps(self, run_id: str) -> list[StepRecord]:
        """Every recorded step of the run, ordered by ``seq``."""
        ...

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
        """Insert ``steps``, replace ``outcomes`` and apply ``update`` in one transaction.

        Each of ``outcomes`` replaces the recorded step with its ``seq`` whose status is
        ``started`` (an attempt or a wait in progress; the replacement may itself be
        ``started``, counting one more attempt, or the start of another step in its place
        when the workflow's code changed); one with no row at all is inserted (a relaxed
        start lost in a crash of the database); any other existing step is never rewritten.

        With an ``update``, ``updated_at`` is set to ``now``; steps alone leave the run record
        untouched (so the common one-step commit writes one row). Nothing is written unless the
        run's token still equals ``lease.token``, checked under the transaction's lock.

        ``check_requests``: the commit starts a step. Under the same lock, if the run has a
        pause request, or a cancel request not yet delivered (``cancelled_seq`` unset),
        nothing is written and the `Interruption` is returned: a request that was stored
        before this commit is never missed, so no step starts after `request_cancel` /
        `request_pause` returned.

        ``relaxed``: the commit writes only ``started`` rows that count attempts; the store may
        return before they reach the disk (Postgres without waiting for the WAL flush, SQLite
        in ``durability="power"`` without an fsync), since the step's outcome commit, which
        does wait, makes them durable too; a crash of the database (not of the process) can
        then lose such a row, and the attempt count with it. Never set for a final
        activity's intent.

        Returns:
            ``None`` when written; the `Interruption` when ``check_requests`` stopped it.

        Raises:
            LeaseLost: the token changed; nothing was written.
            StoreError: a step is already recorded, or an outcome's step is recorded with
                another status than ``started``; nothing was written.
        """
        ...

    async def request_cancel(self, run_id: str, *, now: float) -> RunRecord | None:
        """Set ``cancel_requested`` on an unfinished run (no lease needed).

        Returns:
            The run as it is now (unchanged when finished), or ``None`` when missing.
        """
        ...

    async def request_pause(self, run_id: str, *, now: float) -> RunRecord | None:
        """Set ``pause_requested`` on an unfinished run; a parked one becomes ``paused`` at
        once (no lease needed).

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        ...

    async def resume(self, run_id: str, *, now: float) -> RunRecord | None:
        """Clear ``pause_requested``; a ``paused`` run becomes ``pending`` (runnable).

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        ...

    async def request_rollback(self, run_id: str, *, now: float) -> RunRecord | None:
        """Atomically turn a ``completed`` run into a ``compensating`` one with
        ``rollback_requested`` set (no lease needed); other runs are left as they are.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        ...

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
        """Make a stopped run runnable again (a retry), in one transaction, if its token still
        equals ``token``, its status is still ``status`` and no executor holds its lease:
        delete its steps numbered in ``drop``; make it ``pending`` with ``result``, ``error``,
        ``error_text``, ``wake_at``, ``cancelled_seq`` and ``deadline`` cleared (a retried run
        has no deadline), no cancel or pause request,
        ``recoveries`` 0 and ``rollback_requested`` set to ``rollback``; increment its token
        (so whoever read the run before sees that it changed). Signals and events are left as
        they are; the stream entries the dropped steps wrote (in the run's generation) are
        withdrawn as `withdraw` withdraws them, so the retried steps do not write them twice.

        Returns:
            The run as it is now (reset: its token is ``token + 1``; unchanged when the
            condition did not hold), or ``None`` when missing.
        """
        ...

    async def continue_run(self, lease: Lease, args: bytes, *, now: float) -> RunRecord:
        """Start the next generation of a leased run (``durable.continue_as_new``), in one
        transaction fenced by ``lease``: delete every step of the run and its consumed
        signals (a consumed signal with an idempotency key leaves that key behind, without
        its payload, so a sender retrying it still sends nothing); keep its buffered ones;
        store ``args`` (encoded ``(args, kwargs)``), ``generation + 1``, status ``running``,
        ``result``, ``error``, ``error_text``, ``wake_at`` and ``cancelled_seq`` cleared,
        ``recoveries`` 0, and a cancel request only if it was not delivered yet (one
        delivered in the ending generation was that generation's). The id, workflow, parent,
        queue, key, priority, deadline, ``created_at``, ``started_at``, the pause request
        and the lease (owner, token, expiry) are kept: the executor goes on with the new
        generation under the same lease. Its events and streams are kept too.

        Returns:
            The run as it is now.

        Raises:
            LeaseLost: the run's token is no longer ``lease.token`` (or the run is gone);
                nothing was written.
        """
        ...

    async def delete_run(self, run_id: str) -> bool | None:
        """Delete a finished run with its steps, signals, events and streams, in one
        transaction, unless one
        of its ancestors (its parent, the parent's parent...) is unfinished: it may still need
        the run's outcome. Child runs of the deleted run are left as they are.

        Returns:
            ``True`` when deleted, ``False`` when refused (unfinished, or an unfinished
            ancestor), ``None`` when missing.
        """
        ...

    async def send_signal(
        self,
        run_id: str,
        name: str,
        payload: bytes,
        *,
        now: float,
        idempotency_key: str | None = None,
    ) -> RunRecord | None:
        """Buffer signal ``name`` for an unfinished run (no lease needed), after any signals
        buffered before it; a ``waiting`` run becomes due (``wake_at = now``): at once when
        it is parked, and when it parks if it is still leased (its executor may be about to
        park it without having seen the signal; a release takes the earlier wake time).
        With an ``idempotency_key`` already used for a signal to this run (consumed or not),
        nothing is buffered: the send is a no-op, so a sender may retry it safely.

        Returns:
            The run; when it is finished nothing was recorded (the caller reports it).
            ``None`` when the run is missing.
        """
        ...

    async def wake(self, run_id: str, *, now: float) -> None:
        """Make a parked run (``sleeping`` / ``waiting``, not leased) due now (no lease
        needed); used when a child run finishes, to wake its parent. Others are unchanged."""
        ...

    async def receive_signal(
        self, lease: Lease, name: str, step: StepRecord, *, now: float
    ) -> bytes | None:
        """In one fenced transaction: consume the oldest buffered signal ``name`` of
        ``lease.run_id`` and record ``step`` (kind ``signal``) with the signal's payload as its
        result, replacing the step's ``started`` record if there is one. The run's
        ``wake_at`` is cleared (the executor looked at the signals itself).

        Returns:
            The payload, or ``None`` (and nothing written) when no such signal is buffered.

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``.
        """
        ...

    # -- events and streams -------------------------------------------------------------------

    async def publish(
        self,
        lease: Lease,
        write: EventWrite | StreamWrite,
        *,
        steps: Sequence[StepRecord] = (),
        now: float,
    ) -> int:
        """In one transaction fenced by ``lease``: insert ``steps`` (the workflow step that
        publishes, with any helper steps buffered before it; none for an activity's write)
        and apply ``write``: set the run's event, or append to its stream at the next
        positions. Then wake `wait_published` (in every process, where the store can tell),
        but not the workers waiting for work.

        Returns:
            The position of the last stream entry written (0 for an event).

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``; nothing was written.
            StoreError: a step is already recorded; nothing was written.
        """
        ...

    async def withdraw(
        self, lease: Lease, *, generation: int, seq: int, below: int, now: float
    ) -> int:
        """In one transaction fenced by ``lease``: mark withdrawn the stream entries that
        attempts numbered below ``below`` of step ``seq`` (of ``generation``) wrote and that
        are not withdrawn yet, and append one ``retry`` marker per stream and attempt
        withdrawn, after them; wake `wait_published`.

        Returns:
            How many entries were withdrawn (0: nothing was written).

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``.
        """
        ...

    async def read_events(self, run_id: str) -> dict[str, bytes]:
        """The run's events: each key's latest encoded value (empty for an unknown run)."""
        ...

    async def read_stream(
        self, run_id: str, key: str, *, after: int, limit: int
    ) -> list[StreamEntry]:
        """The entries of the run's stream ``key`` after position ``after``, in order, at most
        ``limit`` of them (withdrawn ones and markers included)."""
        ...

    async def wait_published(self, run_id: str, *, within: float) -> bool:
        """Wait until the run may have published (an event set, stream entries written or
        withdrawn) or recorded its outcome, or at the latest ``within`` seconds. Other
        processes' writes wake it where the store can tell (as `watch`); waking without such
        a write is allowed.

        Returns:
            Whether it was woken (``False``: ``within`` passed).
        """
        ...

    async def wait_for_work(
        self,
        *,
        workflows: Sequence[str],
        now: float,
        within: float,
        queues: Collection[str] | None = None,
    ) -> None:
        """Return when a run of ``workflows`` (and ``queues``, as `claim` takes them) may have
        become runnable: a write made one runnable (in this process, or in any process where
        the store can tell), `next_due` came, or at the latest after ``within`` seconds.

        A worker calls it when a claim found nothing; returning early is always allowed (the
        worker claims again), so a store may fall back to polling.
        """
        ...

    async def watch(self, run_ids: Collection[str], *, within: float) -> bool:
        """Wait until a write may have changed one of ``run_ids`` in a way its watchers care
        about (a cancel, pause, resume or rollback request, a signal sent to it, its lease
        released or its outcome recorded), or at the latest ``within`` seconds.

        Executors watch for requests to their runs, signal waits for signals, `result()` for
        the outcome; each reads the run again when woken. Waking without such a write is
        allowed (the caller reads and finds nothing new), so a store that cannot tell may
        return early. Writes of this process wake watchers at once; other processes' writes do
        where the store can tell (Postgres: ``NOTIFY``; SQLite: its data version, looked at
        every few tens of milliseconds).

        Returns:
            Whether it was woken (``False``: ``within`` passed).
        """
        ...

    async def block_unreadable(self, *, now: float, limit: int = 100) -> list[RunRecord]:
        """Make runs whose stored status this version does not know ``blocked`` (their
        ``error_text`` names the unknown value; nothing else changes), up to ``limit`` of
        them, so that they are reported instead of silently ignored.

        Returns:
            The runs blocked now (empty when there are none).
        """
        ...

    async def leased_on(self, host: str, *, workflows: Sequence[str]) -> list[RunRecord]:
        """Unfinished runs of ``workflows`` (not ``blocked`` or ``paused``: those `claim`
        would take once their lease lapsed) whose lease is held by an executor on ``host``
        (expired or not): a worker looks among them for runs whose executor process died, to
        take them over at once instead of after their lease."""
        ...

    async def prune(self, *, before: float, limit: int) -> int:
        """Delete up to ``limit`` finished runs last updated before ``before``, with their
        steps, signals, events and streams, in one short transaction. Unfinished runs are
        never touched, and neither is a finished run with an unfinished ancestor (its parent,
        the parent's parent...): the ancestor may still need its outcome.

        Returns:
            How many runs were deleted (fewer than ``limit`` means none are left to delete).
        """
        ...

    # -- schedules ----------------------------------------------------------------------------

    async def put_schedule(self, schedule: ScheduleRecord, *, now: float) -> ScheduleRecord:
        """Create the schedule ``schedule.name``, or update it, in one transaction, and wake
        the tasks waiting in `wait_for_schedules` (in every process, where the store can tell).

        An update replaces workflow, cron, timezone, args, catch_up and queue, and sets
        ``updated_at`` to ``now``; it keeps ``created_at``, ``paused`` and ``last_tick``, and
        keeps ``next_tick`` unless the cron expression or the time zone changed (then it takes
        ``schedule.next_tick``, which the caller computed from ``now``). A new schedule is
        stored as given, with ``created_at`` and ``updated_at`` set to ``now``.

        Returns:
            The schedule as stored now.
        """
        ...

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        """The schedule ``name``, or ``None``."""
        ...

    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, ordered by name."""
        ...

    async def set_schedule_paused(
        self, name: str, paused: bool, *, now: float, next_tick: float | None = None
    ) -> ScheduleRecord | None:
        """Pause or resume the schedule ``name`` (``updated_at`` becomes ``now``). Resuming
        with a ``next_tick`` also replaces its next tick (ticks that passed while it was
        paused are then skipped); resuming wakes `wait_for_schedules`.

        Returns:
            The schedule as it is now, or ``None`` when missing.
        """
        ...

    async def delete_schedule(self, name: str) -> bool:
        """Delete the schedule ``name`` (the runs it started are left alone).

        Returns:
            Whether it existed.
        """
        ...

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
        """Fire ticks of a schedule exactly once, however many workers try: in one
        transaction, if the schedule exists, is not paused and its ``next_tick`` still equals
        ``expected_tick`` (compare-and-set), record ``runs`` (one whose id is taken is
        skipped), set ``next_tick``, set ``last_tick`` (unless ``None``: the ticks were
        skipped) and ``updated_at = now``; otherwise write nothing. The new runs wake waiting
        workers as `create_run` does.

        Returns:
            The schedule as it is now (its ``next_tick`` tells whether it moved on), or
            ``None`` when missing.
        """
        ...

    async def wait_for_schedules(self, *, within: float) -> bool:
        """Wait until a schedule may have been created, changed or resumed (by this process
        or, where the store can tell, another one), or at the latest ``within`` seconds.
        Waking without such a write is allowed (the caller reads the schedules again).

        Returns:
            Whether it was woken (``False``: ``within`` passed).
        """
        ...

    async def close(self) -> None:
        """Release connections. The store is unusable afterwards. Idempotent."""
        ...

    async def __aenter__(self) -> Store:
        """Return the store itself."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        ...
