"""Waits: timers, signal waits, parking and pausing.

A wait is recorded when it starts (a timer its due time, a signal wait its deadline), so a
resumed run keeps it. A wait longer than ``park_after`` parks the run once nothing else of it is
in flight (`InFlight`): the workflow is unwound (`Park`) and the run released with its wake-up
time, holding no memory or task; whoever executes it resumes it later. A pause request unwinds
the run the same way, with status ``paused``, once the steps in flight are recorded.

Every wait also wakes at the run's deadline (``timeout=``) and takes the timeout there, as it
would take a cancel (`WorkflowTimeout`); a parked run is due at its deadline at the latest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Collection
from typing import TYPE_CHECKING, Any, NoReturn, overload

import anyio
import anyio.lowlevel

from durable._clock import SystemClock
from durable._errors import SignalTimeout
from durable._types import RunStatus, StepKind, StepStatus
from durable.store import RunUpdate, StepRecord

from ._common import Park
from ._journal import StepCall
from ._part import Part

if TYPE_CHECKING:
    from . import Engine

__all__ = ["Waits"]


class Waits(Part):
    """The waits of one run, and whether it parks or pauses.

    Attributes:
        parked: the update that parks the run (set once it is decided), or ``None``.
        pause_requested: stop at the next step boundary (the run was asked to pause).
        wake: the waits in progress, by step: their kind and wake-up time (``None``: a
            signal or a child's outcome).
    """

    def __init__(self, engine: Engine, *, park_after: float | None, pause_requested: bool) -> None:
        """The waits of ``engine``'s run; a wait longer than ``park_after`` parks it."""
        super().__init__(engine)
        # Parking: a wait longer than park_after unwinds the run when nothing else is in flight
        # (no activity, child or commit), so it holds no memory or task while it waits.
        self._park_after = park_after
        self._waits: set[anyio.CancelScope] = set()  # in-process sleeps, woken by a cancel
        self.wake: dict[int, tuple[StepKind, float | None]] = {}
        self.parked: RunUpdate | None = None
        self.pause_requested = pause_requested

    def wake_all(self) -> None:
        """Wake every wait held in memory (a cancel arrived)."""
        for wait in list(self._waits):
            wait.cancel()

    def sleep(self, seconds: float, location: str | None) -> Awaitable[None]:
        """Number the timer step now; the awaitable records its due time and waits for it."""
        seq, recorded = self._e.gate.step(StepKind.TIMER, "sleep", location)
        if self._cancel.at == seq:
            return self._e.gate.deliver_cancel(seq)
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
        self.wake[seq] = (StepKind.TIMER, due)
        try:
            # A cancel seen while that commit was awaited has set the flag: checked first.
            while True:
                if self.parked is not None:
                    raise Park  # the run parks: the parking commit takes the cancel on
                self._e.check_deadline()
                if self._cancel.claim_at_wait(seq):
                    break  # this sleep takes the cancellation (or the timeout)
                now = self._clock.time()
                if due - now <= 0:
                    break
                remaining = self._until(due) - now  # woken at the run's deadline too
                long_wait = self._park_after is not None and remaining > self._park_after
                await self.nap(seq, remaining, long_wait)
                # woken early by a cancel that another step took: sleep on until due
        finally:
            self.wake.pop(seq, None)
        if self._cancel.at == seq:
            await self._e.gate.deliver_cancel(seq)
        await self._journal.commit((), RunUpdate(RunStatus.RUNNING))

    def wait_signal(self, name: str, timeout: float | None, location: str | None) -> Awaitable[Any]:
        """Number the wait now; the awaitable returns the next signal's payload."""
        seq, recorded = self._e.gate.step(StepKind.SIGNAL, name, location)
        if self._cancel.at == seq:
            return self._e.gate.deliver_cancel(seq)
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
        poll = self._e.config.signal_fallback_seconds
        waiting_since = self._clock.time()
        self.wake[seq] = (StepKind.SIGNAL, deadline)
        try:
            call = StepCall(seq, StepKind.SIGNAL, name, location, started)
            return await self._signal_loop(call, deadline, poll, waiting_since)
        finally:
            self.wake.pop(seq, None)

    async def _signal_loop(
        self, call: StepCall, deadline: float | None, poll: float, waiting_since: float
    ) -> Any:
        seq, name = call.seq, call.name
        while True:
            if self.parked is not None:
                raise Park  # the run parks: the parking commit takes a cancel on
            self._e.check_deadline()
            if self._cancel.claim_at_wait(seq):
                await self._e.gate.deliver_cancel(seq)
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
            wake_by = self._until(deadline)  # the wait's deadline, or the run's if sooner
            long_wait = (
                self._park_after is not None
                and now - waiting_since >= self._park_after
                and (wake_by is None or wake_by - now > self._park_after)
            )
            # A signal sent to the run wakes the nap at once (`Store.watch`); otherwise it
            # lasts until the deadline, until the run may park, or until the fallback look.
            limits = [poll]
            if wake_by is not None:
                limits.append(wake_by - now)
            if self._park_after is not None and not long_wait:
                limits.append(waiting_since + self._park_after - now)
            await self.nap(seq, max(min(limits), 0.0), long_wait, watch=(self._run.id,))
            poll = self._e.config.signal_fallback_seconds

    async def _begin_wait(self, record: StepRecord, update: RunUpdate | None) -> None:
        """Record a timer or signal wait as it starts (refused while a request is pending,
        like every step: see `_begin`); counted in flight meanwhile."""
        self._flight.enter()
        try:
            await self._e.gate.begin(record, update=update)
        finally:
            self._flight.leave()

    async def nap(
        self, seq: int, seconds: float, long_wait: bool, *, watch: Collection[str] = ()
    ) -> None:
        """Wait up to ``seconds`` in-process (a cancel or a park wakes it early, and a write
        to one of the runs in ``watch``). When the wait is long and nothing else of the run
        is in flight, park: unwind the run."""
        if self.pause_requested and not self._e.failure_recorded:
            await self.pause_here()
        if long_wait and self._park_after is not None:
            await self.park_if_idle()
            seconds = min(seconds, max(self._park_after, 0.05))  # then look again
        if self.parked is not None:
            raise Park
        with anyio.CancelScope() as nap:
            self._waits.add(nap)
            try:
                if watch:
                    await self._sleep_or_watch(seconds, watch)
                else:
                    await self._clock.sleep(seconds)
            finally:
                self._waits.discard(nap)
        if self.parked is not None:
            raise Park

    async def _sleep_or_watch(self, seconds: float, run_ids: Collection[str]) -> None:
        """Whichever comes first: ``seconds`` of the run's clock pass, or a write to one of
        ``run_ids`` (the watch lasts as many real seconds; with the system clock they are
        the same wait)."""
        store = self._e.store
        if isinstance(self._clock, SystemClock):
            await store.watch(run_ids, within=seconds)
            return
        async with anyio.create_task_group() as tg:

            async def first(wait: Awaitable[Any]) -> None:
                await wait
                tg.cancel_scope.cancel()

            tg.start_soon(first, self._clock.sleep(seconds))
            tg.start_soon(first, store.watch(run_ids, within=seconds))

    async def pause_here(self) -> NoReturn:
        """The run was asked to pause: once the steps in flight are recorded, unwind it with
        status ``paused``; this step runs when the run is resumed."""
        await self._flight.wait_idle()
        if self.parked is None:
            self.parked = RunUpdate(RunStatus.PAUSED, release=True)
            for wait in list(self._waits):
                wait.cancel()
        raise Park

    async def park_if_idle(self) -> None:
        for _ in range(3):  # let the other branches reach their own waits first
            await anyio.lowlevel.checkpoint()
        if (
            self.parked is not None
            or self._flight.busy
            or self._e.fatal is not None
            or self._e.failure_recorded
            or self._cancel.unclaimed
        ):
            return
        kinds = {kind for kind, _ in self.wake.values()}
        times = [at for _, at in self.wake.values() if at is not None]
        if self._cancel.open_deadline is not None:  # a parked run wakes for its deadline
            times.append(self._cancel.open_deadline)
        waiting = StepKind.SIGNAL in kinds or StepKind.CHILD in kinds
        status = RunStatus.WAITING if waiting else RunStatus.SLEEPING
        self.parked = RunUpdate(status, wake_at=min(times) if times else None, release=True)
        for wait in list(self._waits):  # the other waits unwind too
            wait.cancel()

    @overload
    def _until(self, due: float) -> float: ...
    @overload
    def _until(self, due: float | None) -> float | None: ...
    def _until(self, due: float | None) -> float | None:
        """When a wait due at ``due`` (``None``: only a signal ends it) must wake: then, or at
        the run's deadline if that comes first and may still be delivered."""
        deadline = self._cancel.open_deadline
        if deadline is None:
            return due
        return deadline if due is None else min(due, deadline)

    def in_memory(self) -> bool:
        """Whether a wait of this run is held in memory (a sleep, a signal wait) or a child
        run is in flight: a cancel or pause request must then be passed on to them."""
        return bool(self._waits or self._e.others.children)
