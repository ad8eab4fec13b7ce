"""`FirstOf`: `durable.wait_first`, the first of several steps to finish.

The steps raced are numbered when they are *called* (the arguments of ``wait_first``), like any
step, and ``wait_first`` itself takes the next number: a step of kind ``first`` whose result is
the index of the winner. The engine notes, for every awaitable an activity call, a child call,
`durable.sleep` or `durable.wait_signal` returns, which step it is (`note`), so ``wait_first``
knows what it was given.

How the winner is decided, in this order:

1. The run's cancellation was delivered at one of the steps: that one (it raises `Cancelled`,
   and nothing is recorded: the run records where its cancellation was delivered).
2. The ``first`` step is recorded: its index, whatever the timing now (a replay).
3. Some of the steps already finished by the history (a run resumed after a crash between a
   step's outcome and the ``first`` record, or parked meanwhile): the one that finished
   earliest by the recorded times (a timer finishes at its due time), the lowest index on a
   tie. The workflow never saw another winner: ``wait_first`` returns only once the winner is
   recorded.
4. Otherwise the steps race: each in a task of its own; the first to end (with a value or an
   error) wins, and a step whose task had not begun by then never starts. If one of them
   took the run's cancellation meanwhile, `Cancelled` is raised whoever won (as in 1).

Then the losers are wound down: a timer or signal wait is cancelled (a signal is consumed only
by a wait that completes), an activity attempt under way is cancelled as its ``timeout=`` would
cancel it (its ``started`` row stays, counting the attempt; a plain-``def`` activity's thread
is abandoned), and a child run is asked to cancel (`Store.request_cancel`), and waited for
until it ends (it runs its compensations; its step records that outcome). A loser that
completed before it could be cancelled keeps its undo on the saga stack. On a replay the
losers that the history shows finished are replayed (their undos are pushed again, in the
recorded order), an unfinished child is asked again to cancel and waited for, and every other
loser is closed without running: its step never executes again. Only then is the ``first``
step recorded (with the run's status back to ``running``, which a loser's wait may have
changed), and the winner's value returned or its error raised.

A loser's outcome that its store committed is always seen by its branch: no store yields
between applying a commit and returning (Postgres shields the transaction, and nothing after
it waits), so a cancellation arriving meanwhile lands at the branch's next wait, after the
completed activity pushed its undo.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc

from durable._types import RunStatus, StepKind, StepStatus
from durable.store import RunUpdate, StepRecord

from ._journal import StepCall
from ._part import Part

if TYPE_CHECKING:
    from . import Engine

__all__ = ["FirstOf"]

T = TypeVar("T")

NAME = "wait_first"
"""The name of every ``first`` step."""

_FINISHED = (StepStatus.COMPLETED, StepStatus.FAILED)


@dataclass(frozen=True, slots=True)
class _Made:
    """What the engine noted about an awaitable it returned: its step, and for a child call
    the child run's id."""

    seq: int
    kind: StepKind
    child_id: str | None


@dataclass(slots=True, eq=False)
class _Entry:
    """One awaitable given to ``wait_first``, while it is decided."""

    index: int
    awaitable: Awaitable[Any]
    made: _Made
    recorded: StepRecord | None
    used: bool = False  # started (awaited) or closed: it must not be closed again
    ended: anyio.Event = field(default_factory=anyio.Event)  # its race branch is over
    scope: anyio.CancelScope | None = None  # its race branch's scope


@dataclass(slots=True)
class _Outcome:
    """The winner of a race: its index, and its value or error."""

    index: int
    value: Any = None
    error: Exception | None = None


