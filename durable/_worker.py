"""`Worker`: executes every runnable run of the workflows it knows, from any process.

A worker claims runnable runs from the store in batches (atomically: two workers never get the
same run), executes each in its own task under a renewed lease, and goes back for more.
Runnable means: started with `durable.start` and not yet executed, parked and due (its timer
passed, a signal or a cancel arrived), or held by an executor whose lease expired (it died).
Runs of workflows this worker does not know are left for a worker that does, and reported once.
Runs of a `durable.Queue` are claimed only while the queue's limits allow (the store checks
them); a worker given ``queues`` claims only the runs of those queues.
Beside the claim loop, a scheduler task (`durable._schedules.Scheduler`) fires the cron
schedules of the workflows the worker knows, each tick once across all workers.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Callable, Collection, Iterable
from typing import Any

import anyio

from durable import _tracing as tracing
from durable._config import MIN_LEASE_SECONDS, ExecutorConfig
from durable._decorators import definition_of
from durable._engine import RunAbandoned
from durable._executor import HOST, Executor, holder_is_dead
from durable._logging import RunLog
from durable._names import check_name
from durable._queues import Queue, declared_queues
from durable._registry import WorkflowDefinition, registered_workflows
from durable._schedules import Scheduler
from durable._stores import using_async
from durable._types import RunStatus
from durable.store import Lease, LeaseOwner, RunRecord, Store

__all__ = ["Worker"]

log = logging.getLogger("durable.worker")
_run_log = RunLog()  # each run's lifecycle, on durable.run

IDLE_SECONDS = 1.0
"""The longest an idle worker waits before it looks for runnable runs again. Stores wake it
sooner: when a write makes a run runnable (Postgres: ``LISTEN``/``NOTIFY`` from any process),
when a timer or lease is due, and SQLite every 50 ms (it has no cross-process notification)."""

UNREADABLE_SCAN_SECONDS = 60.0
"""How often a worker blocks runs whose stored status it does not know (and at start)."""

ORPHAN_SCAN_SECONDS = 5.0
"""How often a worker looks for runs still leased by dead processes on its own host (and at
start, so a worker restarted after a crash takes its predecessor's runs over at once)."""

_MIN_IDLE_SECONDS = 0.005
"""A due run that another worker holds for the moment is not claimed in a busy loop."""


def _queue_name(queue: object) -> str:
    if isinstance(queue, Queue):
        return queue.name
    if not isinstance(queue, str) or not queue.strip():
        raise ValueError(
            f"Worker(queues=...) takes durable.Queue objects or queue names (non-empty "
            f"strings), not {queue!r}"
        )
    return check_name(queue, "Worker(queues=...)")


class Worker:
    """Executes runnable runs: ``await Worker(store=...).run()``.

    Args:
        store: a store, a URL, or ``None`` for ``DURABLE_URL`` / ``sqlite:///durable.db``.
        workflows: the ``@workflow`` functions to execute; ``None`` means every workflow
            registered (imported) in this process when `run` starts.
        concurrency: how many runs it executes at once.
        lease: seconds a claimed run's lease lasts without renewal (renewed every third of it);
            a run whose worker died is taken over by another worker after that.
        grace: seconds `stop` lets running steps finish before it cancels them.
        park_after: a wait longer than this parks the run (default 5 s).
        config: every other timing of the executor, its clock and an activity interceptor
            (`durable.ExecutorConfig`; ``lease`` and ``park_after`` override its fields).
        queues: execute only the runs of these queues (`durable.Queue` objects or names);
            ``None`` (the default): runs of every queue and runs started on none. The limits
            of the queues this process declared are written to the store when it starts.

    Raises:
        ValueError / TypeError: an argument is out of range or not a workflow.
        ImportError: ``DURABLE_TRACING=on`` and OpenTelemetry is not installed.
    """

    def __init__(
        self,
        store: Store | str | None = None,
        workflows: Iterable[Callable[..., Any]] | None = None,
        *,
        concurrency: int = 100,
        lease: float | None = None,
        grace: float = 10.0,
        park_after: float | None = None,
        config: ExecutorConfig | None = None,
        queues: Iterable[Queue | str] | None = None,
    ) -> None:
        tracing.check()  # tracing asked for and impossible: say so now, not at each run
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"Worker(concurrency=...) must be an int >= 1, not {concurrency!r}")
        config = config or ExecutorConfig()
        lease = config.lease_seconds if lease is None else lease
        for name, value in (("lease", lease), ("grace", grace), ("park_after", park_after)):
            if value is None:
                continue
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"Worker({name}=...) must be a number of seconds > 0")
        if lease < MIN_LEASE_SECONDS:
            raise ValueError(
                f"Worker(lease={lease!r}) is too short: a lease must last at least "
                f"{MIN_LEASE_SECONDS:g} s (it is renewed every third of it, and a store round "
                "trip must fit in that), or the worker loses its own runs"
            )
        changes: dict[str, float] = {"lease_seconds": float(lease)}
        if park_after is not None:
            changes["park_after"] = float(park_after)
        self._config = config.replace(**changes)
        self._store_arg = store
        self._workflows: dict[str, WorkflowDefinition] | None = None
        if workflows is not None:
            self._workflows = {}
            for fn in workflows:
                defn = definition_of(fn)
                if not isinstance(defn, WorkflowDefinition):
                    raise TypeError(f"Worker(workflows=...) takes @workflow functions, not {fn!r}")
                self._workflows[defn.name] = defn
        self._queues: frozenset[str] | None = None
        if queues is not None:
            if isinstance(queues, str | Queue):
                queues = [queues]
            self._queues = frozenset(_queue_name(q) for q in queues)
            if not self._queues:
                raise ValueError("Worker(queues=...) needs at least one queue (or None for all)")
        self._concurrency = concurrency
        self._lease = float(lease)
        self._clock = self._config.clock
        self._grace = float(grace)
        self.leases: dict[str, Lease] = {}  # the runs executing now, by id
        self._owner = LeaseOwner(f"worker-{uuid.uuid4().hex}", HOST, os.getpid())
        self._stopping = False
        self._active = 0
        self._reported: set[str] = set()
        self._drained: anyio.Event | None = None
        self._idle: anyio.CancelScope | None = None
        self._slot_freed: anyio.Event | None = None
        self.completed = 0  # runs this worker executed to an outcome or a park

    def stop(self) -> None:
        """Stop claiming; running runs get `grace` seconds to finish, then are cancelled (and
        put back to ``pending`` with their leases released)."""
        self._stopping = True
        if self._idle is not None:
            self._idle.cancel()  # an idle wait ends now

    async def run(self) -> None:
        """Claim and execute runnable runs until `stop` is called (or this task is cancelled)."""
        try:
            async with using_async(self._store_arg) as store:  # stays open while it serves
                await self._serve(store)
        finally:
            # Reset here, not when serving starts: a `stop` called before this task first ran
            # (a test environment entered and left at once) must end it, not be forgotten.
            self._stopping = False

    async def _serve(self, store: Store) -> None:
        workflows = self._workflows if self._workflows is not None else registered_workflows()
        names = tuple(sorted(workflows))
        if not names:
            raise ValueError(
                "this worker knows no workflows: import the modules that define them, or pass "
                "Worker(workflows=[...])"
            )
        await self._declare_queues(store)
        queues: Collection[str] | None = self._queues
        scheduler = Scheduler(workflows, self._clock)  # fires the schedules of these workflows
        async with anyio.create_task_group() as tg:
            tg.start_soon(scheduler.run, store)
            next_report = 0.0
            next_orphan_scan = 0.0
            next_unreadable_scan = 0.0
            first_claim = True
            while not self._stopping:
                free = self._concurrency - self._active
                if free <= 0:  # every slot is busy: wait until a run ends
                    freed = self._slot_freed = anyio.Event()
                    with anyio.CancelScope() as self._idle, anyio.move_on_after(IDLE_SECONDS):
                        await freed.wait()
                    continue
                claimed: list[tuple[RunRecord, Lease]] = []
                try:
                    claimed = await store.claim(
                        self._owner,
                        now=self._clock.time(),
                        duration=self._lease,
                        limit=free,
                        workflows=names,
                        queues=queues,
                    )
                except Exception:
                    log.exception("durable worker: claiming runs failed; retrying")
                else:
                    if first_claim:  # the store answers: operators (and tests) may wait for this
                        first_claim = False
                        log.info("durable worker: claiming runs of %s from %r", names, store)
                if self._clock.time() >= next_orphan_scan:
                    next_orphan_scan = self._clock.time() + ORPHAN_SCAN_SECONDS
                    claimed += await self._take_over_orphans(store, names, free - len(claimed))
                for run, lease in claimed:
                    self._active += 1
                    tg.start_soon(self._execute, store, workflows[run.workflow], run, lease)
                if self._clock.time() >= next_report:
                    next_report = self._clock.time() + 5.0
                    await self._report_unknown(store, names)
                if self._clock.time() >= next_unreadable_scan:
                    next_unreadable_scan = self._clock.time() + UNREADABLE_SCAN_SECONDS
                    await self._block_unreadable(store)
                if not claimed and not self._stopping:
                    started = anyio.current_time()
                    with anyio.CancelScope() as self._idle:
                        await store.wait_for_work(
                            workflows=names,
                            now=self._clock.time(),
                            within=IDLE_SECONDS,
                            queues=queues,
                        )
                    if anyio.current_time() - started < _MIN_IDLE_SECONDS:
                        await anyio.sleep(_MIN_IDLE_SECONDS)
            scheduler.stop()
            if self._active:
                self._drained = anyio.Event()
                with anyio.move_on_after(self._grace):
                    await self._drained.wait()
            tg.cancel_scope.cancel()  # what is still running is put back to pending

    async def _execute(
        self, store: Store, defn: WorkflowDefinition, run: RunRecord, lease: Lease
    ) -> None:
        self.leases[run.id] = lease
        _run_log.claimed(run)
        try:
            executor = Executor(store, self._config, wait_parked=False, log_runs=True)
            await executor.drive(defn, run, lease)
        except RunAbandoned:
            log.debug("durable worker: run %r abandoned (a test's simulated crash)", run.id)
        except Exception:  # the executor logged how the run ended (durable.run)
            pass
        finally:
            self.leases.pop(run.id, None)
            self._active -= 1
            self.completed += 1
            if self._slot_freed is not None:
                self._slot_freed.set()
            if self._active == 0 and self._drained is not None:
                self._drained.set()

    async def _take_over_orphans(
        self, store: Store, names: tuple[str, ...], free: int
    ) -> list[tuple[RunRecord, Lease]]:
        """Runs whose lease an executor process on this host still holds although that
        process is gone (a worker SIGKILLed and restarted, a crashed ``durable.run``): taken
        over at once, as ``durable.run`` does, instead of after the lease expires."""
        if free <= 0:
            return []
        try:
            held = await store.leased_on(HOST, workflows=names)
        except Exception:
            log.exception("durable worker: looking for runs of dead local executors failed")
            return []
        taken: list[tuple[RunRecord, Lease]] = []
        for run in held:
            if len(taken) >= free or run.lease_owner == self._owner.owner:
                continue
            if self._queues is not None and run.queue not in self._queues:
                continue  # another worker serves that queue
            if run.id in self.leases or not holder_is_dead(run):
                continue
            try:
                lease = await store.acquire_lease(
                    run.id,
                    self._owner,
                    now=self._clock.time(),
                    duration=self._lease,
                    takeover_token=run.lease_token,
                )
            except Exception:
                log.exception("durable worker: taking over run %r failed", run.id)
                continue
            if lease is not None:
                log.info(
                    "durable worker: took over run %r from dead process %s", run.id, run.lease_pid
                )
                taken.append((run, lease))
        return taken

    async def _declare_queues(self, store: Store) -> None:
        """Write the limits of the queues this process declared (those it serves, when it
        serves only some), so that the latest declaration is the one every worker obeys."""
        for queue in declared_queues():
            if self._queues is None or queue.name in self._queues:
                try:
                    await queue.declare(store)
                except Exception:
                    log.exception("durable worker: recording the limits of %r failed", queue)

    async def _block_unreadable(self, store: Store) -> None:
        """Runs with a status this version does not know are never claimed; block them (once,
        by whichever worker gets there first) and say so, instead of ignoring them."""
        try:
            blocked = await store.block_unreadable(now=self._clock.time())
        except Exception:
            log.exception("durable worker: looking for runs with unknown statuses failed")
            return
        for run in blocked:
            log.warning("durable worker: run %r is blocked: %s", run.id, run.error_text)

    async def _report_unknown(self, store: Store, names: tuple[str, ...]) -> None:
        try:
            pending = await store.list_runs(status=RunStatus.PENDING, limit=100)
        except Exception:
            return
        for run in pending:
            if run.workflow not in names and run.id not in self._reported:
                self._reported.add(run.id)
                log.warning(
                    "durable worker: run %r is of workflow %r, which this worker does not know; "
                    "it stays pending for a worker that imports it",
                    run.id,
                    run.workflow,
                )
