"""Reading what a run publishes, from any process that reaches its store: its events
(`WorkflowHandle.get_event`, `WorkflowHandle.events`) and its streams (`WorkflowHandle.stream`).

Readers wait on the store's notifications (`Store.wait_published`: a publication or the run's
outcome wakes them, in other processes too where the store can tell), reading again at least
every `FALLBACK_SECONDS`.

A stream is read in one of two ways, chosen when the reader starts:

* the run is still going: *live*. Every entry comes in the order written, the values of an
  activity attempt that later fails included; when the reader reaches the withdrawal of values
  it received, it yields a `StreamRetry` marker naming them (discard them).
* the run has finished: *settled*. Withdrawn values and markers are skipped, so the reader gets
  each value of the successful attempts once, in order.

Either way the reader stops at the stream's close, or when it has read everything the run wrote
and the run has finished.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from durable._codec import Payloads
from durable._errors import EventTimeout, WorkflowNotFound
from durable._recording import payloads_of
from durable._types import RunStatus
from durable.store import EntryKind, RunRecord, Store, StreamEntry

__all__ = ["FALLBACK_SECONDS", "StreamRetry", "get_event", "read_events", "read_stream"]

FALLBACK_SECONDS = 1.0
"""Readers read again at least this often when no notification came (a store that cannot tell
another process's writes)."""

BATCH = 500
"""Stream entries read per query."""

Waiter = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
"""How a reader awaits: directly, or while a test environment moves its virtual clock."""


@dataclass(frozen=True, slots=True)
class StreamRetry:
    """A stream reader's marker: an activity attempt that wrote values this reader yielded
    failed (or was cut off, or the run was retried from before it), and those values are
    withdrawn: discard them. The next attempt writes its own values after this marker.

    Attributes:
        key: the stream.
        step: the step whose attempt is withdrawn.
        attempt: the attempt, or ``None`` for the workflow's own write (a retry of the run).
        positions: the stream positions of the withdrawn values this reader received.
    """

    key: str
    step: int
    attempt: int | None
    positions: tuple[int, ...]

    @property
    def count(self) -> int:
        """How many received values to discard."""
        return len(self.positions)


async def _run(store: Store, run_id: str) -> RunRecord:
    run = await store.get_run(run_id)
    if run is None:
        raise WorkflowNotFound(run_id)
    return run


async def read_events(store: Store, run_id: str) -> dict[str, Any]:
    """Every event of the run, each key's latest value (see `WorkflowHandle.events`)."""
    run = await _run(store, run_id)
    payloads = payloads_of(store, run.workflow)
    found = await store.read_events(run_id)
    return {
        key: payloads.loads(value, run_id=run_id, seq=None, what=f"event {key!r}")
        for key, value in sorted(found.items())
    }


async def get_event(
    store: Store, run_id: str, key: str, timeout: float | None, waiter: Waiter
) -> Any:
    """The event's latest value, waiting until one is set (see `WorkflowHandle.get_event`)."""
    if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
        raise ValueError(f"timeout must be a finite number of seconds >= 0, not {timeout!r}")

    async def wait() -> Any:
        with anyio.move_on_after(timeout):
            while True:
                run = await _run(store, run_id)  # before the events: a finished run set all
                found = await store.read_events(run_id)
                if key in found:
                    payloads = payloads_of(store, run.workflow)
                    return payloads.loads(
                        found[key], run_id=run_id, seq=None, what=f"event {key!r}"
                    )
                if run.status.finished:
                    raise EventTimeout(run_id, key, timeout, finished=True)
                await store.wait_published(run_id, within=FALLBACK_SECONDS)
        raise EventTimeout(run_id, key, timeout)

    return await waiter(wait)


async def read_stream(
    store: Store, run_id: str, key: str, after: int, waiter: Waiter
) -> AsyncIterator[Any]:
    """The values of the run's stream ``key`` after position ``after``, with `StreamRetry`
    markers (see the module docstring and `WorkflowHandle.stream`)."""
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ValueError(f"after must be a stream position (an int >= 0), not {after!r}")
    run = await _run(store, run_id)
    payloads = payloads_of(store, run.workflow)
    live = not RunStatus(run.status).finished
    position = after
    if after > 0:  # resuming right after the close: nothing more will come
        last = await store.read_stream(run_id, key, after=after - 1, limit=1)
        if last and last[0].kind == EntryKind.CLOSE and not last[0].withdrawn:
            return
    received: dict[tuple[int, int, int | None], list[int]] = {}
    while True:
        finished = (await _run(store, run_id)).status.finished  # read before the entries
        entries = await store.read_stream(run_id, key, after=position, limit=BATCH)
        for entry in entries:
            position = entry.position
            if entry.kind == EntryKind.CLOSE:
                if not entry.withdrawn:
                    return
                continue
            origin = (entry.generation, entry.seq, entry.attempt)
            if entry.kind == EntryKind.RETRY:
                withdrawn = received.pop(origin, None)
                if withdrawn:
                    yield StreamRetry(key, entry.seq, entry.attempt, tuple(withdrawn))
                continue
            if entry.withdrawn and not live:
                continue
            received.setdefault(origin, []).append(entry.position)
            yield _value(payloads, entry)
        if len(entries) == BATCH:
            continue
        if finished:
            return
        await waiter(lambda: store.wait_published(run_id, within=FALLBACK_SECONDS))


def _value(payloads: Payloads, entry: StreamEntry) -> Any:
    what = f"stream {entry.key!r} value at position {entry.position}"
    return payloads.loads(entry.value or b"", run_id=entry.run_id, seq=entry.seq, what=what)
