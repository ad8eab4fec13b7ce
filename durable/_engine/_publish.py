"""`Publisher`: what a run shows while it runs: its events (`durable.set_event`) and streams
(`durable.stream_write` / `stream_close`).

From workflow code each is a step, recorded in the same fenced transaction that publishes it
(`Store.publish`), so a replay finds the step and publishes nothing again. From an activity a
stream write is published at once, tagged with the attempt; an attempt that fails (or is cut off
by a crash, or cancelled) has its writes withdrawn (`Store.withdraw`) before the step goes on, so
the values of the successful attempts are the stream's, each once.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import anyio

from durable._errors import LeaseLost, StoreError, StreamClosed
from durable._types import Info, StepKind, StepStatus
from durable.store import EventWrite, StepRecord, StreamWrite

from ._in_flight import Ticket
from ._journal import StepCall
from ._part import Part

if TYPE_CHECKING:
    from . import Engine

__all__ = ["Publisher"]


class Publisher(Part):
    """The events and streams of one run (see the module docstring).

    Attributes:
        closed: the streams the workflow closed (in this generation's history).
        written: the activity attempts ``(seq, attempt)`` that wrote to a stream here.
    """

    def __init__(self, engine: Engine) -> None:
        """The publications of ``engine``'s run."""
        super().__init__(engine)
        self._store = engine.store
        self.closed: set[str] = set()
        self.written: set[tuple[int, int]] = set()

    # -- workflow code ---------------------------------------------------------------------

    def set_event(self, key: str, value: Any, location: str | None) -> Awaitable[None]:
        """Number the step now; the awaitable records it and sets the event, once."""
        return self._step(StepKind.EVENT, key, value, location)

    def stream_write(self, key: str, value: Any, location: str | None) -> Awaitable[None]:
        """Number the step now; the awaitable records it and appends ``value``, once."""
        if key in self.closed:
            raise StreamClosed(self._run.id, key)
        return self._step(StepKind.STREAM, key, value, location)

    def stream_close(self, key: str, location: str | None) -> Awaitable[None]:
        """Number the step now; the awaitable records it and closes the stream, once."""
        step = self._step(StepKind.STREAM_CLOSE, key, None, location)
        self.closed.add(key)
        return step

    def _step(self, kind: StepKind, key: str, value: Any, location: str | None) -> Awaitable[None]:
        seq, recorded = self._e.gate.step(kind, key, location)
        if recorded is not None and recorded.status != StepStatus.STARTED:
            self.replayed(recorded)
            return _done()  # published when it was recorded: a replay publishes nothing
        if self._e.failure_recorded:
            return self._e.activities.halt(seq, kind, key, location)
        what = f"value of {kind} {key!r} (run {self._run.id!r}, step {seq})"
        payload = self._journal.payloads.dumps(value, what=what)
        call = StepCall(seq, kind, key, location, self._clock.time())
        record = self._journal.record(call, 1, result=payload)
        if kind == StepKind.EVENT:
            write: EventWrite | StreamWrite = EventWrite(key, payload)
        else:
            values = (payload,) if kind == StepKind.STREAM else ()
            close = kind == StepKind.STREAM_CLOSE
            write = StreamWrite(key, values, close, self._run.generation, seq)
        ticket = self._flight.ticket()  # until the step is recorded (or fails, or is dropped)
        body = self._publish(ticket, write, record)
        ticket.watch(body)
        return body

    async def _publish(
        self, ticket: Ticket, write: EventWrite | StreamWrite, record: StepRecord
    ) -> None:
        try:
            await self._journal.publish(write, record)
        finally:
            ticket.close()

    def replayed(self, step: StepRecord) -> None:
        """Note what a recorded step tells (a closed stream) as the replay passes it."""
        if step.kind == StepKind.STREAM_CLOSE:
            self.closed.add(step.name)

    # -- activities ------------------------------------------------------------------------

    async def write_from_activity(self, info: Info, key: str, value: Any) -> None:
        """Append ``value`` to stream ``key`` from the activity attempt ``info``: published at
        once, withdrawn if the attempt fails."""
        if key in self.closed:
            raise StreamClosed(self._run.id, key)
        what = f"stream {key!r} value of step {info.step} (run {self._run.id!r})"
        payload = self._journal.payloads.dumps(value, what=what)
        # Noted before the write: a write whose outcome is unknown is withdrawn too.
        self.written.add((info.step, info.attempt))
        write = StreamWrite(key, (payload,), False, info.generation, info.step, info.attempt)
        await self._journal.publish(write, None)

    async def withdraw(self, seq: int, below: int, *, known: bool = False) -> None:
        """Withdraw the stream writes of step ``seq``'s attempts below ``below``: those this
        process saw (``known``) or, when attempts were cut off by a crash, whatever they may
        have written. Shielded: a cancelled attempt is withdrawn too."""
        if known and not any(s == seq and a < below for s, a in self.written):
            return
        with anyio.CancelScope(shield=True):
            await self._journal.withdraw(self._run.generation, seq, below)
        self.written = {(s, a) for s, a in self.written if s != seq or a >= below}

    async def withdraw_quietly(self, seq: int, below: int) -> None:
        """`withdraw` the writes this process saw, on the way out of a step that did not
        finish (cancelled, or the run stopped): a lost lease or a failed store leaves them to
        the executor that resumes the step."""
        try:
            await self.withdraw(seq, below, known=True)
        except (LeaseLost, StoreError):
            pass


async def _done() -> None:
    return None
