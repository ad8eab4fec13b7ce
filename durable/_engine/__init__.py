"""The engine: replays one run from the top and executes the steps it has not recorded yet.

Workflow code is plain ``async def`` code. The engine makes itself the run's `RunContext`, then
awaits the workflow function. Every intercepted call takes the next step number at the moment it
is made. A step already recorded returns its recorded result (or raises its recorded error)
without executing; a new step executes and is committed before its result reaches the workflow.

Replay check: a recorded step whose kind or name differs from the call now made raises
`NonDeterminismError`. That error, a lost lease, and an undecodable payload are *fatal*: they stick
to the engine (a workflow that catches them cannot continue past them) and decide the outcome.
Diverged and undecodable runs become ``blocked``; they keep their history and resume when run
again with compatible code (or a repaired row).

Helper steps (`now`, `uuid4`, `random`) are buffered and committed in the same transaction as
the next step or outcome, and always before the next activity starts, so no side effect can
observe a value that a crash could change.

Every step with an effect starts with a write (`_begin`): its ``started`` row, counting the
attempt, fenced by the lease's token, and refused by the store while a pause or an undelivered
cancel is pending. So no step starts after `cancel()` / `pause()` returned, an executor whose
run was taken over starts nothing, and an attempt cut off by a crash is still counted. Before
each attempt the lease must also outlive it by this process's clock (`_fresh_lease`).

The engine also owns, in this order below: activities (retries, timeouts, started rows),
sagas (undo stacks, `durable.saga` blocks, unwinding), child runs, timers and signal waits,
parking (a run whose branches all wait long is unwound and released), and cancellation (the
step where it is delivered is recorded, so a replay delivers it at the same step). At about
1,000 lines it is due to be split by those responsibilities.
"""

from __future__ import annotations

import dataclasses
import functools
import random as _random
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, NoReturn

import anyio
import anyio.lowlevel
import anyio.to_thread

from durable import _context
from durable._clock import Clock
from durable._codec import Payloads
from durable._errors import (
    ActivityInterrupted,
    ActivityTimeout,
    Cancelled,
    CompensationFailed,
    LeaseLost,
    NonDeterminismError,
    NotInWorkflowError,
    OutcomeUnknown,
    PayloadDecodeError,
    SerializationError,
    SignalTimeout,
    StoreError,
    WorkflowIdConflict,
)
from durable._registry import ActivityDefinition, WorkflowDefinition
from durable._saga import Compensator, Undo, current_scope
from durable._signals import send_signal
from durable._trust import trust_of
from durable._types import Info, RunStatus, StepKind, StepStatus
from durable.store import (
    Interruption,
    Lease,
    RunRecord,
    RunUpdate,
    StepRecord,
    Store,
)

from ._cancel import Cancellation
from ._in_flight import InFlight, Ticket
from ._journal import Journal, StepCall
from ._replay import ReplayCursor, ReplayEnd

__all__ = ["ChildRunner", "Engine", "Interceptor", "ReplayEnd", "RunAbandoned"]

ChildRunner = Callable[
    [WorkflowDefinition, str, tuple[Any, ...], dict[str, Any], str], Awaitable[Any]
]
"""Runs a child workflow ``(defn, child_id, args, kwargs, parent_id)`` to its outcome."""

_FATAL = (NonDeterminismError, LeaseLost, PayloadDecodeError, StoreError)


class RunAbandoned(BaseException):
    """Raised (by a test's fault injection) to make the executor abandon the run as a killed
    process would: nothing more is written, its lease is left to expire."""


Interceptor = Callable[
    [ActivityDefinition, Info, tuple[Any, ...], dict[str, Any], Callable[[], Awaitable[Any]]],
    Awaitable[Any],
]
"""Wraps every activity attempt: ``(defn, info, args, kwargs, proceed) -> awaitable``, where
``proceed()`` runs the activity itself (tests use it to fail, crash or replace attempts)."""


class _Park(BaseException):
    """Unwinds a workflow that parks. A `BaseException`, so ``except Exception`` in workflow
    code cannot swallow it; it never leaves the engine."""


PARKED = object()
"""What `Engine.run` returns when the run parked instead of finishing."""

SIGNAL_POLL_SECONDS = 0.1
"""The longest pause between two looks for a signal while a run waits in-process."""

HALT_SECONDS = 5.0
"""How long a resumed, compensating run waits for its recorded failure to be raised again."""


