"""Steps that reach other runs: child workflows and signals sent from workflow code.

A child step is recorded as started before the child run is created, and replaced by the
child's outcome; a parked child makes the parent's step wait like a signal wait, so the parent
parks too. A signal sent from workflow code is sent once however often the run replays: its
idempotency key is ``"<run id>/<step>"`` unless the workflow gives one. From a run's second
generation on (``durable.continue_as_new``) both are ``"<run id>/g<generation>/<step>"``
(`durable._types.step_key`), so a step never finds what an earlier generation's step of the
same number created.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any

from durable._errors import StoreError, WorkflowIdConflict
from durable._registry import WorkflowDefinition
from durable._signals import send_signal
from durable._types import StepKind, StepStatus, step_key
from durable.store import StepRecord

from ._common import FATAL, PARKED
from ._in_flight import Ticket
from ._journal import StepCall
from ._part import Part

if TYPE_CHECKING:
    from . import Engine

__all__ = ["OtherRuns"]


class OtherRuns(Part):
    """The child-workflow and signal-send steps of one run.

    Attributes:
        children: ids of child runs in flight (a cancel of this run reaches them).
    """

    def __init__(self, engine: Engine) -> None:
        """The steps of ``engine``'s run that reach other runs."""
        super().__init__(engine)
        self._store = engine.store
        self._child_runner = engine.child_runner
        self.children: set[str] = set()

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
        (under ``child_id``, by default ``"<run id>/<step>"``, see `step_key`; with a deadline
        ``timeout`` seconds from when it is recorded, at most this run's: see `child_deadline`)."""
        seq, recorded = self._e.gate.step(StepKind.CHILD, defn.name, location)
        if self._cancel.claim_at_call(seq, recorded):
            return self._e.gate.deliver_cancel(seq)
        if recorded is not None and recorded.status != StepStatus.STARTED:
            return self._journal.replay(recorded)
        if self._e.failure_recorded:
            return self._e.activities.halt(seq, StepKind.CHILD, defn.name, location)
        if self._e.waits.pause_requested:
            return self._e.waits.pause_here()
        ticket = self._flight.ticket()  # until the step is recorded (or fails, or is dropped)
        body = self._execute_child(
            ticket, seq, defn, args, kwargs, location, child_id, recorded, timeout
        )
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
        child_timeout: float | None,
    ) -> Any:
        try:  # counted in flight from the call (call_workflow) until recorded
            started = self._clock.time() if intent is None else intent.started_at
            call = StepCall(seq, StepKind.CHILD, defn.name, location, started)
            if intent is None:  # the child step is recorded as started before the child is
                await self._e.gate.begin(self._journal.started(call, 1))
            child_id = child_id or step_key(self._run.id, self._run.generation, seq)
            try:
                value = await self._await_child(seq, defn, args, kwargs, child_id, child_timeout)
            except FATAL as exc:
                self._e.fatal = exc  # the child cannot progress, so neither can this run
                raise
            except WorkflowIdConflict as exc:
                if exc.reason is not None:  # the id is another run's, not this run's child
                    raise await self._journal.record_failure(call, 1, exc, replaces=True) from None
                # The child id was created by the code this run started with, for another
                # workflow: the parent's history diverged before its child step was recorded.
                self._e.fatal = self._cursor.nondeterminism(
                    seq,
                    f"child {exc.recorded!r} (run {child_id!r})",
                    None,
                    f"child {defn.name!r}",
                    location,
                )
                raise self._e.fatal from exc
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
        child_timeout: float | None,
    ) -> Any:
        """The child run's outcome. A parked child (a worker resumes it when due) makes this
        step wait like a signal wait, so the parent parks too; the child's outcome wakes it."""
        self.children.add(child_id)
        deadline = self.child_deadline(child_timeout)
        try:
            while True:
                value = await self._child_runner(
                    defn, child_id, args, kwargs, self._run.id, deadline
                )
                if value is not PARKED:
                    return value
                self._e.waits.wake[seq] = (StepKind.CHILD, None)
                self._flight.leave()
                try:
                    await self._e.waits.nap(
                        seq,
                        self._e.config.signal_fallback_seconds,
                        long_wait=True,
                        watch=(child_id,),
                    )
                finally:
                    self._flight.enter()
                    self._e.waits.wake.pop(seq, None)
        finally:
            self.children.discard(child_id)

    def child_deadline(self, timeout: float | None) -> float | None:
        """The deadline of a child run recorded now: this run's deadline (it inherits the
        remaining time), or ``timeout`` seconds from now if that comes sooner. A child that
        exists already keeps the deadline it was recorded with."""
        own = self._run.deadline
        if timeout is None:
            return own
        mine = self._clock.time() + timeout
        return mine if own is None else min(own, mine)

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
        seq, recorded = self._e.gate.step(StepKind.SIGNAL_SEND, name, location)
        if self._cancel.claim_at_call(seq, recorded):
            return self._e.gate.deliver_cancel(seq)
        if recorded is not None and recorded.status != StepStatus.STARTED:
            return self._journal.replay(recorded)
        if self._e.failure_recorded:
            return self._e.activities.halt(seq, StepKind.SIGNAL_SEND, name, location)
        if self._e.waits.pause_requested:
            return self._e.waits.pause_here()
        ticket = self._flight.ticket()  # until the step is recorded (or fails, or is dropped)
        key = idempotency_key or step_key(self._run.id, self._run.generation, seq)
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
                await self._e.gate.begin(record, replaces=seq in self._cursor.overwrite)
            try:
                await send_signal(
                    self._store, run_id, name, payload, now=self._clock.time(), key=key
                )
            except StoreError as exc:
                self._e.fatal = exc  # the store cannot say whether it was sent: stop here
                raise
            except Exception as exc:
                raise await self._journal.record_failure(call, 1, exc, replaces=True) from None
            await self._journal.record_result(call, 1, None, replaces=True)
        finally:
            ticket.close()
