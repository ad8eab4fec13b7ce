"""`MemoryStore`'s leases: acquiring, choosing runs to claim, renewing and releasing them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from durable.store import Lease, LeaseOwner, RunRecord

from . import _rules as rules
from ._memory_tables import Tables

__all__ = ["Leases"]


class Leases:
    """The leases on one store's runs (see the `MemoryStore` methods of the same names)."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def acquire(
        self,
        run_id: str,
        owner: LeaseOwner,
        now: float,
        duration: float,
        takeover_token: int | None,
    ) -> Lease | None:
        with self._t.lock:
            self._t.check_open()
            run = self._t.runs.get(run_id)
            if run is None:
                return None
            acquired = rules.acquire(
                run, owner, now=now, duration=duration, takeover_token=takeover_token
            )
            if acquired is None:
                return None
            self._t.runs[run_id], lease = acquired
            return lease

    def claimable(self, now: float, limit: int, workflows: Sequence[str]) -> list[RunRecord]:
        """Up to ``limit`` runnable runs of ``workflows``, in the order they are claimed."""
        names = set(workflows)
        with self._t.lock:
            self._t.check_open()
            candidates = [
                r for r in self._t.runs.values() if r.workflow in names and rules.runnable(r, now)
            ]
        candidates.sort(key=rules.claim_order)
        return candidates[: max(limit, 0)]

    def renew(self, lease: Lease, now: float, duration: float) -> Lease:
        expires = now + duration
        with self._t.lock:
            self._t.check_open()
            run = self._t.fenced(lease)
            self._t.runs[lease.run_id] = rules.renewed(run, expires)
        return replace(lease, expires_at=expires)

    def release(self, lease: Lease) -> None:
        with self._t.lock:
            self._t.check_open()
            run = self._t.runs.get(lease.run_id)
            if run is not None and run.lease_token == lease.token:
                self._t.runs[lease.run_id] = rules.released(run)
        self._t.doorbell.ring(lease.run_id)

    def leased_on(self, host: str, workflows: Sequence[str]) -> list[RunRecord]:
        names = set(workflows)
        with self._t.lock:
            self._t.check_open()
            return [run for run in self._t.runs.values() if rules.leased_on(run, host, names)]