class Engine:
    """Executes one run under a lease; implements `durable._context.RunContext`."""

    def __init__(
        self,
        *,
        store: Store,
        run: RunRecord,
        lease: Lease,
        defn: WorkflowDefinition,
        steps: list[StepRecord],
        clock: Clock,
        child_runner: ChildRunner,
        park_after: float | None = None,
        interceptor: Interceptor | None = None,
        replay_only: bool = False,
        lease_seconds: float = 30.0,
    ) -> None:
        self._store = store
        self._interceptor = interceptor
        self._run = run
        self._defn = defn
        self._clock = clock
        self._flight = InFlight()  # steps called and not recorded yet, commits under way
        self._journal = Journal(
            store=store,
            run=run,
            lease=lease,
            clock=clock,
            payloads=Payloads(defn.codec, trust_of(store)),
            flight=self._flight,
            lease_seconds=lease_seconds,
        )
        self._child_runner = child_runner
        self._cursor = ReplayCursor(
            run.id,
            steps,
            started_version=run.code_version,
            current_version=defn.version,
            replay_only=replay_only,
        )
        self._saga = Compensator(run.id, self._compensate, lambda: self.fatal is not None)
        self._cancel = Cancellation(requested=run.cancel_requested, delivered_at=run.cancelled_seq)
        self._waits: set[anyio.CancelScope] = set()  # in-process sleeps, woken by a cancel
        self.children: set[str] = set()  # ids of child runs in flight (a cancel reaches them)
        # Parking: a wait longer than park_after unwinds the run when nothing else is in flight
        # (no activity, child or commit), so it holds no memory or task while it waits.
        self._park_after = park_after
        self._wake: dict[int, tuple[StepKind, float | None]] = {}  # waits, by step: wake time
        self.parked: RunUpdate | None = None
        self.pause_requested = run.pause_requested  # stop at the next step boundary
        # Resuming a run whose failure is recorded (it was compensating): its replay re-raises
        # that failure, so a step that never completed before it must not start again.
        self._failure_recorded = run.status == RunStatus.COMPENSATING and not run.rollback_requested

    @property
    def fatal(self) -> BaseException | None:
        """The error that stopped the run (see `Journal.fatal`), or ``None``."""
        return self._journal.fatal

    @fatal.setter
    def fatal(self, error: BaseException | None) -> None:
        self._journal.fatal = error

    @property
    def finished(self) -> bool:
        """The outcome is recorded and the lease released."""
        return self._journal.finished

    def lease_renewed(self, lease: Lease) -> None:
        """The executor renewed the lease: later checks use the new expiry."""
        self._journal.lease_renewed(lease)

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> Any:
        """Run the workflow body to its end and record the outcome.

        Returns:
            The workflow's result.

        Raises:
            The workflow's exception (run recorded ``failed`` / ``cancelled`` after its
            compensations ran), `CompensationFailed`, `NonDeterminismError` or
            `PayloadDecodeError` (run recorded ``blocked``), `LeaseLost` or `StoreError`
            (nothing recorded: the run stays resumable).
        """
        token = _context.enter_run(self)
        scope_token = current_scope().set(self._saga.root)
        failure: Exception | None = None
        result: Any = None
        parked = False
        try:
            args, kwargs = self._journal.load(self._run.args, None, "arguments")
            result = await self._defn.fn(*args, **kwargs)
        except Exception as exc:
            failure = exc
        except BaseException as exc:
            if self.parked is None or not _only_parks(exc):
                raise
            parked = True
        finally:
            current_scope().reset(scope_token)
            _context.leave_run(token)
        if parked and self.fatal is None and self.parked is not None:
            await self._journal.commit((), self.parked)
            return PARKED
        payload = b""
        if failure is None and self.fatal is None and not self._run.rollback_requested:
            try:  # a result that cannot be encoded fails the run (and compensates it)
                payload = self._journal.payloads.dumps(
                    result,
                    what=f"result of workflow {self._defn.name!r} (run {self._run.id!r})",
                )
            except SerializationError as exc:
                failure = exc
        try:
            if self.fatal is None:
                if failure is not None:
                    if self._cursor.unreached(compensations_expected=True) is not None:
                        self.fatal = self._cursor.diverged(
                            f"raise {type(failure).__qualname__}: {failure}"
                        )
                    else:
                        await self._finish_failed(failure)  # records the outcome, raises
                elif self._run.rollback_requested:
                    return await self._finish_rollback(result)
                elif self._cursor.unreached(compensations_expected=False) is not None:
                    self.fatal = self._cursor.diverged("return from the workflow")
        except Exception:
            if self.fatal is None:
                raise
        if self.fatal is not None:
            await self._journal.block(self.fatal)
            raise self.fatal
        await self._journal.commit((), RunUpdate(RunStatus.COMPLETED, result=payload, release=True))
        return result

    async def _finish_failed(self, exc: Exception) -> NoReturn:
        """Compensate the whole run, record its failure (or cancellation), raise the outcome."""
        if isinstance(exc, ExceptionGroup):  # Cancelled delivered inside a task group
            cancelled, rest = exc.split(Cancelled)
            if cancelled is not None and rest is None:
                exc = Cancelled(self._run.id)
        errors: list[tuple[str, BaseException]] = []
        if self._saga.root.entries:
            await self._journal.commit((), RunUpdate(RunStatus.COMPENSATING))
            errors = await self._saga.unwind(self._saga.root)
        final: Exception = exc
        if isinstance(exc, Cancelled):
            status = RunStatus.CANCELLED
        elif isinstance(exc, CompensationFailed):  # from a durable.saga block
            status = RunStatus.COMPENSATION_FAILED
        else:
            status = RunStatus.FAILED
        if errors:
            final = self._saga.failed(exc, errors)
            status = RunStatus.COMPENSATION_FAILED
        await self._journal.record_error(status, final)
        if final is exc:
            raise exc
        raise final from exc

    async def _finish_rollback(self, result: Any) -> Any:
        """A completed run asked to roll back: run every undo, end ``compensated``."""
        await self._journal.commit((), RunUpdate(RunStatus.COMPENSATING))
        errors = await self._saga.unwind(self._saga.root)
        if errors:
            final = self._saga.failed(None, errors)
            await self._journal.record_error(RunStatus.COMPENSATION_FAILED, final)
            raise final
        await self._journal.commit((), RunUpdate(RunStatus.COMPENSATED, release=True))
        return result

    # -- step bookkeeping ------------------------------------------------------------------

    def _step(
        self, kind: StepKind, name: str, location: str | None
    ) -> tuple[int, StepRecord | None]:
        if self.fatal is not None:
            raise self.fatal
        if self._journal.closed:
            raise NotInWorkflowError(
                f"a {kind} step ({name!r}) was called by a task of run {self._run.id!r} after "
                "the run had ended; await every task a workflow starts before it returns (use "
                "durable.gather or a task group, which wait for all their tasks)"
            )
        try:
            return self._cursor.next(kind, name, location)
        except NonDeterminismError as exc:
            self.fatal = exc
            raise

    async def _begin(
        self,
        record: StepRecord,
        *,
        replaces: bool = False,
        check_requests: bool = True,
        update: RunUpdate | None = None,
        relaxed: bool = False,
    ) -> None:
        """Record that a step starts, before anything of it happens (with the buffered helper
        steps). ``replaces``: the step's ``started`` row exists (a retry, or an attempt cut
        off by a crash) and is rewritten. ``check_requests``: the store refuses it while a
        pause or an undelivered cancel is pending, so no step starts after `cancel()` /
        `pause()` returned; this step then takes the cancellation (`Cancelled`) or parks
        the run ``paused`` (it starts when the run is resumed). ``relaxed``: the record only
        counts an attempt, so the store need not wait for the disk (see `Store.commit`)."""
        while True:
            stopped = await self._journal.commit(
                () if replaces else [record],
                update,
                outcomes=[record] if replaces else (),
                check_requests=check_requests,
                relaxed=relaxed,
            )
            if stopped is None:
                return
            await self._interrupted(record.seq, stopped)

    async def _interrupted(self, seq: int, stopped: Interruption) -> None:
        """Step ``seq`` was refused by a request: deliver the cancellation here, park the run
        paused, or (when another step is delivering the cancellation) wait for that and
        return so the caller tries again (a workflow may catch `Cancelled` and go on)."""
        if stopped.cancel:
            self.request_cancel()
            self._cancel.claim_refused(seq)
            if self._cancel.at == seq:
                await self._deliver_cancel(seq)
            if self._cancel.unrecorded:
                # Another step took the delivery when it was called (it raises `Cancelled`
                # when awaited, whenever that is): record where, so this one may go on.
                await self._record_cancel(self._cancel.at)
            self._flight.leave()  # this step waits: it must not keep the run from parking
            try:
                await self._cancel.delivered.wait()
                # The delivering step's `Cancelled` is on its way to a task group that will
                # cancel this branch too: let it, before this step starts.
                await anyio.lowlevel.checkpoint()
            finally:
                self._flight.enter()
            return
        self.pause_requested = True
        self._flight.leave()  # _pause_here waits for the other steps in flight
        try:
            await self._pause_here()
        finally:
            self._flight.enter()

    # -- RunContext: activities ------------------------------------------------------------

    def call_activity(
        self,
        defn: ActivityDefinition,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        location: str | None,
        instance: Any = None,
    ) -> Awaitable[Any]:
        """Number the call now; return an awaitable that replays or executes it."""
        seq, recorded = self._step(StepKind.ACTIVITY, defn.name, location)
        if self._cancel.claim_at_call(seq, recorded):
            return self._deliver_cancel(seq)
        if recorded is not None and recorded.status != StepStatus.STARTED:
            if defn.undo is None:
                return self._journal.replay(recorded)
            return self._replay_compensable(recorded, defn, args, kwargs, instance)
        if self._failure_recorded:
            return self._halt(seq, StepKind.ACTIVITY, defn.name, location)
        if self.pause_requested:
            return self._pause_here()
        ticket = self._flight.ticket()  # until the step is recorded (or fails, or is dropped)
        body = self._execute_activity(
            ticket, seq, defn, fn, args, kwargs, location, instance, recorded
        )
        ticket.watch(body)
        return body

    async def _replay_compensable(
        self,
        step: StepRecord,
        defn: ActivityDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        instance: Any,
    ) -> Any:
        value = self._journal.replayed(step)
        self._saga.push(defn, step.seq, step.finished_at, args, kwargs, instance, value)
        return value

    async def _execute_activity(
        self,
        ticket: Ticket,
        seq: int,
        defn: ActivityDefinition,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        location: str | None,
        instance: Any,
        intent: StepRecord | None,
    ) -> Any:
        try:
            value, attempts, call = await self._with_retries(
                seq, StepKind.ACTIVITY, defn, fn, args, kwargs, location, intent
            )
            # Undos are ordered by the recorded finished_at, so a replay orders them the same.
            finished = self._clock.time()
            await self._journal.record_result(
                call, attempts, value, replaces=True, finished_at=finished
            )
            if defn.undo is not None:
                self._saga.push(defn, seq, finished, args, kwargs, instance, value)
            return value
        finally:
            ticket.close()

    async def _with_retries(
        self,
        seq: int,
        kind: StepKind,
        defn: ActivityDefinition,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        location: str | None,
        intent: StepRecord | None,
    ) -> tuple[Any, int, StepCall]:
        """Attempt ``fn`` under ``defn``'s retry policy; a final failure is recorded and raised.

        Every attempt is recorded (a ``started`` row counting it) before it starts, so an
        attempt cut off by a crash is counted: ``intent`` is that row when an earlier
        executor started the step and never recorded its outcome. The first attempt made here
        is refused while a pause or cancel is pending (see `_begin`); each attempt first makes
        sure the lease outlives it (`_fresh_lease`).

        Returns:
            The value, the number of attempts made in all, and the step.
        """
        name = defn.name
        done = 0 if intent is None else max(intent.attempts, 1)
        started = self._clock.time() if intent is None else intent.started_at
        call = StepCall(seq, kind, name, location, started)
        if intent is not None:
            stop: Exception | None = None
            if defn.final and not defn.idempotent:
                stop = OutcomeUnknown(self._run.id, seq, name)
            elif defn.crash_limit and done >= defn.retry.max_attempts:
                stop = ActivityInterrupted(self._run.id, seq, name, done)
            if stop is not None:
                raise await self._journal.record_failure(call, done, stop, replaces=True) from None
        attempt = done
        recorded = intent is not None or seq in self._cursor.overwrite
        while True:
            attempt += 1
            await self._journal.fresh_lease()  # before the attempt is recorded: no phantom attempts
            await self._begin(
                self._journal.started(call, attempt),
                replaces=recorded,
                # the first attempt made here is refused while a request is pending (a step
                # that was started before, by a process that died, included)
                check_requests=attempt == done + 1 and kind != StepKind.COMPENSATION,
                # a final activity's start is its intent: it must reach the disk before the
                # activity runs; other starts only count an attempt
                relaxed=not defn.final,
            )
            recorded = True
            await self._journal.fresh_lease()  # again: this process may have stalled meanwhile
            try:
                return await self._attempt(defn, fn, args, kwargs, seq, attempt), attempt, call
            except Exception as exc:
                if defn.retry.retries(exc, attempt):
                    await self._clock.sleep(defn.retry.delay(attempt))
                    continue
                seen = await self._journal.record_failure(call, attempt, exc, replaces=True)
                raise seen from None

    async def _halt(self, seq: int, kind: StepKind, name: str, location: str | None) -> NoReturn:
        """A step that was still running when the run failed, met again while the run is
        resumed to finish compensating: it waits to be cancelled, as it was the first time,
        by the replayed failure. If that never comes, the code has diverged."""
        with anyio.move_on_after(HALT_SECONDS):
            await anyio.sleep_forever()
        self.fatal = self._cursor.nondeterminism(
            seq,
            "no completed step (the run failed before it finished)",
            None,
            f"{kind} {name!r}, and the recorded failure was not raised again",
            location,
        )
        raise self.fatal

    # -- sagas -----------------------------------------------------------------------------

    async def _compensate(self, undo: Undo) -> None:
        undoes = f"undo of step {undo.seq}"
        seq, recorded = self._step(StepKind.COMPENSATION, undo.defn.name, undoes)
        if recorded is not None:
            if recorded.location != undoes:  # same undo function, another activity's undo
                self.fatal = self._cursor.nondeterminism(
                    seq,
                    f"compensation {recorded.name!r}",
                    recorded.location,
                    f"compensation {undo.defn.name!r}",
                    undoes,
                )
                raise self.fatal
            if recorded.status != StepStatus.STARTED:
                self._journal.replayed(recorded)
                return
        kind = StepKind.COMPENSATION
        value, attempts, call = await self._with_retries(
            seq, kind, undo.defn, undo.defn.fn, undo.args, undo.kwargs, undoes, recorded
        )
        await self._journal.record_result(call, attempts, value, replaces=True)

    def saga(self) -> AbstractAsyncContextManager[None]:
        """A block whose compensable activities are undone if the block raises."""
        return self._saga.block()

    async def _attempt(
        self,
        defn: ActivityDefinition,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seq: int,
        attempt: int,
    ) -> Any:
        run_id = self._run.id
        info = Info(run_id, self._defn.name, seq, attempt, f"{run_id}/{seq}")
        tokens = _context.enter_activity(info)
        if self._interceptor is None:  # the hot path: no wrapper per attempt
            call: Awaitable[Any] = self._invoke(defn, fn, args, kwargs)
        else:
            proceed = functools.partial(self._invoke, defn, fn, args, kwargs)
            call = self._interceptor(defn, info, args, kwargs, proceed)
        try:
            if defn.timeout is None:
                return await call
            deadline = anyio.current_time() + defn.timeout
            value: Any = None
            with anyio.CancelScope(deadline=deadline) as scope:
                value = await call
            # Past its deadline the attempt failed, even if the activity caught the
            # cancellation and returned a value anyway.
            if scope.cancel_called or scope.cancelled_caught or anyio.current_time() >= deadline:
                raise ActivityTimeout(defn.name, defn.timeout, run_id=run_id, seq=seq)
            return value
        finally:
            _context.leave_activity(tokens)

    @staticmethod
    async def _invoke(
        defn: ActivityDefinition,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if defn.is_async:
            return await fn(*args, **kwargs)
        call = functools.partial(fn, *args, **kwargs)
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)

    # -- RunContext: child workflows -------------------------------------------------------

    def call_workflow(
        self,
        defn: WorkflowDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        location: str | None,
        child_id: str | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Number the call now; return an awaitable that replays it or runs the child run
        (under ``child_id``, by default ``"<run id>/<step>"``)."""
        seq, recorded = self._step(StepKind.CHILD, defn.name, location)
        if self._cancel.claim_at_call(seq, recorded):
            return self._deliver_cancel(seq)
        if recorded is not None and recorded.status != StepStatus.STARTED:
            return self._journal.replay(recorded)
        if self._failure_recorded:
            return self._halt(seq, StepKind.CHILD, defn.name, location)
        if self.pause_requested:
            return self._pause_here()
        ticket = self._flight.ticket()  # until the step is recorded (or fails, or is dropped)
        body = self._execute_child(ticket, seq, defn, args, kwargs, location, child_id, recorded)
        ticket.watch(body)
        return body

    async def _execute_child(
        self,
        ticket: Ticket,
        seq: int,
        defn: WorkflowDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        location: str | None,
        child_id: str | None,
        intent: StepRecord | None,
    ) -> Any:
        try:  # counted in flight from the call (call_workflow) until recorded
            started = self._clock.time() if intent is None else intent.started_at
            call = StepCall(seq, StepKind.CHILD, defn.name, location, started)
            if intent is None:  # the child step is recorded as started before the child is
                await self._begin(self._journal.started(call, 1))
            child_id = child_id or f"{self._run.id}/{seq}"
            try:
                value = await self._await_child(seq, defn, args, kwargs, child_id)
            except _FATAL as exc:
                self.fatal = exc  # the child cannot progress, so neither can this run
                raise
            except WorkflowIdConflict as exc:
                if exc.reason is not None:  # the id is another run's, not this run's child
                    raise await self._journal.record_failure(call, 1, exc, replaces=True) from None
                # The child id was created by the code this run started with, for another
                # workflow: the parent's history diverged before its child step was recorded.
                self.fatal = self._cursor.nondeterminism(
                    seq,
                    f"child {exc.recorded!r} (run {child_id!r})",
                    None,
                    f"child {defn.name!r}",
                    location,
                )
                raise self.fatal from exc
            except Exception as exc:
                raise await self._journal.record_failure(call, 1, exc, replaces=True) from None
            return await self._journal.record_result(call, 1, value, replaces=True)
        finally:
            ticket.close()

    async def _await_child(
        self,
        seq: int,
        defn: WorkflowDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        child_id: str,
    ) -> Any:
        """The child run's outcome. A parked child (a worker resumes it when due) makes this
        step wait like a signal wait, so the parent parks too; the child's outcome wakes it."""
        self.children.add(child_id)
        try:
            while True:
                value = await self._child_runner(defn, child_id, args, kwargs, self._run.id)
                if value is not PARKED:
                    return value
                self._wake[seq] = (StepKind.CHILD, None)
                self._flight.leave()
                try:
                    await self._nap(seq, SIGNAL_POLL_SECONDS, long_wait=True)
                finally:
                    self._flight.enter()
                    self._wake.pop(seq, None)
        finally:
            self.children.discard(child_id)

    # -- RunContext: timers and deterministic helpers --------------------------------------

    def sleep(self, seconds: float, location: str | None) -> Awaitable[None]:
        """Number the timer step now; the awaitable records its due time and waits for it."""
        seq, recorded = self._step(StepKind.TIMER, "sleep", location)
        if self._cancel.at == seq:
            return self._deliver_cancel(seq)
        return self._sleep(seq, seconds, recorded, location)

    async def _sleep(
        self, seq: int, seconds: float, recorded: StepRecord | None, location: str | None
    ) -> None:
        if recorded is not None:
            due = float(self._journal.replayed(recorded))
            new: list[StepRecord] = []
        else:
            started = self._clock.time()
            due = started + seconds
            payload = self._journal.payloads.dumps(
                due, what=f"due time of run {self._run.id!r}, step {seq}"
            )
            call = StepCall(seq, StepKind.TIMER, "sleep", location, started)
            new = [self._journal.record(call, 1, result=payload)]
        remaining = due - self._clock.time()
        sleeping = None if remaining <= 0 else RunUpdate(RunStatus.SLEEPING)
        if new:
            await self._begin_wait(new[0], sleeping)
        elif sleeping is not None:
            await self._journal.commit((), sleeping)
        if sleeping is None:
            return
        self._wake[seq] = (StepKind.TIMER, due)
        try:
            # A cancel seen while that commit was awaited has set the flag: checked first.
            while True:
                if self._cancel.claim_at_wait(seq):
                    break  # this sleep takes the cancellation
                remaining = due - self._clock.time()
                if remaining <= 0:
                    break
                long_wait = self._park_after is not None and remaining > self._park_after
                await self._nap(seq, remaining, long_wait)
                # woken early by a cancel that another step took: sleep on until due
        finally:
            self._wake.pop(seq, None)
        if self._cancel.at == seq:
            await self._deliver_cancel(seq)
        await self._journal.commit((), RunUpdate(RunStatus.RUNNING))

    # -- RunContext: signals ---------------------------------------------------------------

    def wait_signal(self, name: str, timeout: float | None, location: str | None) -> Awaitable[Any]:
        """Number the wait now; the awaitable returns the next signal's payload."""
        seq, recorded = self._step(StepKind.SIGNAL, name, location)
        if self._cancel.at == seq:
            return self._deliver_cancel(seq)
        return self._wait_signal(seq, name, timeout, recorded, location)

    async def _wait_signal(
        self,
        seq: int,
        name: str,
        wait_for: float | None,
        recorded: StepRecord | None,
        location: str | None,
    ) -> Any:
        if recorded is not None and recorded.status != StepStatus.STARTED:
            return self._journal.replayed(recorded)
        if recorded is None:
            # The wait (and its deadline) is recorded when it starts: a resumed run keeps it.
            started = self._clock.time()
            deadline = started + wait_for if wait_for is not None else None
            payload = self._journal.payloads.dumps(deadline, what=f"deadline of step {seq}")
            call = StepCall(seq, StepKind.SIGNAL, name, location, started)
            intent = dataclasses.replace(self._journal.started(call, 1), result=payload)
            await self._begin_wait(intent, RunUpdate(RunStatus.WAITING))
        else:
            started = recorded.started_at
            deadline = self._journal.load(recorded.result, seq, "deadline")
            await self._journal.commit((), RunUpdate(RunStatus.WAITING))
        poll = 0.01
        waiting_since = self._clock.time()
        self._wake[seq] = (StepKind.SIGNAL, deadline)
        try:
            call = StepCall(seq, StepKind.SIGNAL, name, location, started)
            return await self._signal_loop(call, deadline, poll, waiting_since)
        finally:
            self._wake.pop(seq, None)

    async def _signal_loop(
        self, call: StepCall, deadline: float | None, poll: float, waiting_since: float
    ) -> Any:
        seq, name = call.seq, call.name
        while True:
            if self._cancel.claim_at_wait(seq):
                await self._deliver_cancel(seq)
            outcome = self._journal.record(call, 1)
            received = await self._journal.receive_signal(name, outcome)
            if received is not None:
                await self._journal.commit((), RunUpdate(RunStatus.RUNNING))
                return self._journal.load(received, seq, "signal payload")
            now = self._clock.time()
            if deadline is not None and now >= deadline:
                exc = SignalTimeout(self._run.id, seq, name, deadline - call.started)
                seen = await self._journal.record_failure(call, 1, exc, replaces=True)
                await self._journal.commit((), RunUpdate(RunStatus.RUNNING))
                raise seen
            nap_for = poll if deadline is None else min(poll, deadline - now)
            long_wait = (
                self._park_after is not None
                and now - waiting_since >= self._park_after
                and (deadline is None or deadline - now > self._park_after)
            )
            await self._nap(seq, nap_for, long_wait)
            poll = min(poll * 1.5, SIGNAL_POLL_SECONDS)

    async def _begin_wait(self, record: StepRecord, update: RunUpdate | None) -> None:
        """Record a timer or signal wait as it starts (refused while a request is pending,
        like every step: see `_begin`); counted in flight meanwhile."""
        self._flight.enter()
        try:
            await self._begin(record, update=update)
        finally:
            self._flight.leave()

    # -- RunContext: sending signals -------------------------------------------------------

    def send_signal(
        self,
        run_id: str,
        name: str,
        payload: Any,
        idempotency_key: str | None,
        location: str | None,
    ) -> Awaitable[None]:
        """Number the send now; the awaitable sends it once, however often the run replays
        (its idempotency key is ``"<run id>/<step>"`` unless one is given)."""
        seq, recorded = self._step(StepKind.SIGNAL_SEND, name, location)
        if self._cancel.claim_at_call(seq, recorded):
            return self._deliver_cancel(seq)
        if recorded is not None and recorded.status != StepStatus.STARTED:
            return self._journal.replay(recorded)
        if self._failure_recorded:
            return self._halt(seq, StepKind.SIGNAL_SEND, name, location)
        if self.pause_requested:
            return self._pause_here()
        ticket = self._flight.ticket()  # until the step is recorded (or fails, or is dropped)
        key = idempotency_key or f"{self._run.id}/{seq}"
        body = self._send_signal(ticket, seq, run_id, name, payload, key, location, recorded)
        ticket.watch(body)
        return body

    async def _send_signal(
        self,
        ticket: Ticket,
        seq: int,
        run_id: str,
        name: str,
        payload: Any,
        key: str,
        location: str | None,
        intent: StepRecord | None,
    ) -> None:
        try:
            started = self._clock.time() if intent is None else intent.started_at
            call = StepCall(seq, StepKind.SIGNAL_SEND, name, location, started)
            if intent is None:
                record = self._journal.started(call, 1)
                await self._begin(record, replaces=seq in self._cursor.overwrite)
            try:
                await send_signal(
                    self._store, run_id, name, payload, now=self._clock.time(), key=key
                )
            except StoreError as exc:
                self.fatal = exc  # the store cannot say whether it was sent: stop here
                raise
            except Exception as exc:
                raise await self._journal.record_failure(call, 1, exc, replaces=True) from None
            await self._journal.record_result(call, 1, None, replaces=True)
        finally:
            ticket.close()

    # -- parking ---------------------------------------------------------------------------

    async def _nap(self, seq: int, seconds: float, long_wait: bool) -> None:
        """Wait up to ``seconds`` in-process (a cancel or a park wakes it early). When the
        wait is long and nothing else of the run is in flight, park: unwind the run."""
        if self.pause_requested and not self._failure_recorded:
            await self._pause_here()
        if long_wait and self._park_after is not None:
            await self._park_if_idle()
            seconds = min(seconds, max(self._park_after, 0.05))  # then look again
        if self.parked is not None:
            raise _Park
        with anyio.CancelScope() as nap:
            self._waits.add(nap)
            try:
                await self._clock.sleep(seconds)
            finally:
                self._waits.discard(nap)
        if self.parked is not None:
            raise _Park

    async def _pause_here(self) -> NoReturn:
        """The run was asked to pause: once the steps in flight are recorded, unwind it with
        status ``paused``; this step runs when the run is resumed."""
        await self._flight.wait_idle()
        if self.parked is None:
            self.parked = RunUpdate(RunStatus.PAUSED, release=True)
            for wait in list(self._waits):
                wait.cancel()
        raise _Park

    async def _park_if_idle(self) -> None:
        for _ in range(3):  # let the other branches reach their own waits first
            await anyio.lowlevel.checkpoint()
        if (
            self.parked is not None
            or self._flight.busy
            or self.fatal is not None
            or self._failure_recorded
            or self._cancel.unclaimed
        ):
            return
        kinds = {kind for kind, _ in self._wake.values()}
        times = [at for _, at in self._wake.values() if at is not None]
        waiting = StepKind.SIGNAL in kinds or StepKind.CHILD in kinds
        status = RunStatus.WAITING if waiting else RunStatus.SLEEPING
        self.parked = RunUpdate(status, wake_at=min(times) if times else None, release=True)
        for wait in list(self._waits):  # the other waits unwind too
            wait.cancel()

    # -- cancellation ----------------------------------------------------------------------

    def waits_in_memory(self) -> bool:
        """Whether a wait of this run is held in memory (a sleep, a signal wait) or a child
        run is in flight: a cancel or pause request must then be passed on to them."""
        return bool(self._waits or self.children)

    def request_cancel(self) -> None:
        """Called by the executor when the run's ``cancel_requested`` is seen: deliver
        `Cancelled` at the next step boundary, and wake any sleep at once."""
        self._cancel.request()
        for wait in list(self._waits):
            wait.cancel()

    async def _deliver_cancel(self, seq: int) -> NoReturn:
        await self._record_cancel(seq)
        raise Cancelled(self._run.id)

    async def _record_cancel(self, seq: int | None) -> None:
        """First delivery at step ``seq``: record where, so replays raise it at that step."""
        if self._cancel.to_record(seq):
            await self._journal.commit((), RunUpdate(RunStatus.RUNNING, cancelled_seq=seq))
            self._cancel.delivered.set()

    def _helper(self, kind: StepKind, location: str | None, make: Callable[[], Any]) -> Any:
        seq, recorded = self._step(kind, str(kind), location)
        if recorded is not None:
            return self._journal.replayed(recorded)
        value = make()
        what = f"value of {kind}() (run {self._run.id!r}, step {seq})"
        self._journal.buffer(
            seq, kind, str(kind), self._journal.payloads.dumps(value, what=what), location
        )
        return value

    # -- RunContext: versioning ------------------------------------------------------------

    def patched(self, change_id: str, location: str | None, *, deprecated: bool = False) -> bool:
        """True when the run takes the new path of ``change_id``: its history has the marker
        here (it took the new path before), or the run reaches this point for the first time
        and started under this very code version (the marker is recorded). False when the
        history has another step here (recorded before the change: nothing is consumed) or the
        run started under other code. ``deprecated``: only consume a marker, never record."""
        if self.fatal is not None:
            raise self.fatal
        taken, marker_seq = self._cursor.patched(change_id, deprecated=deprecated)
        if marker_seq is not None:
            marker = self._journal.payloads.dumps(True, what=f"marker of change {change_id!r}")
            self._journal.buffer(marker_seq, StepKind.PATCH, change_id, marker, location)
        return taken

    def now(self, location: str | None) -> datetime:
        """The current time (UTC), recorded."""
        return self._helper(  # type: ignore[no-any-return]
            StepKind.NOW, location, lambda: datetime.fromtimestamp(self._clock.time(), UTC)
        )

    def uuid4(self, location: str | None) -> uuid.UUID:
        """A random UUID, recorded."""
        return self._helper(StepKind.UUID4, location, uuid.uuid4)  # type: ignore[no-any-return]

    def random(self, location: str | None) -> float:
        """A random float in [0, 1), recorded."""
        return self._helper(StepKind.RANDOM, location, _random.random)  # type: ignore[no-any-return]

    def info(self) -> Info:
        """Run id, workflow name and the number of the last step called."""
        return Info(self._run.id, self._defn.name, self._cursor.seq, 0, None)


def _only_parks(exc: BaseException) -> bool:
    if isinstance(exc, _Park):
        return True
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(_Park)
        return rest is None
    return False
