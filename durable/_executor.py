"""`Executor`: executes runs against one store.

Executing a run means: record it (or find it), take its lease, replay it with an `Engine` while
a supervising task renews the lease and passes on cancel and pause requests, and release the
lease when the engine is done. The same id again returns the recorded outcome without executing
anything. Every timing comes from the executor's `ExecutorConfig`.

Leases and takeover: a run whose executor was a process on this host that no longer exists is
taken over at once; otherwise a run leased by someone else is waited for until that executor
finishes it or its lease expires.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from typing import Any

import anyio

from durable import _tracing as tracing
from durable._clock import SystemClock
from durable._codec import Payloads
from durable._config import ExecutorConfig
from durable._engine import PARKED, Continued, Engine, RunAbandoned
from durable._errors import LeaseLost, RecoveryLimitExceeded, StoreError, WorkflowNotFound
from durable._logging import RunLog
from durable._recording import ensure_run, outcome
from durable._registry import WorkflowDefinition
from durable._trust import trust_of
from durable._types import RunStatus
from durable.store import Lease, LeaseOwner, RunRecord, RunUpdate, Store, UnreadableRecord

__all__ = ["HOST", "Executor", "holder_is_dead"]

HOST = socket.gethostname()
_active_owners: set[str] = set()  # lease owners of this process that execute a run now


def holder_is_dead(run: RunRecord) -> bool:
    """True when the lease holder is a process on this host that no longer runs."""
    if run.lease_owner is None or run.lease_host != HOST or run.lease_pid is None:
        return False
    if run.lease_pid == os.getpid():
        return run.lease_owner not in _active_owners
    try:
        os.kill(run.lease_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child not yet reaped by its parent is a zombie: dead for our purposes
        with open(f"/proc/{run.lease_pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return False


class Executor:
    """Executes runs of one store with one config.

    Args:
        store: where the runs are recorded.
        config: timings, clock and interceptor (default: the production values).
        wait_parked: `execute` waits for a parked run to wake (``run`` / ``execute``);
            ``False`` (a worker) returns `PARKED` at once: the worker resumes it when due,
            and a parked child parks its parent too, woken when the child finishes.
        log_runs: log each run's lifecycle on ``durable.run`` (a worker's executors do;
            ``durable.run`` / ``execute`` raise the outcome to their caller instead).
    """

    def __init__(
        self,
        store: Store,
        config: ExecutorConfig | None = None,
        *,
        wait_parked: bool = True,
        log_runs: bool = False,
    ) -> None:
        """See the class docstring."""
        self.store = store
        self.config = config or ExecutorConfig()
        self.wait_parked = wait_parked
        self.log = RunLog() if log_runs else None

    async def ensure_run(
        self,
        defn: WorkflowDefinition,
        run_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        parent_id: str | None = None,
        *,
        check_args: bool = True,
        deadline: float | None = None,
    ) -> RunRecord:
        """The run ``run_id``, recorded now (at the config's clock) if it is new, timing out
        at ``deadline`` (see `durable._recording.ensure_run`)."""
        return await ensure_run(
            self.store,
            defn,
            run_id,
            args,
            kwargs,
            parent_id,
            self.config.clock,
            check_args,
            deadline=deadline,
        )

    async def execute(
        self,
        defn: WorkflowDefinition,
        run_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        parent_id: str | None = None,
        *,
        check_args: bool = True,
        deadline: float | None = None,
    ) -> Any:
        """Execute run ``run_id`` (recorded now if new, timing out at ``deadline``) until it
        finishes, and return its result or raise its error; or return `PARKED` once it parks
        when not ``wait_parked``."""
        store, clock = self.store, self.config.clock
        run = await self.ensure_run(
            defn, run_id, args, kwargs, parent_id, check_args=check_args, deadline=deadline
        )
        delay = 0.02
        while True:
            if run.status.finished:
                return outcome(store, run)
            pause = self._parked_for(run, clock.time())
            if pause and not self.wait_parked:
                return PARKED
            lease = None if pause else await self._acquire(run)
            if lease is not None:
                result = await self.drive(defn, run, lease)
                if result is not PARKED or not self.wait_parked:
                    return result
                delay = 0.02  # parked: this call waits for the wake-up, holding nothing of it
            elif run.status == RunStatus.BLOCKED and run.lease_owner is None and not pause:
                # Blocked and free, yet not acquired: its stored status is one this version
                # does not know (see `durable.store.Store.acquire_lease`), unless someone took
                # it meanwhile (look again).
                latest = await store.get_run(run_id)
                if latest is None:
                    raise WorkflowNotFound(run_id)
                if latest.status == RunStatus.BLOCKED and latest.lease_owner is None:
                    raise StoreError(latest.error_text or f"run {run.id!r} cannot be executed")
                run = latest
                continue
            elif run.queue is not None and run.lease_owner is None and not pause:
                # Its queue has no room for it now: a run of the queue releasing its slot (or
                # the rate window moving on) frees some; the store wakes this wait then.
                await store.wait_for_work(
                    workflows=[run.workflow], queues=[run.queue], now=clock.time(), within=1.0
                )
            else:
                # Held by a live executor (wait for it to finish or expire), or parked until
                # later: a write to the run (its outcome, a signal, a release) wakes this wait.
                await store.watch([run_id], within=min(pause, 0.5) if pause else delay)
                delay = min(delay * 2, 1.0)
            latest = await store.get_run(run_id)
            if latest is None:
                raise WorkflowNotFound(run_id)
            run = latest

    async def drive(
        self, defn: WorkflowDefinition, run: RunRecord, lease: Lease, *, replay_only: bool = False
    ) -> Any:
        """Execute ``run`` under ``lease`` until it finishes or parks, going on with each
        generation it continues as (``durable.continue_as_new``) under the same lease.
        ``replay_only`` stops at the first step the history does not have (`ReplayEnd`)."""
        store, clock = self.store, self.config.clock

        async def run_child(
            child: WorkflowDefinition,
            child_id: str,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            parent_id: str,
            deadline: float | None,
        ) -> Any:
            return await self.execute(child, child_id, args, kwargs, parent_id, deadline=deadline)

        _active_owners.add(lease.owner.owner)
        engine: Engine | None = None
        abandoned = False
        ended = False  # the run's end was recorded here, without an engine
        try:
            try:
                _check_recoveries(defn, run)
                steps = await store.load_steps(run.id)
            except (RecoveryLimitExceeded, UnreadableRecord) as exc:
                await self._end_early(lease, defn, run, exc)
                ended = True
                raise
            while True:
                engine = Engine(
                    store=store,
                    run=run,
                    lease=lease,
                    defn=defn,
                    steps=steps,
                    child_runner=run_child,
                    config=self.config,
                    replay_only=replay_only,
                )
                if self.log is not None:
                    self.log.started(run, len(steps))
                result = await self._run_traced(engine, lease)
                if not isinstance(result, Continued):
                    break
                # durable.continue_as_new: the next generation is recorded (empty history,
                # new arguments) and still leased to this executor, which goes on with it.
                run, steps, lease = result.run, [], engine.lease
                if self.log is not None:
                    self.log.continued(run)
            if self.log is not None:
                if result is PARKED:
                    self.log.parked(run, engine.parked_as)
                else:
                    self.log.completed(run)
            return result
        except RunAbandoned:
            abandoned = True  # as if this process died: write nothing, leave the lease expire
            raise
        except BaseException as exc:
            if self.log is not None:
                self.log.ended(run, exc)
            raise
        finally:
            _active_owners.discard(lease.owner.owner)
            if not abandoned:  # an abandoned run is left as a killed process leaves it
                with anyio.CancelScope(shield=True):
                    if not ended:
                        await self._let_go(lease, engine)
                    finished = ended or (engine is not None and engine.finished)
                    if finished and run.parent_id is not None:
                        with contextlib.suppress(Exception):  # a parked parent waits for it
                            await store.wake(run.parent_id, now=clock.time())

    async def _run_traced(self, engine: Engine, lease: Lease) -> Any:
        """`_run_supervised`, in a span of its own when tracing is on, in the trace of the
        code that started the run; runs recorded meanwhile (children) inherit that trace."""
        run = engine.run_record
        with tracing.inherited(run.trace_context):
            if engine.tracer is None:
                return await self._run_supervised(engine, lease)
            with tracing.run_span(engine.tracer, run.id, run.workflow, run.trace_context) as span:
                result = await self._run_supervised(engine, lease)
                done = "continued" if isinstance(result, Continued) else "completed"
                span.set_attribute("durable.outcome", "parked" if result is PARKED else done)
                return result

    async def _run_supervised(self, engine: Engine, lease: Lease) -> Any:
        """Run the engine while `_supervise` renews the lease; a lost lease stops it."""
        outcome_: list[tuple[bool, Any]] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._supervise, lease, engine, tg.cancel_scope)
                try:
                    outcome_.append((True, await engine.run()))
                except Exception as exc:
                    outcome_.append((False, exc))
                finally:
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # a BaseException (cancellation, exit) went through
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        if not outcome_:  # the supervisor cancelled the engine: the lease was lost
            raise engine.fatal if engine.fatal is not None else LeaseLost(lease.run_id)
        ok, value = outcome_[0]
        if not ok:
            raise value
        return value

    async def _supervise(self, lease: Lease, engine: Engine, scope: anyio.CancelScope) -> None:
        """Renew the lease every third of its duration, pass on cancel and pause requests
        to the waits the run holds in memory, and wake the engine at the run's deadline."""
        store, config, clock = self.store, self.config, self.config.clock
        duration = config.lease_seconds
        renew_at = clock.time() + duration / 3
        cancel_seen = False
        watching = False
        look_by = 0.0
        deadline = engine.run_record.deadline
        while True:
            if deadline is not None and clock.time() >= deadline:
                engine.check_deadline()  # a wait held in memory takes the timeout now
                deadline = None
            # A step that starts is refused by the store while a request is pending, so
            # requests need looking for only to wake a wait held in memory (a sleep, a signal
            # wait) or to pass a cancel on to children in flight. A request rings the run's
            # watchers; the fallback read comes every request_fallback_seconds.
            if not cancel_seen and engine.waits_in_memory():
                if watching:
                    within = max(0.0, min(self._until(renew_at), look_by - anyio.current_time()))
                    if deadline is not None:
                        within = min(within, max(0.0, self._until(deadline)))
                    woken = await store.watch([lease.run_id], within=within)
                    look = woken or anyio.current_time() >= look_by
                else:
                    look = watching = True  # a wait began: a request may have come just before
                if look:
                    look_by = anyio.current_time() + config.request_fallback_seconds
                    cancel_seen = await self._pass_on_requests(lease, engine)
            else:
                watching = False
                await anyio.sleep(config.supervise_tick_seconds)
            if clock.time() < renew_at:
                continue
            try:
                lease = await store.renew_lease(lease, now=clock.time(), duration=duration)
                engine.lease_renewed(lease)
            except LeaseLost as exc:
                engine.lose_lease(exc)
                scope.cancel()
                return
            except Exception:
                if clock.time() < lease.expires_at:
                    renew_at = clock.time() + min(1.0, duration / 10)  # transient: soon again
                    continue
                # Past its expiry another executor may take the run over at any moment, so
                # this one must stop running side effects.
                engine.lose_lease(LeaseLost(lease.run_id, "could not renew it before it expired"))
                scope.cancel()
                return
            renew_at = clock.time() + duration / 3

    def _until(self, renew_at: float) -> float:
        """Real seconds to wait until the renewal is due: with the system clock, that long;
        with a test's clock (which may jump), one supervise tick at a time."""
        clock = self.config.clock
        if isinstance(clock, SystemClock):
            return renew_at - clock.time()
        return self.config.supervise_tick_seconds

    async def _pass_on_requests(self, lease: Lease, engine: Engine) -> bool:
        """Read the run and pass a pause or cancel request on to the engine (and a cancel to
        the children in flight). Returns whether a cancel was passed on."""
        try:
            run = await self.store.get_run(lease.run_id)
        except Exception:
            return False  # a transient store error: look again at the next wake-up
        if run is None:
            return False
        engine.set_paused(run.pause_requested)
        if not run.cancel_requested:
            return False
        engine.request_cancel()
        for child in engine.children:  # a cancel reaches the children in flight
            with contextlib.suppress(Exception):
                await self.store.request_cancel(child, now=self.config.clock.time())
        return True

    async def _acquire(self, run: RunRecord) -> Lease | None:
        owner = LeaseOwner(uuid.uuid4().hex, HOST, os.getpid())
        takeover = run.lease_token if holder_is_dead(run) else None
        return await self.store.acquire_lease(
            run.id,
            owner,
            now=self.config.clock.time(),
            duration=self.config.lease_seconds,
            takeover_token=takeover,
        )

    def _parked_for(self, run: RunRecord, now: float) -> float:
        """Seconds until a parked run is due (a signal makes it due at once); 0 if it is not
        parked or already due. A paused run, or one parked with no wake-up time, is read
        again after ``park_poll_seconds`` unless a write to it wakes the wait first."""
        if run.status == RunStatus.PAUSED:
            return self.config.park_poll_seconds
        if run.status not in (RunStatus.SLEEPING, RunStatus.WAITING) or run.lease_owner:
            return 0.0
        if run.wake_at is None:
            return self.config.park_poll_seconds
        return max(run.wake_at - now, 0.0)

    async def _end_early(
        self,
        lease: Lease,
        defn: WorkflowDefinition,
        run: RunRecord,
        exc: RecoveryLimitExceeded | UnreadableRecord,
    ) -> None:
        """Record the end of a run that cannot be executed: ``failed`` past its recovery limit
        (nothing more of it runs: its compensations neither), ``blocked`` when a stored row
        is unreadable (it resumes once the row is repaired)."""
        if isinstance(exc, UnreadableRecord):
            update = RunUpdate(RunStatus.BLOCKED, error_text=str(exc), release=True)
        else:
            payloads = Payloads(defn.codec, trust_of(self.store))
            encoded, _ = payloads.dumps_error(exc, what=f"error of run {run.id!r}")
            text = f"{type(exc).__qualname__}: {exc}"
            update = RunUpdate(RunStatus.FAILED, error=encoded, error_text=text, release=True)
        await self.store.commit(lease, (), update, now=self.config.clock.time())

    async def _let_go(self, lease: Lease, engine: Engine | None) -> None:
        """Give the run up. One whose outcome is not recorded (cancelled, interrupted, the
        store failed) goes back to ``pending`` so that the next executor picks it up."""
        if engine is not None and (engine.finished or isinstance(engine.fatal, LeaseLost)):
            return  # the final commit released the lease, or the run is someone else's now
        try:
            update = RunUpdate(RunStatus.PENDING, release=True)
            await self.store.commit(lease, (), update, now=self.config.clock.time())
        except (LeaseLost, StoreError):
            pass  # taken over, or the store is down: the lease expires on its own


def _check_recoveries(defn: WorkflowDefinition, run: RunRecord) -> None:
    """Raise `RecoveryLimitExceeded` when taking ``run`` (as it was before its lease was
    taken) over once more goes past its workflow's ``max_recoveries``."""
    limit = defn.max_recoveries
    recoveries = run.recoveries + (run.lease_owner is not None)  # as the store just counted
    if limit is not None and recoveries > limit:
        raise RecoveryLimitExceeded(run.id, recoveries, limit)
