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

Every step with an effect starts with a write (`Gate.begin`): its ``started`` row, counting
the attempt, fenced by the lease's token, and refused by the store while a pause or an
undelivered cancel is pending. So no step starts after `cancel()` / `pause()` returned, an
executor whose run was taken over starts nothing, and an attempt cut off by a crash is still
counted. Before each attempt the lease must also outlive it by this process's clock
(`Journal.fresh_lease`).

The engine is split by state, then by operation. State: `ReplayCursor` (where the replay
stands; pure), `Journal` (the only writer; owns the fatal error), `InFlight` (what is under
way, so the run parks or pauses only when nothing is), `Cancellation` (where a cancel is
delivered), `Compensator` (the saga stacks, in `durable._saga`). Operations: `Gate` (the
step boundary: numbering, starting a step, delivering a cancel), `Activities` (activities,
retries, compensations), `OtherRuns` (child runs, signals sent), `Waits` (timers, signal
waits, parking, pausing), `Helpers` (now, uuid4, random, version markers), `FirstOf`
(`durable.wait_first`: which step of several finished first). `Engine` wires
them, runs the workflow and decides its outcome, and is the run's `RunContext`; the executor
talks to it only through `lease_renewed`, `set_paused`, `request_cancel`, `lose_lease`,
`waits_in_memory`, `children`, `fatal`, `finished`, `parked_as` and `lease` (read only).

Continue-as-new: `durable.continue_as_new` unwinds the workflow (`ContinueAsNew`, a
`BaseException` like the park signal) once nothing else of the run is under way; `run` then
records the next generation in one fenced store transaction (`Store.continue_run`: history
deleted, new arguments) and returns `Continued`, and the executor starts a new engine on it
under the same lease. A crash before that commit replays the ending generation up to the same
call; after it, the new generation starts from its first step.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, NoReturn

from durable import _context
from durable import _tracing as tracing
from durable._codec import Payloads
from durable._config import ExecutorConfig
from durable._errors import (
    Cancelled,
    CompensationFailed,
    LeaseLost,
    NotInWorkflowError,
    SerializationError,
    WorkflowTimeout,
)
from durable._registry import ActivityDefinition, WorkflowDefinition
from durable._saga import Compensator, current_scope
from durable._trust import trust_of
from durable._types import Info, RunStatus, StepKind, step_key, utc
from durable.store import (
    Lease,
    RunRecord,
    RunUpdate,
    StepRecord,
    Store,
)

from ._activities import Activities
from ._cancel import Cancellation
from ._common import (
    PARKED,
    ChildRunner,
    ContinueAsNew,
    Continued,
    Interceptor,
    Park,
    RunAbandoned,
    continue_of,
    only_parks,
)
from ._first import FirstOf
from ._gate import Gate
from ._helpers import Helpers
from ._in_flight import InFlight
from ._journal import Journal
from ._others import OtherRuns
from ._publish import Publisher
from ._replay import ReplayCursor, ReplayEnd
from ._waits import Waits

