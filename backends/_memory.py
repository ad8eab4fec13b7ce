"""`MemoryStore`: the store protocol on plain dicts, for unit tests and throw-away runs.

It has exactly the semantics of `SQLStore` (leases, fencing, atomic acquire, all-or-nothing
commit) but keeps nothing after the process ends: it is a dict, a lock and the pure rules of
`._rules`, which the SQL statements spell too. Every method does its work without awaiting,
so it is atomic within one event loop, and under a `threading.Lock`, so it is also safe to share
with worker threads. Records are frozen dataclasses, so handing them out is safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Self

from durable.store import (
    Interruption,
    Lease,
    LeaseOwner,
    PayloadTrust,
    RunRecord,
    RunStatus,
    RunUpdate,
    StepRecord,
    StoreError,
    due_at,
)

from . import _rules as rules
from ._doorbell import Doorbell

__all__ = ["MemoryStore"]


class MemoryStore:
    """An in-memory `durable.store.Store`: fast, isolated, and gone when the process exits.

    Args:
        secret_keys: sign every payload written with the first key, and refuse payloads that
            no key verifies (see README "Security"); default: ``DURABLE_SECRET_KEY``.
        allowed_codecs: the codec names whose payloads may be written and read, e.g.
            ``["json"]``; default: ``DURABLE_ALLOWED_CODECS``, else every codec.

    Example:
        >>> store = MemoryStore()
    """

    def __init__(
        self,
        *,
        secret_keys: str | bytes | Iterable[str | bytes] | None = None,
        allowed_codecs: Iterable[str] | None = None,
    ) -> None:
        """Create an empty store."""
        self.payload_trust = PayloadTrust.configure(
            secret_keys, allowed_codecs, owner="MemoryStore"
        )
        self._lock = threading.Lock()
        self._runs: dict[str, RunRecord] = {}
        self._steps: dict[str, dict[int, StepRecord]] = {}
        self._signals: dict[str, list[tuple[str, bytes]]] = {}
        self._signal_keys: dict[str, set[str]] = {}  # idempotency keys of signals, by run
        self._closed = False
        self._doorbell = Doorbell()

    def __repr__(self) -> str:
        return f"MemoryStore(runs={len(self._runs)})"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("this MemoryStore is closed; create a new one")

    async def create_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        """Insert ``run`` unless a run with its id exists.

        Returns:
            ``(stored, created)``: the record now in the store, and whether this call created it.
        """
        with self._lock:
            self._check_open()
            existing = self._runs.get(run.id)
            if existing is not None:
                return existing, False
            self._runs[run.id] = run
        self._doorbell.ring(run.id)
        return run, True

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or ``None``."""
        with self._lock:
            self._check_open()
            return self._runs.get(run_id)

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """Runs, optionally only those with ``status``, oldest first (by ``created_at``, id).

        Returns:
            At most ``limit`` runs.
        """
        with self._lock:
            self._check_open()
            if limit <= 0:
                return []
            runs = [r for r in self._runs.values() if status is None or r.status == status]
        runs.sort(key=lambda r: (r.created_at, r.id))
        return runs[:limit]

    async def acquire_lease(
        self,
        run_id: str,
        owner: LeaseOwner,
        *,
        now: float,
        duration: float,
        takeover_token: int | None = None,
    ) -> Lease | None:
        """Atomically take the lease on an unfinished run (see `durable.store.Store`).

        Returns:
            The new lease, or ``None`` when the run is missing, finished, or leased to someone
            else.
        """
        with self._lock:
            self._check_open()
            run = self._runs.get(run_id)
            if run is None:
                return None
            acquired = rules.acquire(
                run, owner, now=now, duration=duration, takeover_token=takeover_token
            )
            if acquired is None:
                return None
            self._runs[run_id], lease = acquired
            return lease

    async def claim(
        self,
        owner: LeaseOwner,
        *,
        now: float,
        duration: float,
        limit: int,
        workflows: Sequence[str],
    ) -> list[tuple[RunRecord, Lease]]:
        """Atomically lease up to ``limit`` runnable runs of ``workflows`` (see
        `durable.store.Store.claim`).

        Returns:
            The claimed runs (as before the claim) with their new leases.
        """
        names = set(workflows)
        with self._lock:
            self._check_open()
            candidates = [
                r for r in self._runs.values() if r.workflow in names and rules.runnable(r, now)
            ]
        candidates.sort(key=rules.claim_order)
        claimed = []
        for run in candidates[: max(limit, 0)]:
            lease = await self.acquire_lease(
                run.id, owner, now=now, duration=duration, takeover_token=run.lease_token
            )
            if lease is not None:
                claimed.append((run, lease))
        return claimed

    def _fenced(self, lease: Lease) -> RunRecord:
        return rules.fenced(self._runs.get(lease.run_id), lease)

    async def renew_lease(self, lease: Lease, *, now: float, duration: float) -> Lease:
        """Extend the lease to ``now + duration`` (``updated_at`` is left alone).

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``.
        """
        expires = now + duration
        with self._lock:
            self._check_open()
            run = self._fenced(lease)
            self._runs[lease.run_id] = rules.renewed(run, expires)
        return replace(lease, expires_at=expires)

    async def release_lease(self, lease: Lease) -> None:
        """Clear owner / host / pid / expiry if the lease is still ours; otherwise do nothing."""
        with self._lock:
            self._check_open()
            run = self._runs.get(lease.run_id)
            if run is not None and run.lease_token == lease.token:
                self._runs[lease.run_id] = rules.released(run)
        self._doorbell.ring(lease.run_id)

    async def load_steps(self, run_id: str) -> list[StepRecord]:
        """Every recorded step of the run, ordered by ``seq``."""
        with self._lock:
            self._check_open()
            steps = self._steps.get(run_id, {})
            return [steps[seq] for seq in sorted(steps)]

    async def commit(
        self,
        lease: Lease,
        steps: Sequence[StepRecord] = (),
        update: RunUpdate | None = None,
        *,
        now: float,
        outcomes: Sequence[StepRecord] = (),
        check_requests: bool = False,
        relaxed: bool = False,
    ) -> Interruption | None:
        """Insert ``steps``, replace ``outcomes`` and apply ``update`` in one step, or change
        nothing (see `durable.store.Store.commit`, also for ``check_requests``; ``relaxed``
        changes nothing in memory).

        With an ``update``, ``updated_at`` becomes ``now``; a ``None`` ``result`` / ``error`` /
        ``cancelled_seq`` keeps the stored value; ``error_text`` is always replaced.

        Returns:
            ``None``, or the `Interruption` that stopped a ``check_requests`` commit.

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``; nothing was written.
            StoreError: a step is already recorded, repeats a ``seq`` in the batch, belongs to
                another run, or an outcome has no ``started`` step to replace; nothing was
                written.
        """
        rules.check_step_batch(lease.run_id, [*steps, *outcomes])
        with self._lock:
            self._check_open()
            run = self._fenced(lease)
            if check_requests:
                stopped = rules.interruption(run)
                if stopped is not None:
                    return stopped
            recorded = self._steps.setdefault(lease.run_id, {})
            rules.check_new_steps(lease.run_id, recorded, steps)
            rules.check_outcomes(lease.run_id, recorded, outcomes)
            for step in [*outcomes, *steps]:
                recorded[step.seq] = step
            if update is not None:
                self._runs[lease.run_id] = rules.updated(run, update, now)
        if update is not None and update.release:
            self._doorbell.ring(lease.run_id)
        return None

    def _change(
        self, run_id: str, now: float, change: Callable[[RunRecord, float], RunRecord]
    ) -> RunRecord | None:
        """Apply the rule ``change`` to the run (if there is one); return the run as it is now."""
        with self._lock:
            self._check_open()
            run = self._runs.get(run_id)
            if run is not None:
                run = self._runs[run_id] = change(run, now)
        self._doorbell.ring(run_id)
        return run

    async def request_cancel(self, run_id: str, *, now: float) -> RunRecord | None:
        """Set ``cancel_requested`` on an unfinished run; a parked one becomes due now.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        return self._change(run_id, now, rules.request_cancel)

    async def request_pause(self, run_id: str, *, now: float) -> RunRecord | None:
        """Set ``pause_requested``; a run nobody executes is ``paused`` at once.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        return self._change(run_id, now, rules.request_pause)

    async def resume(self, run_id: str, *, now: float) -> RunRecord | None:
        """Clear ``pause_requested``; a ``paused`` run becomes ``pending``.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        return self._change(run_id, now, rules.resume)

    async def request_rollback(self, run_id: str, *, now: float) -> RunRecord | None:
        """Turn a ``completed`` run into a ``compensating`` one with ``rollback_requested``.

        Returns:
            The run as it is now, or ``None`` when missing.
        """
        return self._change(run_id, now, rules.request_rollback)

    async def send_signal(
        self,
        run_id: str,
        name: str,
        payload: bytes,
        *,
        now: float,
        idempotency_key: str | None = None,
    ) -> RunRecord | None:
        """Buffer signal ``name`` for an unfinished run (once per ``idempotency_key``).

        Returns:
            The run (nothing recorded when it is finished), or ``None`` when missing.
        """
        with self._lock:
            self._check_open()
            run = self._runs.get(run_id)
            if run is not None and rules.signal_accepted(run):
                if idempotency_key is not None:
                    keys = self._signal_keys.setdefault(run_id, set())
                    if idempotency_key in keys:
                        return run
                    keys.add(idempotency_key)
                self._signals.setdefault(run_id, []).append((name, payload))
                run = self._runs[run_id] = rules.on_signal(run, now)
        self._doorbell.ring(run_id)
        return run

    async def wake(self, run_id: str, *, now: float) -> None:
        """Make a parked run due now (see `durable.store.Store.wake`)."""
        with self._lock:
            self._check_open()
            run = self._runs.get(run_id)
            if run is not None:
                self._runs[run_id] = rules.woken(run, now)
        self._doorbell.ring(run_id)

    async def receive_signal(
        self, lease: Lease, name: str, step: StepRecord, *, now: float
    ) -> bytes | None:
        """Consume the oldest buffered signal ``name`` and record ``step`` with its payload.

        Returns:
            The payload, or ``None`` when no such signal is buffered (nothing is written).

        Raises:
            LeaseLost: the run's token is no longer ``lease.token``.
        """
        rules.check_step_batch(lease.run_id, [step])
        with self._lock:
            self._check_open()
            self._fenced(lease)
            buffered = self._signals.get(lease.run_id, [])
            index = next((i for i, (n, _) in enumerate(buffered) if n == name), None)
            if index is None:
                return None
            recorded = self._steps.setdefault(lease.run_id, {})
            rules.check_unrecorded(lease.run_id, recorded.get(step.seq), step.seq)
            _, payload = buffered.pop(index)
            recorded[step.seq] = replace(step, result=payload)
            return payload

    async def wait_for_work(self, *, workflows: Sequence[str], now: float, within: float) -> None:
        """Return when a write in this process may have made a run runnable, when the next
        parked run or expiring lease of ``workflows`` is due, or after ``within`` seconds."""
        names = set(workflows)
        with self._lock:
            self._check_open()
            due = [due_at(run) for run in self._runs.values() if run.workflow in names]
        soonest = min((d for d in due if d is not None), default=None)
        if soonest is not None:
            within = min(within, soonest - now)
        await self._doorbell.wait(within)

    async def watch(self, run_ids: Collection[str], *, within: float) -> bool:
        """Wait for a write of this process to one of ``run_ids`` (see `Store.watch`)."""
        self._check_open()
        return await self._doorbell.watch(run_ids, within)

    def wake_waiters(self) -> None:
        """Wake this process's tasks in `wait_for_work` (a test moved its clock)."""
        self._doorbell.ring()

    async def block_unreadable(self, *, now: float, limit: int = 100) -> list[RunRecord]:
        """Nothing to do: records in memory always hold statuses this version knows."""
        self._check_open()
        return []

    async def leased_on(self, host: str, *, workflows: Sequence[str]) -> list[RunRecord]:
        """Unfinished runs of ``workflows`` leased by an executor on ``host``."""
        names = set(workflows)
        with self._lock:
            self._check_open()
            return [run for run in self._runs.values() if rules.leased_on(run, host, names)]

    async def prune(self, *, before: float, limit: int) -> int:
        """Delete up to ``limit`` finished runs last updated before ``before`` and without
        an unfinished ancestor, with their steps and signals.

        Returns:
            How many runs were deleted.
        """
        with self._lock:
            self._check_open()
            old = rules.prunable(self._runs, before)[: max(limit, 0)]
            for run_id in old:
                del self._runs[run_id]
                self._steps.pop(run_id, None)
                self._signals.pop(run_id, None)
                self._signal_keys.pop(run_id, None)
            return len(old)

    async def close(self) -> None:
        """Make the store unusable (its data is dropped). Idempotent."""
        with self._lock:
            self._closed = True
            self._runs.clear()
            self._steps.clear()

    async def __aenter__(self) -> Self:
        """Return the store itself."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        await self.close()
