"""`MemoryStore`'s records: the dicts it keeps under one lock, and the writes that change
several of them at once (a commit's steps and run, a prune's runs, steps and signals)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from durable.store import (
    Interruption,
    Lease,
    QueueSettings,
    RunRecord,
    RunUpdate,
    StepRecord,
    StoreError,
    StreamEntry,
)

from . import _rules as rules
from ._doorbell import Doorbell

__all__ = ["Tables"]


@dataclass(eq=False)
class Tables:
    """Everything one `MemoryStore` holds; the store and its helpers share it. Every method
    does its work under ``lock`` without awaiting."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    runs: dict[str, RunRecord] = field(default_factory=dict)
    steps: dict[str, dict[int, StepRecord]] = field(default_factory=dict)
    signals: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    signal_keys: dict[str, set[str]] = field(default_factory=dict)  # of signals, by run
    queues: dict[str, QueueSettings] = field(default_factory=dict)  # by name
    events: dict[str, dict[str, bytes]] = field(default_factory=dict)  # by run, then key
    streams: dict[str, dict[str, list[StreamEntry]]] = field(default_factory=dict)  # run, key
    doorbell: Doorbell = field(default_factory=Doorbell)
    closed: bool = False

    def check_open(self) -> None:
        if self.closed:
            raise StoreError("this MemoryStore is closed; create a new one")

    def fenced(self, lease: Lease) -> RunRecord:
        """The lease's run, if the lease is still its current one (call under ``lock``)."""
        return rules.fenced(self.runs.get(lease.run_id), lease)

    def commit(
        self,
        lease: Lease,
        steps: Sequence[StepRecord],
        update: RunUpdate | None,
        now: float,
        outcomes: Sequence[StepRecord],
        check_requests: bool,
    ) -> Interruption | None:
        """`MemoryStore.commit`: all of it, or nothing."""
        rules.check_step_batch(lease.run_id, [*steps, *outcomes])
        with self.lock:
            self.check_open()
            run = self.fenced(lease)
            if check_requests:
                stopped = rules.interruption(run)
                if stopped is not None:
                    return stopped
            recorded = self.steps.setdefault(lease.run_id, {})
            rules.check_new_steps(lease.run_id, recorded, steps)
            rules.check_outcomes(lease.run_id, recorded, outcomes)
            for step in [*outcomes, *steps]:
                recorded[step.seq] = step
            if update is not None:
                self.runs[lease.run_id] = rules.updated(run, update, now)
        if update is not None and update.release:
            self.doorbell.ring(lease.run_id)
        return None

    def prune(self, before: float, limit: int) -> int:
        """`MemoryStore.prune`: how many runs were deleted, with their steps, signals, events
        and streams."""
        with self.lock:
            self.check_open()
            old = rules.prunable(self.runs, before)[: max(limit, 0)]
            for run_id in old:
                self._drop(run_id)
            return len(old)

    def delete(self, run_id: str) -> bool | None:
        """`MemoryStore.delete_run`."""
        with self.lock:
            self.check_open()
            if run_id not in self.runs:
                return None
            if not rules.deletable(self.runs, run_id):
                return False
            self._drop(run_id)
            return True

    def _drop(self, run_id: str) -> None:
        del self.runs[run_id]
        self.steps.pop(run_id, None)
        self.signals.pop(run_id, None)
        self.signal_keys.pop(run_id, None)
        self.events.pop(run_id, None)
        self.streams.pop(run_id, None)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.runs.clear()
            self.steps.clear()
            self.events.clear()
            self.streams.clear()
