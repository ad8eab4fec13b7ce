"""The store's semantics as pure functions on records: one source of truth for every backend.

`MemoryStore` is a dict, a lock and these functions. `SQLStore` spells the same rules as SQL
statements (`._statements.Statements`, whose comments point back here); the differential test
(``tests/backends/test_differential.py``) applies one random operation sequence to both and
compares every record after every operation, so the two spellings cannot drift apart.

Each transition takes a record (and the call's inputs) and returns the new record, or the same
record when the call leaves it alone; none of them reads a clock or touches a database. Nothing
here imports SQLAlchemy, so the in-memory store stays light.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from durable.store import (
    EntryKind,
    Interruption,
    Lease,
    LeaseLost,
    LeaseOwner,
    QueueSettings,
    RunQuery,
    RunRecord,
    RunStatus,
    RunUpdate,
    ScheduleRecord,
    StepRecord,
    StepStatus,
    StoreError,
    StreamEntry,
    due_at,
)

from ._doorbell import PUBLISHED

__all__ = [
    "PARKED",
    "SCHEDULE_BELL",
    "QueueLoad",
    "acquire",
    "admits",
    "check_new_steps",
    "check_outcomes",
    "check_step_batch",
    "check_unrecorded",
    "claim_order",
    "continued",
    "fenced",
    "interruption",
    "lease_free",
    "leased_on",
    "matches",
    "merge_claims",
    "newest_first",
    "on_signal",
    "parked_idle",
    "prunable",
    "queue_due",
    "queue_load",
    "queue_order",
    "released",
    "renewed",
    "request_cancel",
    "request_pause",
    "request_rollback",
    "resume",
    "runnable",
    "schedule_fired",
    "schedule_fires",
    "schedule_paused",
    "schedule_put",
    "served",
    "signal_accepted",
    "unfinished",
    "updated",
    "with_admitted",
    "woken",
]

PARKED = (RunStatus.SLEEPING, RunStatus.WAITING)
"""The statuses of a parked run: waiting for a timer or a signal."""


# -- what a run is -------------------------------------------------------------------------------


def unfinished(run: RunRecord) -> bool:
    """The run has not reached a final status (it may still be leased, signalled, requested)."""
    return not RunStatus(run.status).finished


def parked_idle(run: RunRecord) -> bool:
    """Parked (``sleeping`` / ``waiting``) and executed by nobody (no lease owner)."""
    return run.status in PARKED and run.lease_owner is None


def runnable(run: RunRecord, now: float) -> bool:
    """Whether `Store.claim` may take the run at ``now``: `durable.store.due_at` has come.

    That is: ``pending`` and not leased; parked and not leased with ``wake_at <= now``; or
    leased with an expired lease (its executor died), unless ``blocked`` or ``paused``. A
    pending run is runnable whatever its ``created_at`` (a claimer whose clock is behind the
    creator's still takes it at once) unless it has a ``wake_at`` (a delayed start): then
    from that time. A ``paused`` run is never runnable by time alone, not
    even with a lapsed lease: only `Store.resume` (a write) un-pauses it.

    SQL: ``Statements._claimable`` (the ``runnable`` predicate) and ``Statements._due``.
    """
    due = due_at(run)
    if due is None:
        return False
    if run.lease_owner is None and run.status == RunStatus.PENDING and run.wake_at is None:
        return True
    return due <= now


def claim_order(run: RunRecord) -> tuple[float, str]:
    """The order in which `Store.claim` takes runnable runs: the wake time of a parked one,
    else its creation time; then the id. SQL: ``ORDER BY coalesce(wake_at, created_at), id``."""
    return (run.wake_at if run.wake_at is not None else run.created_at, run.id)


def leased_on(run: RunRecord, host: str, workflows: Collection[str]) -> bool:
    """`Store.leased_on`: a run of ``workflows`` leased by an executor on ``host`` that a
    worker may take over when that executor died: one `runnable` once its lease lapses
    (unfinished, not ``blocked``, not ``paused``). SQL: ``Statements._leased_on``."""
    return (
        run.workflow in workflows
        and run.lease_owner is not None
        and run.lease_host == host
        and unfinished(run)
        and run.status not in (RunStatus.BLOCKED, RunStatus.PAUSED)
    )


# -- leases --------------------------------------------------------------------------------------


def lease_free(run: RunRecord, now: float, takeover_token: int | None = None) -> bool:
    """Whether `Store.acquire_lease` may take the run: unfinished, and nobody holds the lease,
    or it expired (``lease_expires_at <= now``), or the caller names the current token
    (``takeover_token``: it verified that the holder is dead). SQL: ``Statements.acquire``."""
    if not unfinished(run):
        return False
    return (
        run.lease_owner is None
        or (run.lease_expires_at is not None and run.lease_expires_at <= now)
        or (takeover_token is not None and run.lease_token == takeover_token)
    )


def acquire(
    run: RunRecord,
    owner: LeaseOwner,
    *,
    now: float,
    duration: float,
    takeover_token: int | None = None,
) -> tuple[RunRecord, Lease] | None:
    """`Store.acquire_lease` on one record: the leased record and its lease, or ``None`` when
    the lease is not free (see `lease_free`). The token is incremented, the status becomes
    ``running``, ``error_text`` and ``wake_at`` are cleared, ``updated_at`` is ``now``,
    ``started_at`` is ``now`` unless set before, and taking a lease someone still held counts
    one more ``recoveries``."""
    if not lease_free(run, now, takeover_token):
        return None
    expires = now + duration
    run = replace(
        run,
        recoveries=run.recoveries + (run.lease_owner is not None),
        started_at=now if run.started_at is None else run.started_at,
        status=RunStatus.RUNNING,
        error_text=None,
        wake_at=None,
        updated_at=now,
        lease_owner=owner.owner,
        lease_host=owner.host,
        lease_pid=owner.pid,
        lease_token=run.lease_token + 1,
        lease_expires_at=expires,
    )
    return run, Lease(run.id, owner, run.lease_token, expires)


def fenced(run: RunRecord | None, lease: Lease) -> RunRecord:
    """The run, if ``lease`` may still write to it (its token is the run's).

    Raises:
        LeaseLost: the run is gone, or someone acquired it since (its token moved on).
    """
    if run is None:
        raise LeaseLost(lease.run_id, "the run no longer exists")
    if run.lease_token != lease.token:
        raise LeaseLost(lease.run_id, f"its fencing token is {run.lease_token}, not {lease.token}")
    return run


def renewed(run: RunRecord, expires: float) -> RunRecord:
    """`Store.renew_lease` (after `fenced`): the new expiry; ``updated_at`` is left alone."""
    return replace(run, lease_expires_at=expires)


def released(run: RunRecord) -> RunRecord:
    """The run without a lease holder: owner, host, pid and expiry cleared, the token kept
    (`Store.release_lease` after `fenced`, and ``RunUpdate(release=True)``)."""
    return replace(run, lease_owner=None, lease_host=None, lease_pid=None, lease_expires_at=None)


# -- commits -------------------------------------------------------------------------------------


def interruption(run: RunRecord) -> Interruption | None:
    """What stops a ``check_requests`` commit (a step about to start): a pause request, or a
    cancel request not yet delivered (``cancelled_seq`` unset). SQL: ``Statements.
    insert_step_starting`` (``may_start``) and ``_sql_commits.interruption``."""
    cancel = run.cancel_requested and run.cancelled_seq is None
    if cancel or run.pause_requested:
        return Interruption(cancel=cancel, pause=run.pause_requested)
    return None


def updated(run: RunRecord, update: RunUpdate, now: float) -> RunRecord:
    """A `RunUpdate` applied by `Store.commit`: ``updated_at`` becomes ``now``; a ``None``
    ``result`` / ``error`` / ``cancelled_seq`` / ``wake_at`` keeps the stored value (a release
    with a ``wake_at`` takes the earlier of the two: see `on_signal`); ``error_text`` is always
    replaced; ``release`` also `released` the lease.
    SQL: ``Statements.update`` / ``update_release`` (``coalesce`` keeps a value)."""
    wake_at = run.wake_at if update.wake_at is None else update.wake_at
    if update.release and run.wake_at is not None and update.wake_at is not None:
        # a signal set it while the run was leased (`on_signal`): the earlier wins
        wake_at = min(run.wake_at, update.wake_at)
    run = replace(
        run,
        updated_at=now,
        status=update.status,
        result=run.result if update.result is None else update.result,
        error=run.error if update.error is None else update.error,
        error_text=update.error_text,
        cancelled_seq=run.cancelled_seq if update.cancelled_seq is None else update.cancelled_seq,
        wake_at=wake_at,
    )
    return released(run) if update.release else run


def check_step_batch(run_id: str, steps: Sequence[StepRecord]) -> None:
    """Refuse a batch that names another run or repeats a step number, before any write.

    Raises:
        StoreError: a step belongs to another run, or two steps share a ``seq``.
    """
    seen: set[int] = set()
    for step in steps:
        if step.run_id != run_id:
            raise StoreError(
                f"cannot commit step {step.seq} of run {step.run_id!r} under the lease of run "
                f"{run_id!r}; nothing was written"
            )
        if step.seq in seen:
            raise StoreError(
                f"cannot commit steps to run {run_id!r}: step {step.seq} appears twice in one "
                "batch; nothing was written"
            )
        seen.add(step.seq)


def check_new_steps(
    run_id: str, recorded: Mapping[int, StepRecord], steps: Sequence[StepRecord]
) -> None:
    """Refuse to insert a step whose ``seq`` is already recorded (a step is written once).

    Raises:
        StoreError: naming the first such step.
    """
    clash = sorted(s.seq for s in steps if s.seq in recorded)
    if clash:
        raise StoreError(
            f"cannot commit steps to run {run_id!r}: step {clash[0]} is already "
            "recorded (a step is written once); nothing was written"
        )


def check_unrecorded(run_id: str, recorded: StepRecord | None, seq: int) -> None:
    """Refuse to write over a step that is recorded with another status than ``started``
    (an outcome, or a received signal, replaces only a ``started`` row, or fills a gap).

    Raises:
        StoreError: the step is already recorded as completed / failed.
    """
    if recorded is not None and recorded.status != StepStatus.STARTED:
        raise StoreError(
            f"cannot record the outcome of step {seq} of run {run_id!r}: it is already "
            f"recorded as {recorded.status!r} (a step is written once); nothing was written"
        )


def check_outcomes(
    run_id: str, recorded: Mapping[int, StepRecord], outcomes: Sequence[StepRecord]
) -> None:
    """`check_unrecorded` for each of a commit's ``outcomes``."""
    for step in outcomes:
        check_unrecorded(run_id, recorded.get(step.seq), step.seq)


# -- requests and signals (no lease needed) ------------------------------------------------------


def request_cancel(run: RunRecord, now: float) -> RunRecord:
    """`Store.request_cancel`: an unfinished run gets ``cancel_requested``; a parked one (or
    a delayed pending one) that nobody executes becomes due now, to be cancelled. SQL:
    ``Statements.request_cancel``."""
    if not unfinished(run):
        return run
    delayed = (
        run.status == RunStatus.PENDING and run.lease_owner is None and run.wake_at is not None
    )
    wake_at = now if parked_idle(run) or delayed else run.wake_at
    return replace(run, cancel_requested=True, wake_at=wake_at, updated_at=now)


def request_pause(run: RunRecord, now: float) -> RunRecord:
    """`Store.request_pause`: an unfinished run gets ``pause_requested``; one nobody executes
    (``pending`` or parked, no lease owner) is ``paused`` at once. A leased run keeps its
    status: its executor pauses it at its next step boundary (a ``check_requests`` commit is
    refused with the `Interruption`). SQL: ``Statements.request_pause``."""
    if not unfinished(run):
        return run
    idle = run.lease_owner is None and run.status in (RunStatus.PENDING, *PARKED)
    status = RunStatus.PAUSED if idle else run.status
    return replace(run, pause_requested=True, status=status, updated_at=now)


def resume(run: RunRecord, now: float) -> RunRecord:
    """`Store.resume`: an unfinished run loses ``pause_requested``; a ``paused`` one becomes
    ``pending`` and runnable at once (its ``wake_at`` cleared: a sleep or wait it was parked in
    parks it again when replayed). SQL: ``Statements.resume``."""
    if not unfinished(run):
        return run
    if run.status != RunStatus.PAUSED:
        return replace(run, pause_requested=False, updated_at=now)
    return replace(
        run, pause_requested=False, status=RunStatus.PENDING, wake_at=None, updated_at=now
    )


def request_rollback(run: RunRecord, now: float) -> RunRecord:
    """`Store.request_rollback`: a ``completed`` run becomes ``compensating`` with
    ``rollback_requested``; any other is left alone. SQL: ``Statements.request_rollback``."""
    if run.status != RunStatus.COMPLETED:
        return run
    return replace(run, status=RunStatus.COMPENSATING, rollback_requested=True, updated_at=now)


def signal_accepted(run: RunRecord) -> bool:
    """Whether `Store.send_signal` buffers a signal for the run: it is unfinished."""
    return unfinished(run)


def on_signal(run: RunRecord, now: float) -> RunRecord:
    """A buffered signal's effect on its run: a ``waiting`` run becomes due now (``wake_at =
    now``); others are unchanged (a sleeping run wakes at its timer, a running one finds the
    signal itself). A run still leased keeps it when it parks (`updated` takes the earlier
    wake time), so a signal sent just before it parked wakes it; if its executor takes the
    signal itself, `signal_taken` clears it. ``updated_at`` is left alone.
    SQL: ``Statements.wake_waiting``."""
    if run.status == RunStatus.WAITING:
        return replace(run, wake_at=now)
    return run


def signal_taken(run: RunRecord) -> RunRecord:
    """The executor consumed a signal itself (`Store.receive_signal`): a wake time a signal set
    while it held the lease is spent. SQL: ``Statements.clear_wake``."""
    return replace(run, wake_at=None)


def woken(run: RunRecord, now: float) -> RunRecord:
    """`Store.wake`: a parked run that nobody executes becomes due now; others are unchanged.
    SQL: ``Statements.wake_parked``."""
    return replace(run, wake_at=now) if parked_idle(run) else run


# -- retention -----------------------------------------------------------------------------------


def prunable(runs: Mapping[str, RunRecord], before: float) -> list[str]:
    """Ids of the finished runs last updated before ``before`` that no unfinished run refers
    to: none of their ancestors (parent, the parent's parent...) is unfinished. Oldest first
    (by ``updated_at``, then id).

    The SQL store spells the same rule as a recursive query (``Statements.prune_ids``).
    """
    keep: set[str] = set()  # the unfinished runs and everything below them
    children: dict[str, list[str]] = {}
    for run in runs.values():
        if run.parent_id is not None:
            children.setdefault(run.parent_id, []).append(run.id)
    todo = [run.id for run in runs.values() if unfinished(run)]
    while todo:
        run_id = todo.pop()
        if run_id in keep:
            continue
        keep.add(run_id)
        todo.extend(children.get(run_id, ()))
    old = [
        run
        for run in runs.values()
        if run.id not in keep and not unfinished(run) and run.updated_at < before
    ]
    old.sort(key=lambda run: (run.updated_at, run.id))
    return [run.id for run in old]


def matches(run: RunRecord, query: RunQuery) -> bool:
    """Whether `Store.find_runs` with ``query`` selects ``run`` (its limit aside)."""
    q = query
    return (
        (q.statuses is None or run.status in q.statuses)
        and (q.workflows is None or run.workflow in q.workflows)
        and (q.id_prefix is None or run.id.startswith(q.id_prefix))
        and (q.parent_id is None or run.parent_id == q.parent_id)
        and (q.created_after is None or run.created_at > q.created_after)
        and (q.created_before is None or run.created_at < q.created_before)
        and (q.older_than is None or (run.created_at, run.id) < q.older_than)
    )


def newest_first(run: RunRecord) -> tuple[float, str]:
    """The order of `Store.find_runs`, reversed: sort with ``reverse=True``."""
    return (run.created_at, run.id)


def reset(run: RunRecord, *, rollback: bool, now: float) -> RunRecord:
    """`Store.reset_run`: the run made ``pending`` again, as a retry leaves it. SQL:
    ``Statements.reset_run``."""
    return replace(
        run,
        status=RunStatus.PENDING,
        result=None,
        error=None,
        error_text=None,
        lease_owner=None,
        lease_host=None,
        lease_pid=None,
        lease_expires_at=None,
        lease_token=run.lease_token + 1,
        cancel_requested=False,
        cancelled_seq=None,
        rollback_requested=rollback,
        wake_at=None,
        pause_requested=False,
        recoveries=0,
        deadline=None,
        updated_at=now,
    )


def resettable(run: RunRecord, token: int, status: RunStatus) -> bool:
    """`Store.reset_run`'s condition: nobody changed or holds the run since it was read."""
    return run.lease_token == token and run.status == status and run.lease_owner is None


def deletable(runs: Mapping[str, RunRecord], run_id: str) -> bool:
    """`Store.delete_run`'s condition: the run is finished and no ancestor is unfinished."""
    seen: set[str] = set()
    run: RunRecord | None = runs.get(run_id)
    if run is None or not RunStatus(run.status).finished:
        return False
    while run is not None and run.parent_id is not None and run.parent_id not in seen:
        seen.add(run.parent_id)
        run = runs.get(run.parent_id)
        if run is not None and not RunStatus(run.status).finished:
            return False
    return True


# -- queues --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueLoad:
    """What a queue's limits are measured against at one moment (see
    `durable.store.QueueSettings`).

    Attributes:
        executing: its runs an executor holds the lease of.
        by_key: the same, per ``queue_key`` (runs without a key are not counted here).
        started: its runs started within the rate window (``started_at > now - rate_period``).
        oldest_start: the earliest of those starts (the window has room again
            ``rate_period`` after it), or ``None``.
    """

    executing: int = 0
    by_key: Mapping[str, int] = field(default_factory=dict)
    started: int = 0
    oldest_start: float | None = None


def served(run: RunRecord, workflows: Collection[str], queues: Collection[str] | None) -> bool:
    """Whether a claim for ``workflows`` and ``queues`` (``None``: every queue and none) may
    take ``run`` at all."""
    if run.workflow not in workflows:
        return False
    return queues is None or (run.queue is not None and run.queue in queues)


def queue_load(settings: QueueSettings, runs: Iterable[RunRecord], now: float) -> QueueLoad:
    """The load of the queue ``settings`` names, from its ``runs`` (the runs of other queues
    are ignored). SQL: ``Queues._load``."""
    executing = started = 0
    by_key: dict[str, int] = {}
    oldest: float | None = None
    since = now - settings.rate_period if settings.rate_period is not None else None
    for run in runs:
        if run.queue != settings.name:
            continue
        if run.lease_owner is not None:
            executing += 1
            if run.queue_key is not None:
                by_key[run.queue_key] = by_key.get(run.queue_key, 0) + 1
        if since is not None and run.started_at is not None and run.started_at > since:
            started += 1
            oldest = run.started_at if oldest is None else min(oldest, run.started_at)
    return QueueLoad(executing, by_key, started, oldest)


def admits(settings: QueueSettings, load: QueueLoad, run: RunRecord) -> bool:
    """Whether the queue's limits let an executor take ``run`` now: always for a run whose
    lease someone holds (a takeover: it counts already); otherwise while one more executing
    run stays within ``concurrency`` and, under its key, ``per_key_concurrency``, and, for a
    run that never started, one more start within ``rate_count``."""
    if run.lease_owner is not None:
        return True
    if settings.concurrency is not None and load.executing >= settings.concurrency:
        return False
    key, per_key = run.queue_key, settings.per_key_concurrency
    if per_key is not None and key is not None and load.by_key.get(key, 0) >= per_key:
        return False
    rate = settings.rate_count
    return rate is None or run.started_at is not None or load.started < rate


def with_admitted(load: QueueLoad, run: RunRecord, now: float) -> QueueLoad:
    """The load once ``run`` (admitted by `admits`) is leased at ``now``."""
    if run.lease_owner is not None:
        return load  # a takeover: it was counted already
    by_key = dict(load.by_key)
    if run.queue_key is not None:
        by_key[run.queue_key] = by_key.get(run.queue_key, 0) + 1
    started, oldest = load.started, load.oldest_start
    if run.started_at is None:
        started += 1
        oldest = now if oldest is None else min(oldest, now)
    return QueueLoad(load.executing + 1, by_key, started, oldest)


def queue_order(run: RunRecord) -> tuple[bool, int, float, str]:
    """The order in which `Store.claim` takes the runnable runs of one queue: runs whose
    executor died first (they count already, so a queue full of dead runs is never stuck),
    then smaller ``priority`` first, then `claim_order`. SQL: the takeovers, then the others
    ``ORDER BY priority, coalesce(wake_at, created_at), id`` (the queue claim index)."""
    return (run.lease_owner is None, run.priority, *claim_order(run))


def queue_due(settings: QueueSettings, load: QueueLoad, runs: Iterable[RunRecord]) -> float | None:
    """`Store.next_due` for one queue's ``runs``: a leased run when its lease lapses; one
    nobody holds at its `due_at`, but only while the queue has room for it (not when
    ``concurrency`` or its key's limit is reached: a release frees room, and rings), and, when
    it never started and the rate window is full, not before the window frees a start."""
    full = settings.concurrency is not None and load.executing >= settings.concurrency
    rate_full = settings.rate_count is not None and load.started >= settings.rate_count
    reopens = None
    if rate_full and load.oldest_start is not None and settings.rate_period is not None:
        reopens = load.oldest_start + settings.rate_period
    soonest: float | None = None
    for run in runs:
        due = due_at(run)
        if due is None:
            continue
        if run.lease_owner is None:
            if full:
                continue
            key, per_key = run.queue_key, settings.per_key_concurrency
            if per_key is not None and key is not None and load.by_key.get(key, 0) >= per_key:
                continue
            if rate_full and run.started_at is None:
                if reopens is None:
                    continue
                due = max(due, reopens)
        soonest = due if soonest is None else min(soonest, due)
    return soonest


def merge_claims(batches: Sequence[Sequence[RunRecord]], limit: int) -> list[RunRecord]:
    """The runs a claim takes from ``batches`` (the runnable runs without a queue in
    `claim_order`, and each queue's admitted runs in `queue_order`): up to ``limit``, always
    the earliest due (`claim_order`) of the batches' next runs, so no queue waits behind
    another's backlog and each keeps its own order."""
    heads = [0] * len(batches)
    taken: list[RunRecord] = []
    while len(taken) < limit:
        best = -1
        for i, batch in enumerate(batches):
            if heads[i] < len(batch) and (
                best < 0 or claim_order(batch[heads[i]]) < claim_order(batches[best][heads[best]])
            ):
                best = i
        if best < 0:
            break
        taken.append(batches[best][heads[best]])
        heads[best] += 1
    return taken


# -- continue-as-new -----------------------------------------------------------------------------


def continued(run: RunRecord, args: bytes, now: float) -> RunRecord:
    """`Store.continue_run` (after `fenced`): the run's next generation, under the same lease.

    New ``args`` and ``generation + 1``; ``running``, its outcome, ``error_text``, ``wake_at``
    and ``cancelled_seq`` cleared and ``recoveries`` 0; a cancel request is kept only while it
    is undelivered (``cancelled_seq`` unset): a delivered one belonged to the generation that
    ends. Everything else (lease, pause request, queue, deadline, times) is kept. Its steps
    and consumed signals are deleted beside it. SQL: ``Statements.continue_run``."""
    return replace(
        run,
        args=args,
        generation=run.generation + 1,
        status=RunStatus.RUNNING,
        result=None,
        error=None,
        error_text=None,
        wake_at=None,
        cancel_requested=run.cancel_requested and run.cancelled_seq is None,
        cancelled_seq=None,
        recoveries=0,
        updated_at=now,
    )


# -- schedules -----------------------------------------------------------------------------------

SCHEDULE_BELL = "\x1eschedules"
"""What a write to the schedules rings the doorbell (and, on Postgres, ``NOTIFY``) with: a key
no run id can be (ids hold no control character), so it wakes `Store.wait_for_schedules` and
the workers waiting for work, and no watcher of a run."""


def schedule_put(
    existing: ScheduleRecord | None, schedule: ScheduleRecord, now: float
) -> ScheduleRecord:
    """`Store.put_schedule`: a new schedule as given (created and updated ``now``); an
    existing one takes the new definition, keeps ``created_at``, ``paused`` and ``last_tick``,
    and keeps ``next_tick`` unless its cron expression or time zone changed.
    SQL: ``_sql_schedules.Schedules.put``."""
    if existing is None:
        return replace(schedule, created_at=now, updated_at=now)
    same_times = (existing.cron, existing.timezone) == (schedule.cron, schedule.timezone)
    return replace(
        schedule,
        paused=existing.paused,
        next_tick=existing.next_tick if same_times else schedule.next_tick,
        last_tick=existing.last_tick,
        created_at=existing.created_at,
        updated_at=now,
    )


def schedule_paused(
    schedule: ScheduleRecord, paused: bool, now: float, next_tick: float | None
) -> ScheduleRecord:
    """`Store.set_schedule_paused`: ``paused`` set; a resume given a ``next_tick`` takes it."""
    tick = next_tick if not paused and next_tick is not None else schedule.next_tick
    return replace(schedule, paused=paused, next_tick=tick, updated_at=now)


def schedule_fires(schedule: ScheduleRecord, expected_tick: float) -> bool:
    """`Store.fire_schedule`'s compare-and-set: not paused, and still expecting that tick."""
    return not schedule.paused and schedule.next_tick == expected_tick


def schedule_fired(
    schedule: ScheduleRecord, next_tick: float | None, last_tick: float | None, now: float
) -> ScheduleRecord:
    """`Store.fire_schedule` once `schedule_fires`: the next tick set, the last one recorded
    (``None`` keeps it: the ticks were skipped)."""
    last = schedule.last_tick if last_tick is None else last_tick
    return replace(schedule, next_tick=next_tick, last_tick=last, updated_at=now)


# -- events and streams ---------------------------------------------------------------------------


def published_bell(run_id: str) -> str:
    """What a publication of ``run_id`` rings the doorbell (and, on Postgres, ``NOTIFY``) with:
    `._doorbell.PUBLISHED` and the run's id. No run id holds a control character, so it wakes
    only the tasks in `Store.wait_published` for that run, never the workers waiting for work."""
    return PUBLISHED + run_id


def withdrawable(entry: StreamEntry, generation: int, seq: int, below: int) -> bool:
    """`Store.withdraw`: an entry written by an attempt below ``below`` of step ``seq`` of
    ``generation`` (a workflow step's entries have no attempt: only a retry of the run,
    `Store.reset_run`, withdraws them), not a marker and not withdrawn yet.
    SQL: ``_sql_streams.Streams.withdraw``."""
    return (
        entry.kind != EntryKind.RETRY
        and not entry.withdrawn
        and entry.generation == generation
        and entry.seq == seq
        and (entry.attempt or 0) < below
    )


WITHDRAW_ALL = 2**31 - 1
"""``below`` for `Store.reset_run`'s withdrawal: every attempt of a dropped step, and the
workflow step's own entries (no attempt)."""


def markers(withdrawn: Iterable[StreamEntry]) -> list[tuple[str, int, int, int | None]]:
    """The ``retry`` markers a withdrawal appends: one per stream and attempt withdrawn, as
    ``(key, generation, seq, attempt)``, in the order the withdrawn entries were written."""
    seen: dict[tuple[str, int, int, int | None], None] = {}
    for entry in withdrawn:
        seen.setdefault((entry.key, entry.generation, entry.seq, entry.attempt))
    return list(seen)
