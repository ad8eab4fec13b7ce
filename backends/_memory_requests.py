"""`MemoryStore`'s requests and signals: cancel, pause, resume and rollback requests,
buffering a signal for a run and consuming it in a fenced step, and waking a parked run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from durable.store import Lease, RunRecord, StepRecord

from . import _rules as rules
from ._memory_tables import Tables

__all__ = ["Requests"]


class Requests:
    """Requests to one store's runs, their signals and wake-ups (see the `MemoryStore`
    methods of the same names)."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def change(
        self, run_id: str, now: float, change: Callable[[RunRecord, float], RunRecord]
    ) -> RunRecord | None:
        """Apply the rule ``change`` to the run (if there is one); return the run as it is now."""
        with self._t.lock:
            self._t.check_open()
            run = self._t.runs.get(run_id)
            if run is not None:
                run = self._t.runs[run_id] = change(run, now)
        self._t.doorbell.ring(run_id)
        return run

    def send_signal(
        self, run_id: str, name: str, payload: bytes, now: float, idempotency_key: str | None
    ) -> RunRecord | None:
        with self._t.lock:
            self._t.check_open()
            run = self._t.runs.get(run_id)
            if run is not None and rules.signal_accepted(run):
                if idempotency_key is not None:
                    keys = self._t.signal_keys.setdefault(run_id, set())
                    if idempotency_key in keys:
                        return run
                    keys.add(idempotency_key)
                self._t.signals.setdefault(run_id, []).append((name, payload))
                run = self._t.runs[run_id] = rules.on_signal(run, now)
        self._t.doorbell.ring(run_id)
        return run

    def wake(self, run_id: str, now: float) -> None:
        with self._t.lock:
            self._t.check_open()
            run = self._t.runs.get(run_id)
            if run is not None:
                self._t.runs[run_id] = rules.woken(run, now)
        self._t.doorbell.ring(run_id)

    def receive_signal(self, lease: Lease, name: str, step: StepRecord) -> bytes | None:
        rules.check_step_batch(lease.run_id, [step])
        with self._t.lock:
            self._t.check_open()
            run = self._t.fenced(lease)
            self._t.runs[lease.run_id] = rules.signal_taken(run)  # the executor looks itself
            buffered = self._t.signals.get(lease.run_id, [])
            index = next((i for i, (n, _) in enumerate(buffered) if n == name), None)
            if index is None:
                return None
            recorded = self._t.steps.setdefault(lease.run_id, {})
            rules.check_unrecorded(lease.run_id, recorded.get(step.seq), step.seq)
            _, payload = buffered.pop(index)
            recorded[step.seq] = replace(step, result=payload)
            return payload
