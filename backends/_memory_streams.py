"""`MemoryStore`'s events and streams: publishing (fenced, with the workflow's step), withdrawing
a failed attempt's stream entries, and reading them. The rules are `._rules`' events and
streams section, which the SQL statements spell too."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from durable.store import (
    EntryKind,
    EventWrite,
    Lease,
    StepRecord,
    StreamEntry,
    StreamWrite,
)

from . import _rules as rules
from ._memory_tables import Tables

__all__ = ["Publications"]


class Publications:
    """The events and streams of one `MemoryStore`'s runs (see the `MemoryStore` methods of
    the same names)."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def publish(
        self, lease: Lease, write: EventWrite | StreamWrite, steps: Sequence[StepRecord], now: float
    ) -> int:
        rules.check_step_batch(lease.run_id, steps)
        with self._t.lock:
            self._t.check_open()
            self._t.fenced(lease)
            recorded = self._t.steps.setdefault(lease.run_id, {})
            rules.check_new_steps(lease.run_id, recorded, steps)
            for step in steps:
                recorded[step.seq] = step
            position = 0
            if isinstance(write, EventWrite):
                self._t.events.setdefault(lease.run_id, {})[write.key] = write.value
            else:
                position = self._append(lease.run_id, write, now)
        self._t.doorbell.ring(rules.published_bell(lease.run_id))
        return position

    def _append(self, run_id: str, write: StreamWrite, now: float) -> int:
        entries = self._t.streams.setdefault(run_id, {}).setdefault(write.key, [])
        kinds: list[tuple[EntryKind, bytes | None]] = [(EntryKind.VALUE, v) for v in write.values]
        if write.close:
            kinds.append((EntryKind.CLOSE, None))
        for kind, value in kinds:
            entries.append(
                StreamEntry(
                    run_id=run_id,
                    key=write.key,
                    position=len(entries) + 1,
                    kind=kind,
                    value=value,
                    generation=write.generation,
                    seq=write.seq,
                    attempt=write.attempt,
                    withdrawn=False,
                    written_at=now,
                )
            )
        return len(entries)

    def withdraw(self, lease: Lease, generation: int, seq: int, below: int, now: float) -> int:
        with self._t.lock:
            self._t.check_open()
            self._t.fenced(lease)
            count = self.withdraw_steps(lease.run_id, generation, [seq], below, now)
        if count:
            self._t.doorbell.ring(rules.published_bell(lease.run_id))
        return count

    def withdraw_steps(
        self, run_id: str, generation: int, seqs: Collection[int], below: int, now: float
    ) -> int:
        """Withdraw what steps ``seqs`` wrote (attempts below ``below``); call under the lock."""
        count = 0
        for key, entries in self._t.streams.get(run_id, {}).items():
            gone = [
                e
                for e in entries
                if e.seq in seqs and rules.withdrawable(e, generation, e.seq, below)
            ]
            for entry in gone:
                entries[entry.position - 1] = replace(entry, withdrawn=True)
            for _, gen, step, attempt in rules.markers(gone):
                entries.append(
                    StreamEntry(
                        run_id=run_id,
                        key=key,
                        position=len(entries) + 1,
                        kind=EntryKind.RETRY,
                        value=None,
                        generation=gen,
                        seq=step,
                        attempt=attempt,
                        withdrawn=False,
                        written_at=now,
                    )
                )
            count += len(gone)
        return count

    def read_events(self, run_id: str) -> dict[str, bytes]:
        with self._t.lock:
            self._t.check_open()
            return dict(self._t.events.get(run_id, {}))

    def read_stream(self, run_id: str, key: str, after: int, limit: int) -> list[StreamEntry]:
        with self._t.lock:
            self._t.check_open()
            entries = self._t.streams.get(run_id, {}).get(key, [])
            start = max(after, 0)
            return entries[start : start + max(limit, 0)]
