"""Activity steps: retries, timeouts, the ``started`` row of each attempt, and compensations.

Every attempt is recorded as it starts (a fenced ``started`` row counting it) and its outcome
replaces that row, so an attempt cut off by a crash is counted; an activity declared ``final``
whose start is recorded without an outcome is `OutcomeUnknown` rather than run twice. An
activity's undo is pushed on the saga stack when it completes (`durable._saga`), and each undo
runs as a recorded ``compensation`` step, retried like an activity.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import anyio.to_thread

from durable import _context
from durable import _tracing as tracing
from durable._errors import ActivityInterrupted, ActivityTimeout, OutcomeUnknown
from durable._registry import ActivityDefinition
from durable._saga import Undo
from durable._types import Info, StepKind, StepStatus, step_key
from durable.store import StepRecord

from ._in_flight import Ticket
from ._journal import StepCall
from ._part import Part

if TYPE_CHECKING:
    from . import Engine

__all__ = ["Activities"]


class Activities(Part):
    """The activity and compensation steps of one run (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        """The activities of ``engine``'s run."""
        super().__init__(engine)
        self._saga = engine.compensator
        self._defn = engine.defn
        self._interceptor = engine.interceptor

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
        seq, recorded = self._e.gate.step(StepKind.ACTIVITY, defn.name, location)
        if self._cancel.claim_at_call(seq, recorded):
            return self._e.gate.deliver_cancel(seq)
        if recorded is not None and recorded.status != StepStatus.STARTED:
            if defn.undo is None:
                return self._journal.replay(recorded)
            return self._replay_compensable(recorded, defn, args, kwargs, instance)
        if self._e.failure_recorded:
            return self.halt(seq, StepKind.ACTIVITY, defn.name, location)
        if self._e.waits.pause_requested:
            return self._e.waits.pause_here()
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
            value, attempts, call = await self.with_retries(
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

    async def with_retries(
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
        publisher = self._e.publisher
        if intent is not None:
            # Attempts cut off by a crash may have written to streams: withdraw that first.
            await publisher.withdraw(seq, done + 1)
            stop: Exception | None = None
            if defn.final and not defn.idempotent:
                key = step_key(self._run.id, self._run.generation, seq)
                stop = OutcomeUnknown(self._run.id, seq, name, idempotency_key=key)
            elif defn.crash_limit and done >= defn.retry.max_attempts:
                stop = ActivityInterrupted(self._run.id, seq, name, done)
            if stop is not None:
                raise await self._journal.record_failure(call, done, stop, replaces=True) from None
        attempt = done
        recorded = intent is not None or seq in self._cursor.overwrite
        while True:
            attempt += 1
            await self._journal.fresh_lease()  # before the attempt is recorded: no phantom attempts
            await self._e.gate.begin(
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
                value = await self._attempt(kind, defn, fn, args, kwargs, seq, attempt)
                return value, attempt, call
            except Exception as exc:
                if self._e.fatal is not None:
                    raise
                # A failed attempt's stream writes are withdrawn before anything else happens.
                await publisher.withdraw(seq, attempt + 1, known=True)
                if defn.retry.retries(exc, attempt):
                    await self._clock.sleep(defn.retry.delay(attempt))
                    continue
                seen = await self._journal.record_failure(call, attempt, exc, replaces=True)
                raise seen from None
            except BaseException:
                if self._e.fatal is None:  # cancelled: what it wrote is not the step's
                    await publisher.withdraw_quietly(seq, attempt + 1)
                raise

    async def halt(self, seq: int, kind: StepKind, name: str, location: str | None) -> NoReturn:
        """A step that was still running when the run failed, met again while the run is
        resumed to finish compensating: it waits to be cancelled, as it was the first time,
        by the replayed failure. If that never comes, the code has diverged."""
        with anyio.move_on_after(self._e.config.halt_seconds):
            await anyio.sleep_forever()
        self._e.fatal = self._cursor.nondeterminism(
            seq,
            "no completed step (the run failed before it finished)",
            None,
            f"{kind} {name!r}, and the recorded failure was not raised again",
            location,
        )
        raise self._e.fatal

    async def compensate(self, undo: Undo) -> None:
        undoes = f"undo of step {undo.seq}"
        seq, recorded = self._e.gate.step(StepKind.COMPENSATION, undo.defn.name, undoes)
        if recorded is not None:
            if recorded.location != undoes:  # same undo function, another activity's undo
                self._e.fatal = self._cursor.nondeterminism(
                    seq,
                    f"compensation {recorded.name!r}",
                    recorded.location,
                    f"compensation {undo.defn.name!r}",
                    undoes,
                )
                raise self._e.fatal
            if recorded.status != StepStatus.STARTED:
                self._journal.replayed(recorded)
                return
        kind = StepKind.COMPENSATION
        value, attempts, call = await self.with_retries(
            seq, kind, undo.defn, undo.defn.fn, undo.args, undo.kwargs, undoes, recorded
        )
        await self._journal.record_result(call, attempts, value, replaces=True)

    async def _attempt(
        self,
        kind: StepKind,
        defn: ActivityDefinition,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seq: int,
        attempt: int,
    ) -> Any:
        tracer = self._e.tracer
        if tracer is None:  # the hot path: no span
            return await self._call(defn, fn, args, kwargs, seq, attempt)
        run_id, workflow = self._run.id, self._defn.name
        with tracing.step_span(tracer, kind, defn.name, run_id, workflow, seq, attempt):
            return await self._call(defn, fn, args, kwargs, seq, attempt)

    async def _call(
        self,
        defn: ActivityDefinition,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seq: int,
        attempt: int,
    ) -> Any:
        """One attempt: the activity called in its `durable.info` context, under its timeout."""
        run_id, generation = self._run.id, self._run.generation
        key = step_key(run_id, generation, seq)
        info = Info(run_id, self._defn.name, seq, attempt, key, generation)
        tokens = _context.enter_activity(info, self._e.publisher)
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