__all__ = [
    "PARKED",
    "ChildRunner",
    "Continued",
    "Engine",
    "Interceptor",
    "ReplayEnd",
    "RunAbandoned",
]


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
        child_runner: ChildRunner,
        config: ExecutorConfig,
        replay_only: bool = False,
    ) -> None:
        clock = config.clock
        self.config = config
        self.store = store
        self.interceptor = config.interceptor
        self.run_record = run
        self.defn = defn
        self.clock = clock
        self.child_runner = child_runner
        self.flight = InFlight()  # steps called and not recorded yet, commits under way
        self.journal = Journal(
            store=store,
            run=run,
            lease=lease,
            clock=clock,
            payloads=Payloads(defn.codec, trust_of(store)),
            flight=self.flight,
            lease_seconds=config.lease_seconds,
        )
        self.cursor = ReplayCursor(
            run.id,
            steps,
            started_version=run.code_version,
            current_version=defn.version,
            replay_only=replay_only,
        )
        # Resuming a run whose failure is recorded (it was compensating): its replay re-raises
        # that failure, so a step that never completed before it must not start again.
        self.failure_recorded = run.status == RunStatus.COMPENSATING and not run.rollback_requested
        self.cancellation = Cancellation(
            requested=run.cancel_requested,
            delivered_at=run.cancelled_seq,
            deadline=run.deadline,
            armed=not self.failure_recorded and not run.rollback_requested,
        )
        self.compensator = Compensator(
            run.id, lambda undo: self.activities.compensate(undo), lambda: self.fatal is not None
        )
        self.gate = Gate(self)
        self.helpers = Helpers(self)
        self.activities = Activities(self)
        self.others = OtherRuns(self)
        self.publisher = Publisher(self)  # before Activities: attempts write through it
        self.waits = Waits(self, park_after=config.park_after, pause_requested=run.pause_requested)
        self.first = FirstOf(self)  # notes the steps durable.wait_first may race
        self.parked_as: RunUpdate | None = None  # how the run was parked, once it is
        self.tracer = tracing.tracer()  # None: no spans (no OpenTelemetry provider configured)
        self.replay_only = replay_only

    @property
    def fatal(self) -> BaseException | None:
        """The error that stopped the run (see `Journal.fatal`), or ``None``."""
        return self.journal.fatal

    @fatal.setter
    def fatal(self, error: BaseException | None) -> None:  # for the engine's own parts
        self.journal.fatal = error

    @property
    def finished(self) -> bool:
        """The outcome is recorded and the lease released."""
        return self.journal.finished

    @property
    def lease(self) -> Lease:
        """The run's lease, as last renewed (the next generation goes on under it)."""
        return self.journal.lease

    def lease_renewed(self, lease: Lease) -> None:
        """The executor renewed the lease: later checks use the new expiry."""
        self.journal.lease_renewed(lease)

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
        scope_token = current_scope().set(self.compensator.root)
        failure: Exception | None = None
        result: Any = None
        parked = False
        continued: ContinueAsNew | None = None
        try:
            args, kwargs = self.journal.load(self.run_record.args, None, "arguments")
            result = await self.defn.fn(*args, **kwargs)
        except Exception as exc:
            failure = exc
        except BaseException as exc:
            continued, rest = continue_of(exc)
            if continued is not None:
                if rest is not None:  # another branch ended otherwise meanwhile: that wins
                    if not isinstance(rest, Exception):
                        raise rest from None
                    continued, failure = None, rest
            elif self.waits.parked is None:
                raise
            elif only_parks(exc):
                parked = True
            else:
                # One branch parked while another ended otherwise (it took a cancel, say, in
                # the moment between the decision to park and the unwinding): that outcome
                # wins and the park is dropped.
                rest = exc.split(Park)[1] if isinstance(exc, BaseExceptionGroup) else exc
                if not isinstance(rest, Exception):
                    raise
                self.waits.parked = None
                failure = rest
        finally:
            current_scope().reset(scope_token)
            _context.leave_run(token)
        if continued is not None:
            return await self._continue(continued)
        if parked and self.fatal is None and self.waits.parked is not None:
            await self._park(self.waits.parked)
            return PARKED
        payload = b""
        if failure is None and self.fatal is None and not self.run_record.rollback_requested:
            try:  # a result that cannot be encoded fails the run (and compensates it)
                payload = self.journal.payloads.dumps(
                    result,
                    what=f"result of workflow {self.defn.name!r} (run {self.run_record.id!r})",
                )
            except SerializationError as exc:
                failure = exc
        try:
            if self.fatal is None:
                if failure is not None:
                    if self.cursor.unreached(compensations_expected=True) is not None:
                        self.fatal = self.cursor.diverged(
                            f"raise {type(failure).__qualname__}: {failure}"
                        )
                    else:
                        await self._finish_failed(failure)  # records the outcome, raises
                elif self.run_record.rollback_requested:
                    return await self._finish_rollback(result)
                elif self.cursor.unreached(compensations_expected=False) is not None:
                    self.fatal = self.cursor.diverged("return from the workflow")
        except Exception:
            if self.fatal is None:
                raise
        if self.fatal is not None:
            await self.journal.block(self.fatal)
            raise self.fatal
        await self.journal.commit((), RunUpdate(RunStatus.COMPLETED, result=payload, release=True))
        return result

    async def _continue(self, continued: ContinueAsNew) -> Continued:
        """Record the run's next generation (`Journal.continue_run`); a run whose replay
        reaches ``continue_as_new`` where its history goes on, or whose recorded outcome is a
        failure or a return (it is compensating), has diverged and is blocked instead."""
        if self.fatal is None:
            if self.failure_recorded or self.run_record.rollback_requested:
                ended = "a failure" if self.failure_recorded else "a return"
                self.fatal = self.cursor.nondeterminism(
                    self.cursor.seq + 1,
                    f"{ended} of the workflow (the run is compensating)",
                    None,
                    "durable.continue_as_new()",
                    continued.location,
                )
            elif self.cursor.unreached(compensations_expected=False) is not None:
                self.fatal = self.cursor.diverged("durable.continue_as_new()")
        if self.fatal is not None:
            await self.journal.block(self.fatal)
            raise self.fatal
        return Continued(await self.journal.continue_run(continued.payload))

    async def _park(self, update: RunUpdate) -> None:
        """Record the run parked (released until it is due). A cancel or pause requested since
        the wait began (while the run was still leased, so the store could not apply it to an
        idle run) refuses that commit; the run is then released as the store would have left
        it had the request come a moment later: due at once (the replay delivers the cancel at
        the wait), or ``paused``."""
        if update.status == RunStatus.PAUSED:
            await self.journal.commit((), update)
            self.parked_as = update
            return
        stopped = await self.journal.commit((), update, check_requests=True)
        if stopped is None:
            self.parked_as = update
            return
        if stopped.cancel:
            update = RunUpdate(update.status, release=True, wake_at=self.clock.time())
        else:
            update = RunUpdate(RunStatus.PAUSED, release=True)
        await self.journal.commit((), update)
        self.parked_as = update

    async def _finish_failed(self, exc: Exception) -> NoReturn:
        """Compensate the whole run, record its failure (or cancellation), raise the outcome."""
        if isinstance(exc, ExceptionGroup):  # Cancelled delivered inside a task group
            cancelled, rest = exc.split(Cancelled)
            if cancelled is not None and rest is None:
                timeouts, _ = cancelled.split(WorkflowTimeout)
                exc = Cancelled(self.run_record.id) if timeouts is None else _first(timeouts)
        if isinstance(exc, WorkflowTimeout) and exc.run_id != self.run_record.id:
            # A child's timeout that this run did not catch: when this run's own deadline
            # has passed too (the child inherited it), this run timed out.
            deadline = self.cancellation.deadline
            if deadline is not None and self.clock.time() >= deadline:
                own = WorkflowTimeout(self.run_record.id, utc(deadline))
                own.__cause__ = exc
                exc = own
        errors: list[tuple[str, BaseException]] = []
        if self.compensator.root.entries:
            await self.journal.commit((), RunUpdate(RunStatus.COMPENSATING))
            errors = await self.compensator.unwind(self.compensator.root)
        final: Exception = exc
        if isinstance(exc, WorkflowTimeout):
            status = RunStatus.TIMED_OUT
        elif isinstance(exc, Cancelled):
            status = RunStatus.CANCELLED
        elif isinstance(exc, CompensationFailed):  # from a durable.saga block
            status = RunStatus.COMPENSATION_FAILED
        else:
            status = RunStatus.FAILED
        if errors:
            final = self.compensator.failed(exc, errors)
            status = RunStatus.COMPENSATION_FAILED
        await self.journal.record_error(status, final)
        if final is exc:
            raise exc
        raise final from exc

    async def _finish_rollback(self, result: Any) -> Any:
        """A completed run asked to roll back: run every undo, end ``compensated``."""
        await self.journal.commit((), RunUpdate(RunStatus.COMPENSATING))
        errors = await self.compensator.unwind(self.compensator.root)
        if errors:
            final = self.compensator.failed(None, errors)
            await self.journal.record_error(RunStatus.COMPENSATION_FAILED, final)
            raise final
        await self.journal.commit((), RunUpdate(RunStatus.COMPENSATED, release=True))
        return result

    # -- step bookkeeping ------------------------------------------------------------------

    # -- RunContext: steps (each kind in its own part) ---------------------------------------

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
        step = self.activities.call_activity(defn, fn, args, kwargs, location, instance)
        return self.first.note(step, StepKind.ACTIVITY)

    def call_workflow(
        self,
        defn: WorkflowDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        location: str | None,
        child_id: str | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Number the call now; return an awaitable that replays it or runs the child run
        (timing out ``timeout`` seconds after it is recorded, or at this run's deadline)."""
        step = self.others.call_workflow(defn, args, kwargs, location, child_id, timeout)
        run = self.run_record
        child_id = child_id or step_key(run.id, run.generation, self.cursor.seq)
        return self.first.note(step, StepKind.CHILD, child_id)

    def send_signal(
        self,
        run_id: str,
        name: str,
        payload: Any,
        idempotency_key: str | None,
        location: str | None,
    ) -> Awaitable[None]:
        """Number the send now; the awaitable sends it once, however often the run replays."""
        return self.others.send_signal(run_id, name, payload, idempotency_key, location)

    def sleep(self, seconds: float, location: str | None) -> Awaitable[None]:
        """Number the timer step now; the awaitable records its due time and waits for it."""
        return self.first.note(self.waits.sleep(seconds, location), StepKind.TIMER)

    def wait_signal(self, name: str, timeout: float | None, location: str | None) -> Awaitable[Any]:
        """Number the wait now; the awaitable returns the next signal's payload."""
        step = self.waits.wait_signal(name, timeout, location)
        return self.first.note(step, StepKind.SIGNAL)

    def wait_first(
        self, awaitables: Sequence[Awaitable[Any]], location: str | None
    ) -> Awaitable[tuple[int, Any]]:
        """Number the ``first`` step now; the awaitable returns ``(index, value)`` of the
        first of ``awaitables`` to finish (see `FirstOf`)."""
        return self.first.wait_first(awaitables, location)

    def set_event(self, key: str, value: Any, location: str | None) -> Awaitable[None]:
        """Number the step now; the awaitable records it and sets the event, once."""
        return self.publisher.set_event(key, value, location)

    def stream_write(self, key: str, value: Any, location: str | None) -> Awaitable[None]:
        """Number the step now; the awaitable records it and appends to the stream, once."""
        return self.publisher.stream_write(key, value, location)

    def stream_close(self, key: str, location: str | None) -> Awaitable[None]:
        """Number the step now; the awaitable records it and closes the stream, once."""
        return self.publisher.stream_close(key, location)

    def saga(self) -> AbstractAsyncContextManager[None]:
        """A block whose compensable activities are undone if the block raises."""
        return self.compensator.block()

    # -- control: what the executor may tell the engine --------------------------------------

    def waits_in_memory(self) -> bool:
        """Whether a wait of this run is held in memory (a sleep, a signal wait) or a child
        run is in flight: a cancel or pause request must then be passed on to them."""
        return self.waits.in_memory()

    @property
    def children(self) -> frozenset[str]:
        """Ids of the child runs in flight (a cancel of this run is passed on to them)."""
        return frozenset(self.others.children)

    def lose_lease(self, error: LeaseLost) -> None:
        """The executor could not keep the lease: nothing more of the run may be written or
        started (``error`` becomes the run's fatal error)."""
        self.journal.fatal = error

    def set_paused(self, paused: bool) -> None:
        """The run's ``pause_requested`` as the executor last read it."""
        self.waits.pause_requested = paused

    # -- cancellation ----------------------------------------------------------------------

    def check_deadline(self) -> None:
        """Past the run's deadline, time it out: `WorkflowTimeout` is delivered like a cancel
        (at the next step boundary; at once to a sleep or signal wait). Called at every step,
        and by the executor's supervisor when the deadline comes."""
        if self.cancellation.check_deadline(self.clock.time()):
            self.waits.wake_all()

    def request_cancel(self) -> None:
        """Called by the executor when the run's ``cancel_requested`` is seen: deliver
        `Cancelled` at the next step boundary, and wake any sleep at once."""
        self.cancellation.request()
        self.waits.wake_all()

    def patched(self, change_id: str, location: str | None, *, deprecated: bool = False) -> bool:
        """Whether the run takes the new path of ``change_id`` (see `Helpers.patched`)."""
        return self.helpers.patched(change_id, location, deprecated=deprecated)

    def now(self, location: str | None) -> datetime:
        """The current time (UTC), recorded."""
        return self.helpers.now(location)

    def uuid4(self, location: str | None) -> uuid.UUID:
        """A random UUID, recorded."""
        return self.helpers.uuid4(location)

    def random(self, location: str | None) -> float:
        """A random float in [0, 1), recorded."""
        return self.helpers.random(location)

    def info(self) -> Info:
        """Run id, workflow name, the number of the last step called and the generation."""
        run = self.run_record
        return Info(run.id, self.defn.name, self.cursor.seq, 0, None, run.generation)

    def continue_as_new(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], location: str | None
    ) -> NoReturn:
        """End this generation: unwind the workflow (`ContinueAsNew`) so that `run` records
        the next one with these arguments (see `durable.continue_as_new`).

        Raises:
            NotInWorkflowError: a step of the run is still under way, or the run has ended.
            TypeError: the arguments do not fit the workflow's signature.
            SerializationError: they cannot be encoded.
        """
        run_id = self.run_record.id
        if self.fatal is not None:
            raise self.fatal
        if self.journal.closed:
            raise NotInWorkflowError(
                f"durable.continue_as_new() was called by a task of run {run_id!r} after the "
                "run had ended; call it from the workflow body, once its other tasks are done"
            )
        if self.flight.busy or self.waits.wake or self.others.children:
            raise NotInWorkflowError(
                f"durable.continue_as_new() was called while other steps of run {run_id!r} "
                "are under way (an activity, child workflow, signal send, sleep or signal wait "
                "in another task); it ends this generation, so call it once every branch has "
                "finished: await them (durable.gather or a task group) first"
            )
        try:
            inspect.signature(self.defn.fn).bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"durable.continue_as_new() of run {run_id!r}: the arguments do not fit "
                f"workflow {self.defn.name!r}: {exc}"
            ) from None
        except ValueError:
            pass  # no signature to check against
        payload = self.journal.payloads.dumps(
            (args, kwargs),
            what=f"arguments of generation {self.run_record.generation + 1} of run {run_id!r}",
        )
        if self.replay_only:  # a replay stops where the generation ends, if its history does
            if self.cursor.unreached(compensations_expected=False) is not None:
                self.fatal = self.cursor.diverged("durable.continue_as_new()")
                raise self.fatal
            raise ReplayEnd(self.cursor.seq + 1)
        raise ContinueAsNew(payload, location)


def _first(group: BaseExceptionGroup[WorkflowTimeout]) -> WorkflowTimeout:
    """The first leaf of a group of timeouts."""
    first = group.exceptions[0]
    return first if isinstance(first, WorkflowTimeout) else _first(first)
