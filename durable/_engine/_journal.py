"""`Journal`: the only part of the engine that writes to the store, and what it writes.

Everything a run records goes through `Journal.commit`: steps (inserted, or replacing their
``started`` row), the helper steps buffered since the last commit (`buffer`), and the run's
update, in one transaction fenced by the lease. A lost lease or a store that cannot say what it
wrote makes the journal *fatal*: nothing more is written, and the workflow cannot catch it and
carry on. The same holds for a payload that cannot be decoded (`load`).

`StepCall` is what a step is while it is being executed: its number, kind, name, location and
when it started; `record` / `started` turn it into the rows the store keeps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from durable._clock import Clock
from durable._codec import Payloads
from durable._errors import LeaseLost, NotInWorkflowError, PayloadDecodeError, SerializationError
from durable._types import RunStatus, StepKind, StepStatus
from durable.store import (
    EventWrite,
    Interruption,
    Lease,
    RunRecord,
    RunUpdate,
    StepRecord,
    Store,
    StoreError,
    StreamWrite,
    UnreadableRecord,
)

from ._in_flight import InFlight

__all__ = ["Journal", "StepCall"]


@dataclass(frozen=True, slots=True)
class StepCall:
    """A step being executed: what every row it records has in common."""

    seq: int
    kind: StepKind
    name: str
    location: str | None
    started: float

    def describe(self, run_id: str) -> str:
        """``"activity 'shop.charge' (run 'order-1', step 3)"``, for messages."""
        return f"{self.kind} {self.name!r} (run {run_id!r}, step {self.seq})"


class Journal:
    """Writes one run's steps and updates under its lease.

    Attributes:
        fatal: the error that stopped the run (a lost lease, a store failure, a divergence, an
            undecodable payload), or ``None``. Once set, it is raised by every later step.
        finished: the outcome is recorded and the lease released.
        closed: the outcome is recorded (or being recorded): no step may be recorded any more.
    """

    __slots__ = (
        "_clock",
        "_flight",
        "_lease",
        "_lease_margin",
        "_lease_seconds",
        "_pending",
        "_run",
        "_store",
        "closed",
        "fatal",
        "finished",
        "payloads",
    )

    def __init__(
        self,
        *,
        store: Store,
        run: RunRecord,
        lease: Lease,
        clock: Clock,
        payloads: Payloads,
        flight: InFlight,
        lease_seconds: float,
    ) -> None:
        """Journal of ``run`` under ``lease``; its commits count in ``flight``."""
        self._store = store
        self._run = run
        self._lease = lease
        self._clock = clock
        self.payloads = payloads
        self._flight = flight
        # Before an attempt starts, the lease must have at least this long to run by this
        # process's clock (a renewal is due every third of it), else it is renewed first.
        self._lease_seconds = lease_seconds
        self._lease_margin = lease_seconds / 3
        self._pending: list[StepRecord] = []  # helper steps, written with the next commit
        self.fatal: BaseException | None = None
        self.finished = False
        self.closed = False

    # -- reading ---------------------------------------------------------------------------

    def load(self, data: bytes | None, seq: int | None, what: str) -> Any:
        """Decode a recorded payload; one that cannot be decoded is fatal."""
        try:
            return self.payloads.loads(data or b"", run_id=self._run.id, seq=seq, what=what)
        except PayloadDecodeError as exc:
            self.fatal = exc
            raise

    def replayed(self, step: StepRecord) -> Any:
        """A recorded step's result, or raise its recorded error."""
        if step.status == StepStatus.FAILED:
            error = self.load(step.error, step.seq, "error")
            raise error
        return self.load(step.result, step.seq, "result")

    async def replay(self, step: StepRecord) -> Any:
        """`replayed`, as an awaitable (what a recorded step's call returns)."""
        return self.replayed(step)

    # -- writing ---------------------------------------------------------------------------

    async def commit(
        self,
        steps: tuple[StepRecord, ...] | list[StepRecord],
        update: RunUpdate | None = None,
        *,
        outcomes: Sequence[StepRecord] = (),
        check_requests: bool = False,
        relaxed: bool = False,
    ) -> Interruption | None:
        """Write ``steps`` (and the buffered helper steps), ``outcomes`` (replacing their
        ``started`` rows) and ``update`` in one transaction (see `Store.commit`).

        Returns:
            ``None``, or the `Interruption` that refused it (``check_requests``): nothing
            was written.

        Raises:
            NotInWorkflowError: the run has ended.
            LeaseLost, StoreError: (fatal) someone else owns the run, or the store cannot say
                what was written.
        """
        if self.closed and (update is None or not update.release):
            raise NotInWorkflowError(
                f"run {self._run.id!r} has ended; a task it left behind cannot record steps"
            )
        # Take the buffered helper steps before awaiting: a concurrent branch must not commit
        # them a second time, and helpers buffered meanwhile belong to the next commit.
        pending, self._pending = self._pending, []
        batch = [*pending, *steps] if pending else steps
        self._flight.enter()
        try:
            stopped = await self._store.commit(
                self._lease,
                batch,
                update,
                now=self._clock.time(),
                outcomes=outcomes,
                check_requests=check_requests,
                relaxed=relaxed and not pending,
            )
        except (LeaseLost, StoreError) as exc:
            # Either someone else owns the run, or the store cannot say what was written: this
            # executor stops; the workflow must not catch it and carry on.
            self.fatal = exc
            raise
        except BaseException:
            self._pending[:0] = pending
            raise
        finally:
            self._flight.leave()
        if stopped is not None:  # nothing was written
            self._pending[:0] = pending
            return stopped
        if update is not None and update.release:
            self.finished = True
            self.closed = True
        return None

    def buffer(
        self, seq: int, kind: StepKind, name: str, payload: bytes, location: str | None
    ) -> None:
        """Record a step that has no side effect with the next commit (helpers, markers)."""
        now = self._clock.time()
        self._pending.append(
            StepRecord(
                run_id=self._run.id,
                seq=seq,
                kind=kind,
                name=name,
                status=StepStatus.COMPLETED,
                attempts=1,
                started_at=now,
                finished_at=now,
                result=payload,
                location=location,
            )
        )

    async def continue_run(self, args: bytes) -> RunRecord:
        """Start the run's next generation with ``args`` (see `Store.continue_run`): this
        journal's generation ends (nothing more is recorded through it) and the lease stays
        with the executor. Helper steps buffered since the last commit are dropped with the
        history they belonged to.

        Raises:
            LeaseLost, StoreError: (fatal) someone else owns the run, or the store cannot say
                what was written.
        """
        self._pending.clear()
        self._flight.enter()
        try:
            run = await self._store.continue_run(self._lease, args, now=self._clock.time())
        except (LeaseLost, StoreError) as exc:
            self.fatal = exc
            raise
        finally:
            self._flight.leave()
        self.closed = True
        return run

    async def block(self, fatal: BaseException) -> None:
        """Record the run ``blocked`` by ``fatal`` (unless fatal means: write nothing)."""
        if isinstance(fatal, LeaseLost | StoreError) and not isinstance(fatal, UnreadableRecord):
            return  # someone else owns the run, or the store failed: write nothing
        self._pending.clear()  # values from a diverged replay must not be recorded
        update = RunUpdate(RunStatus.BLOCKED, error_text=str(fatal), release=True)
        await self.commit((), update)

    async def record_error(self, status: RunStatus, error: Exception) -> None:
        """Record the run's final error and status, and release it."""
        encoded, _ = self.payloads.dumps_error(error, what=f"error of run {self._run.id!r}")
        text = f"{type(error).__qualname__}: {error}"
        await self.commit((), RunUpdate(status, error=encoded, error_text=text, release=True))

    # -- step rows -------------------------------------------------------------------------

    def record(
        self,
        call: StepCall,
        attempts: int,
        *,
        result: bytes | None = None,
        error: bytes | None = None,
        finished_at: float | None = None,
    ) -> StepRecord:
        """The row of ``call``'s outcome (failed when ``error`` is given)."""
        return StepRecord(
            run_id=self._run.id,
            seq=call.seq,
            kind=call.kind,
            name=call.name,
            status=StepStatus.FAILED if error is not None else StepStatus.COMPLETED,
            attempts=attempts,
            started_at=call.started,
            finished_at=self._clock.time() if finished_at is None else finished_at,
            result=result,
            error=error,
            location=call.location,
        )

    def started(self, call: StepCall, attempts: int) -> StepRecord:
        """The ``started`` row of ``call`` whose attempt number ``attempts`` begins now."""
        return dataclasses.replace(self.record(call, attempts), status=StepStatus.STARTED)

    async def record_failure(
        self, call: StepCall, attempts: int, exc: Exception, *, replaces: bool = False
    ) -> BaseException:
        """Record ``call`` failed with ``exc``; returns the exception the workflow sees."""
        error, seen = self.payloads.dumps_error(exc, what=f"error of {call.describe(self._run.id)}")
        await self.commit_step(self.record(call, attempts, error=error), replaces)
        return seen

    async def record_result(
        self,
        call: StepCall,
        attempts: int,
        value: Any,
        *,
        replaces: bool = False,
        finished_at: float | None = None,
    ) -> Any:
        """Record ``call`` completed with ``value`` and return it; a value that cannot be
        encoded is recorded as the step's failure and raised."""
        try:
            payload = self.payloads.dumps(value, what=f"result of {call.describe(self._run.id)}")
        except SerializationError as exc:
            raise await self.record_failure(call, attempts, exc, replaces=replaces) from None
        record = self.record(call, attempts, result=payload, finished_at=finished_at)
        await self.commit_step(record, replaces)
        return value

    async def commit_step(self, record: StepRecord, replaces: bool) -> None:
        """Record a step: inserted, or replacing its recorded intent (``started``)."""
        if replaces:
            await self.commit((), outcomes=[record])
        else:
            await self.commit([record])

    # -- the lease -------------------------------------------------------------------------

    async def fresh_lease(self) -> None:
        """Make sure the lease outlives the attempt about to start, by this process's clock:
        one that has less than a third of its duration left (renewals stalled, or this
        process was frozen) is renewed first, and a failed renewal stops the executor without
        starting anything: a successor may own the run by now."""
        if self._clock.time() < self._lease.expires_at - self._lease_margin:
            return
        try:
            lease = await self._store.renew_lease(
                self._lease, now=self._clock.time(), duration=self._lease_seconds
            )
        except LeaseLost as exc:
            self.fatal = exc
            raise
        except Exception as exc:
            self.fatal = LeaseLost(
                self._run.id,
                f"its lease was about to expire and could not be renewed ({exc}); no step "
                "is started without one",
            )
            raise self.fatal from exc
        self.lease_renewed(lease)

    @property
    def lease(self) -> Lease:
        """The lease, as last renewed."""
        return self._lease

    def lease_renewed(self, lease: Lease) -> None:
        """The lease was renewed: later checks use the new expiry."""
        if lease.token == self._lease.token and lease.expires_at > self._lease.expires_at:
            self._lease = lease

    async def publish(self, write: EventWrite | StreamWrite, record: StepRecord | None) -> None:
        """Publish ``write`` (see `Store.publish`): from workflow code with its step
        ``record`` and the helper steps buffered before it, in one transaction; from an
        activity without a step. A lost lease or store failure is fatal. Counted in flight,
        like a commit."""
        if record is not None and self.closed:
            raise NotInWorkflowError(
                f"run {self._run.id!r} has ended; a task it left behind cannot record steps"
            )
        pending: list[StepRecord] = []
        if record is not None:
            pending, self._pending = self._pending, []
            pending.append(record)
        self._flight.enter()
        try:
            await self._store.publish(self._lease, write, steps=pending, now=self._clock.time())
        except (LeaseLost, StoreError) as exc:
            self.fatal = exc
            raise
        except BaseException:
            if record is not None:
                self._pending[:0] = pending[:-1]
            raise
        finally:
            self._flight.leave()

    async def withdraw(self, generation: int, seq: int, below: int) -> None:
        """Withdraw the stream writes of step ``seq``'s attempts below ``below`` (see
        `Store.withdraw`); a lost lease or store failure is fatal."""
        self._flight.enter()
        try:
            await self._store.withdraw(
                self._lease, generation=generation, seq=seq, below=below, now=self._clock.time()
            )
        except (LeaseLost, StoreError) as exc:
            self.fatal = exc
            raise
        finally:
            self._flight.leave()

    async def receive_signal(self, name: str, outcome: StepRecord) -> bytes | None:
        """Consume the next buffered signal ``name`` into ``outcome`` (see
        `Store.receive_signal`); a lost lease or store failure is fatal. Counted in flight,
        like a commit: a run must not park while a signal may be being consumed (a sibling
        wait of `durable.wait_first` would park it with the winner unseen)."""
        self._flight.enter()
        try:
            return await self._store.receive_signal(
                self._lease, name, outcome, now=self._clock.time()
            )
        except (LeaseLost, StoreError) as exc:
            self.fatal = exc
            raise
        finally:
            self._flight.leave()
