"""`Gate`: the step boundary. Every intercepted call is numbered here (refused once the run is
stopped or ended, or when it diverges from the history), every step with an effect starts here
(its ``started`` row, refused by the store while a pause or an undelivered cancel is pending),
and a cancellation (or a timeout: the run's deadline passed) is delivered and recorded here."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import anyio
import anyio.lowlevel

from durable._errors import Cancelled, NonDeterminismError, NotInWorkflowError, WorkflowTimeout
from durable._types import RunStatus, StepKind, utc
from durable.store import Interruption, RunUpdate, StepRecord

if TYPE_CHECKING:
    from . import Engine

__all__ = ["Gate"]


class Gate:
    """The step boundary of one run (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        """The gate of ``engine``'s run."""
        self._e = engine

    def step(
        self, kind: StepKind, name: str, location: str | None
    ) -> tuple[int, StepRecord | None]:
        """Number a call and return what the history recorded at that number.

        Raises:
            The run's fatal error; `NotInWorkflowError` after the run ended;
            `NonDeterminismError` (made fatal) when the history has another call there.
        """
        if self._e.fatal is not None:
            raise self._e.fatal
        if self._e.journal.closed:
            raise NotInWorkflowError(
                f"a {kind} step ({name!r}) was called by a task of run {self._e.run_record.id!r} "
                "after the run had ended; await every task a workflow starts before it returns "
                "(use durable.gather or a task group, which wait for all their tasks)"
            )
        self._e.check_deadline()  # past it, this step (if not recorded) takes the timeout
        try:
            return self._e.cursor.next(kind, name, location)
        except NonDeterminismError as exc:
            self._e.fatal = exc
            raise

    async def begin(
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
        the run ``paused`` (it starts when the run is resumed). A timeout (the deadline
        passed) stops it the same way, before the store is asked. ``relaxed``: the record only
        counts an attempt, so the store need not wait for the disk (see `Store.commit`)."""
        while True:
            if check_requests:
                await self._beside_delivery(record.seq)
            if check_requests and self._e.cancellation.timeout_pending:
                # The deadline passed: the store knows nothing of it, so the gate stops the
                # step as the store stops one while a cancel is pending.
                await self._take_cancel(record.seq)
                continue
            stopped = await self._e.journal.commit(
                () if replaces else [record],
                update,
                outcomes=[record] if replaces else (),
                check_requests=check_requests,
                relaxed=relaxed,
            )
            if stopped is None:
                if check_requests:  # a delivery may have been raised while this was written
                    await self._beside_delivery(record.seq)
                return
            await self._interrupted(record.seq, stopped)

    async def _beside_delivery(self, seq: int) -> None:
        """Step ``seq`` was called beside the step that raised the cancellation (another
        branch of its task group, which cancels this one once that error reaches it): let
        that happen before this step starts. A branch that catches the error and goes on
        lets this step start."""
        if self._e.cancellation.beside_delivery(seq):
            for _ in range(3):
                await anyio.lowlevel.checkpoint()

    async def _interrupted(self, seq: int, stopped: Interruption) -> None:
        """Step ``seq`` was refused by a request: deliver the cancellation here, park the run
        paused, or (when another step is delivering the cancellation) wait for that and
        return so the caller tries again (a workflow may catch `Cancelled` and go on)."""
        if stopped.cancel:
            self._e.request_cancel()
            await self._take_cancel(seq)
            return
        self._e.waits.pause_requested = True
        self._e.flight.leave()  # _pause_here waits for the other steps in flight
        try:
            await self._e.waits.pause_here()
        finally:
            self._e.flight.enter()

    async def _take_cancel(self, seq: int) -> None:
        """Step ``seq`` met a pending cancel (or timeout): it takes the delivery (raises)
        unless another step has; then it waits until that delivery is recorded and returns."""
        self._e.cancellation.claim_refused(seq)
        if self._e.cancellation.at == seq:
            await self.deliver_cancel(seq)
        if self._e.cancellation.unrecorded:
            # Another step took the delivery when it was called (it raises `Cancelled`
            # when awaited, whenever that is): record where, so this one may go on.
            await self.record_cancel(self._e.cancellation.at)
        self._e.flight.leave()  # this step waits: it must not keep the run from parking
        try:
            await self._e.cancellation.delivered.wait()
            # The delivering step's `Cancelled` is on its way to a task group that will
            # cancel this branch too: let it, before this step starts.
            await anyio.lowlevel.checkpoint()
        finally:
            self._e.flight.enter()

    async def deliver_cancel(self, seq: int) -> NoReturn:
        """Raise `Cancelled` (or `WorkflowTimeout`) at step ``seq``, its first delivery
        recorded."""
        await self.record_cancel(seq)
        cancellation = self._e.cancellation
        cancellation.called_before = max(cancellation.called_before, self._e.cursor.seq)
        raise self.cancel_error()

    def cancel_error(self) -> Cancelled:
        """What a delivered cancellation raises: `WorkflowTimeout` when the run's deadline
        caused it, else `Cancelled`."""
        cancellation, run_id = self._e.cancellation, self._e.run_record.id
        if cancellation.timed_out and cancellation.deadline is not None:
            return WorkflowTimeout(run_id, utc(cancellation.deadline))
        return Cancelled(run_id)

    async def record_cancel(self, seq: int | None) -> None:
        """First delivery at step ``seq``: record where, so replays raise it at that step."""
        if self._e.cancellation.to_record(seq):
            await self._e.journal.commit((), RunUpdate(RunStatus.RUNNING, cancelled_seq=seq))
            self._e.cancellation.delivered.set()