class FirstOf(Part):
    """`durable.wait_first` for one run (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        """The ``wait_first`` calls of ``engine``'s run."""
        super().__init__(engine)
        self._made: weakref.WeakKeyDictionary[Any, _Made] = weakref.WeakKeyDictionary()

    def note(self, awaitable: T, kind: StepKind, child_id: str | None = None) -> T:
        """Remember that ``awaitable`` is the step just numbered (of ``kind``); returns it."""
        self._made[awaitable] = _Made(self._cursor.seq, kind, child_id)
        return awaitable

    # -- the call ------------------------------------------------------------------------

    def wait_first(
        self, awaitables: Sequence[Awaitable[Any]], location: str | None
    ) -> Coroutine[Any, Any, tuple[int, Any]]:
        """Check the awaitables, number the ``first`` step now, and return the coroutine that
        decides the winner.

        Raises:
            TypeError: an argument is not a step of this run that ``wait_first`` can race.
            ValueError: no argument, an argument already awaited, or one given twice.
        """
        try:
            entries = self._entries(awaitables)
            seq, recorded = self._e.gate.step(StepKind.FIRST, NAME, location)
        except BaseException:
            close_all(awaitables, self._flight.drop)
            raise
        return self._wait_first(seq, recorded, entries, location)

    def _entries(self, awaitables: Sequence[Awaitable[Any]]) -> list[_Entry]:
        if not awaitables:
            raise ValueError(
                "durable.wait_first() needs at least one awaitable: pass the calls to race, "
                "e.g. durable.wait_first(durable.wait_signal('approve'), durable.sleep(3600))"
            )
        entries: list[_Entry] = []
        seen: dict[int, int] = {}
        for index, awaitable in enumerate(awaitables):
            try:
                made = self._made.get(awaitable)
            except TypeError:  # cannot be weakly referenced: not one of ours
                made = None
            if made is None:
                raise TypeError(
                    f"durable.wait_first(): argument {index} ({awaitable!r}) is not the "
                    "awaitable of an activity call, a child-workflow call, durable.sleep() or "
                    "durable.wait_signal() made by this run; pass those calls themselves, e.g. "
                    "durable.wait_first(charge(order), durable.sleep(60))"
                )
            if id(awaitable) in seen:
                raise ValueError(
                    f"durable.wait_first(): arguments {seen[id(awaitable)]} and {index} are "
                    "the same awaitable; each step can be raced once"
                )
            seen[id(awaitable)] = index
            if (
                not inspect.iscoroutine(awaitable)
                or inspect.getcoroutinestate(awaitable) != inspect.CORO_CREATED
            ):
                raise ValueError(
                    f"durable.wait_first(): argument {index} ({made.kind} step {made.seq}) was "
                    "already awaited (or given to another wait_first()); pass a step's "
                    "awaitable that nothing has awaited yet"
                )
            recorded = self._cursor.recorded(made.seq)
            entries.append(_Entry(index, awaitable, made, recorded))
        return entries

    async def _wait_first(
        self, seq: int, recorded: StepRecord | None, entries: list[_Entry], location: str | None
    ) -> tuple[int, Any]:
        started = self._clock.time()
        try:
            outcome, record = await self._decide(seq, recorded, entries, location)
            if record:
                payload = self._journal.payloads.dumps(
                    outcome.index, what=f"winner of wait_first (run {self._run.id!r}, step {seq})"
                )
                call = StepCall(seq, StepKind.FIRST, NAME, location, started)
                await self._journal.commit(
                    [self._journal.record(call, 1, result=payload)], RunUpdate(RunStatus.RUNNING)
                )
        finally:
            for entry in entries:
                self._close(entry)
        if outcome.error is not None:
            raise outcome.error
        return outcome.index, outcome.value

    async def _decide(
        self, seq: int, recorded: StepRecord | None, entries: list[_Entry], location: str | None
    ) -> tuple[_Outcome, bool]:
        """The winner, and whether its ``first`` step is to be recorded now."""
        for entry in entries:
            if entry.made.seq == self._cancel.at:  # it raises Cancelled: nothing to record
                return await self._settle(entries, entry.index), False
        if recorded is not None:
            return await self._settle(entries, self._recorded_winner(seq, recorded, entries)), False
        finished = self._finished_first(entries)
        if finished is not None:
            outcome = await self._settle(entries, finished)
            return outcome, not self._e.failure_recorded
        if self._e.failure_recorded:
            # The run failed while these steps raced, before a winner was recorded: wait to
            # be cancelled by the replayed failure, as the race was then.
            for entry in entries:
                self._close(entry)
            await self._e.activities.halt(seq, StepKind.FIRST, NAME, location)
        outcome = await self._race(entries)
        if self._e.fatal is not None:
            raise self._e.fatal
        at = self._cancel.at
        if at is not None and any(entry.made.seq == at for entry in entries):
            # One of the steps took the run's cancellation (a loser too, in the moment before
            # it was cancelled): the workflow is told, whoever won; replays raise it there.
            await self._e.gate.deliver_cancel(at)
        return outcome, True

    def _recorded_winner(self, seq: int, recorded: StepRecord, entries: list[_Entry]) -> int:
        index = self._journal.replayed(recorded)
        if not isinstance(index, int) or not 0 <= index < len(entries):
            self._e.fatal = self._cursor.nondeterminism(
                seq,
                f"wait_first won by argument {index!r}",
                recorded.location,
                f"wait_first of {len(entries)} awaitables",
                None,
            )
            raise self._e.fatal
        return index

    def _finished_first(self, entries: list[_Entry]) -> int | None:
        """The entry the history shows finished earliest (a timer at its due time, once it
        is due), or ``None`` when none has."""
        now = self._clock.time()
        best: tuple[float, int] | None = None
        for entry in entries:
            step = entry.recorded
            if step is None:
                continue
            if entry.made.kind == StepKind.TIMER:
                due = float(self._journal.load(step.result, step.seq, "due time"))
                at: float | None = due if due <= now else None
            else:
                at = step.finished_at if step.status in _FINISHED else None
            if at is not None and (best is None or (at, entry.index) < best):
                best = (at, entry.index)
        return None if best is None else best[1]

    # -- a winner known before anything runs ------------------------------------------------

    async def _settle(self, entries: list[_Entry], winner: int) -> _Outcome:
        """Replay the losers as the history has them, then the winner (see the docstring)."""
        for entry in entries:
            if entry.index == winner:
                continue
            step, kind = entry.recorded, entry.made.kind
            finished = step is not None and step.status in _FINISHED
            if kind != StepKind.TIMER and finished:
                await self._swallow(entry)  # replayed: a completed activity pushes its undo
            elif (
                kind == StepKind.CHILD
                and step is not None
                and not self._e.failure_recorded
                and await self._ask_child_to_cancel(entry)
            ):
                await self._swallow(entry)  # resumes awaiting the child, until it ends
            else:
                self._close(entry)
        entry = entries[winner]
        entry.used = True
        try:
            return _Outcome(winner, await entry.awaitable)
        except Exception as exc:
            if self._e.fatal is not None:
                raise
            return _Outcome(winner, error=exc)

    async def _swallow(self, entry: _Entry) -> None:
        """Await a loser for its effects on the run; its value or error is not wanted."""
        entry.used = True
        try:
            await entry.awaitable
        except Exception:
            if self._e.fatal is not None:
                raise

    # -- the race --------------------------------------------------------------------------

    async def _race(self, entries: list[_Entry]) -> _Outcome:
        """Run every entry in a task of its own; the first to end wins, the others are wound
        down (see the module docstring)."""
        won: list[_Outcome] = []
        try:
            async with anyio.create_task_group() as tg:
                for entry in entries:
                    entry.scope = anyio.CancelScope()
                    tg.start_soon(self._branch, entry, entries, won, tg)
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        assert won, "a race of wait_first ended without a winner"
        return won[0]

    async def _branch(
        self,
        entry: _Entry,
        entries: list[_Entry],
        won: list[_Outcome],
        tg: anyio.abc.TaskGroup,
    ) -> None:
        assert entry.scope is not None
        try:
            if won:  # decided before this branch began: its step never starts
                self._close(entry)
                return
            entry.used = True
            with entry.scope:
                try:
                    outcome = _Outcome(entry.index, await entry.awaitable)
                except Exception as exc:
                    outcome = _Outcome(entry.index, error=exc)
                if not won:
                    won.append(outcome)
                    for other in entries:
                        if other is entry or other.ended.is_set():
                            continue
                        if other.made.kind == StepKind.CHILD:
                            tg.start_soon(self._cancel_child, other)
                        elif other.scope is not None:
                            other.scope.cancel()
        finally:
            entry.ended.set()

    async def _cancel_child(self, entry: _Entry) -> None:
        """Ask the losing child run to cancel; its branch then waits for its outcome. The run
        may not exist yet (its step is about to create it): ask again until it does, or the
        branch is over."""
        while not entry.ended.is_set():
            try:
                if await self._ask_child_to_cancel(entry):
                    return
            except Exception:  # the store failed to answer: ask again
                pass
            with anyio.move_on_after(0.05):
                await entry.ended.wait()

    async def _ask_child_to_cancel(self, entry: _Entry) -> bool:
        """Request the cancellation of ``entry``'s child run; whether the run exists."""
        child_id = entry.made.child_id
        assert child_id is not None
        found = await self._e.store.request_cancel(child_id, now=self._clock.time())
        return found is not None

    def _close(self, entry: _Entry) -> None:
        """A loser that is never to run: close it, and stop counting its step in flight."""
        if not entry.used:
            entry.used = True
            close_all((entry.awaitable,), self._flight.drop)


def close_all(awaitables: Sequence[Awaitable[Any]], drop: Any = None) -> None:
    """Close the coroutines among ``awaitables`` that never started (so none of them runs, and
    none warns that it was never awaited); ``drop`` is told of each one closed."""
    for awaitable in awaitables:
        if inspect.iscoroutine(awaitable) and (
            inspect.getcoroutinestate(awaitable) == inspect.CORO_CREATED
        ):
            awaitable.close()
            if drop is not None:
                drop(awaitable)
