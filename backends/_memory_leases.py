"""`MemoryStore`'s leases: acquiring, choosing runs to claim, renewing and releasing them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from durable.store import Lease, LeaseOwner, QueueSettings, RunRecord, due_at

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
            if run.queue is not None and rules.lease_free(run, now, takeover_token):
                settings = self._settings(run.queue)
                load = rules.queue_load(settings, self._t.runs.values(), now)
                if not rules.admits(settings, load, run):
                    return None
            return self._acquire(run, owner, now, duration, takeover_token)

    def _acquire(
        self,
        run: RunRecord,
        owner: LeaseOwner,
        now: float,
        duration: float,
        takeover_token: int | None,
    ) -> Lease | None:
        acquired = rules.acquire(
            run, owner, now=now, duration=duration, takeover_token=takeover_token
        )
        if acquired is None:
            return None
        self._t.runs[run.id], lease = acquired
        return lease

    def _settings(self, queue: str) -> QueueSettings:
        return self._t.queues.get(queue) or QueueSettings(queue)

    def claim(
        self,
        owner: LeaseOwner,
        now: float,
        duration: float,
        limit: int,
        workflows: Sequence[str],
        queues: Collection[str] | None,
    ) -> list[tuple[RunRecord, Lease]]:
        """`MemoryStore.claim`: choose the runs as `durable.store.Store.claim` says and
        lease them, all under the lock."""
        names = set(workflows)
        claimed: list[tuple[RunRecord, Lease]] = []
        with self._t.lock:
            self._t.check_open()
            runnable = [
                r
                for r in self._t.runs.values()
                if rules.served(r, names, queues) and rules.runnable(r, now)
            ]
            batches = [sorted((r for r in runnable if r.queue is None), key=rules.claim_order)]
            for queue in sorted({r.queue for r in runnable if r.queue is not None}):
                settings = self._settings(queue)
                load = rules.queue_load(settings, self._t.runs.values(), now)
                admitted: list[RunRecord] = []
                for run in sorted((r for r in runnable if r.queue == queue), key=rules.queue_order):
                    if len(admitted) >= limit:
                        break
                    if rules.admits(settings, load, run):
                        admitted.append(run)
                        load = rules.with_admitted(load, run, now)
                batches.append(admitted)
            for run in rules.merge_claims(batches, max(limit, 0)):
                lease = self._acquire(run, owner, now, duration, run.lease_token)
                if lease is not None:
                    claimed.append((run, lease))
        return claimed

    def next_due(
        self, now: float, workflows: Sequence[str], queues: Collection[str] | None
    ) -> float | None:
        """`MemoryStore.next_due`."""
        names = set(workflows)
        with self._t.lock:
            self._t.check_open()
            runs = [r for r in self._t.runs.values() if rules.served(r, names, queues)]
            dues = [due_at(r) for r in runs if r.queue is None]
            for queue in sorted({r.queue for r in runs if r.queue is not None}):
                settings = self._settings(queue)
                load = rules.queue_load(settings, self._t.runs.values(), now)
                dues.append(rules.queue_due(settings, load, (r for r in runs if r.queue == queue)))
        return min((d for d in dues if d is not None), default=None)

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
