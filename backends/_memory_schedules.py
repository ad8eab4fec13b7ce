"""`MemoryStore`'s cron schedules: a dict of `ScheduleRecord` beside the store's runs, changed
under the same lock by the pure rules of `._rules` (the SQL store spells the same rules in
`._sql_schedules`)."""

from __future__ import annotations

from collections.abc import Sequence

from durable.store import RunRecord, ScheduleRecord

from . import _rules as rules
from ._memory_tables import Tables

__all__ = ["Schedules"]


class Schedules:
    """The schedules of one `MemoryStore`; every method works under the tables' lock without
    awaiting, and rings the doorbell after a write a waiting worker cares about."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables
        self._records: dict[str, ScheduleRecord] = {}

    def put(self, schedule: ScheduleRecord, now: float) -> ScheduleRecord:
        """`MemoryStore.put_schedule`."""
        with self._tables.lock:
            self._tables.check_open()
            stored = rules.schedule_put(self._records.get(schedule.name), schedule, now)
            self._records[schedule.name] = stored
        self._tables.doorbell.ring(rules.SCHEDULE_BELL)
        return stored

    def get(self, name: str) -> ScheduleRecord | None:
        """`MemoryStore.get_schedule`."""
        with self._tables.lock:
            self._tables.check_open()
            return self._records.get(name)

    def list(self) -> list[ScheduleRecord]:
        """`MemoryStore.list_schedules`: ordered by name."""
        with self._tables.lock:
            self._tables.check_open()
            return [self._records[name] for name in sorted(self._records)]

    def set_paused(
        self, name: str, paused: bool, now: float, next_tick: float | None
    ) -> ScheduleRecord | None:
        """`MemoryStore.set_schedule_paused`."""
        with self._tables.lock:
            self._tables.check_open()
            schedule = self._records.get(name)
            if schedule is None:
                return None
            schedule = rules.schedule_paused(schedule, paused, now, next_tick)
            self._records[name] = schedule
        if not paused:
            self._tables.doorbell.ring(rules.SCHEDULE_BELL)
        return schedule

    def delete(self, name: str) -> bool:
        """`MemoryStore.delete_schedule`."""
        with self._tables.lock:
            self._tables.check_open()
            return self._records.pop(name, None) is not None

    def fire(
        self,
        name: str,
        expected_tick: float,
        next_tick: float | None,
        last_tick: float | None,
        runs: Sequence[RunRecord],
        now: float,
    ) -> ScheduleRecord | None:
        """`MemoryStore.fire_schedule`: all of it (the runs and the schedule), or nothing."""
        with self._tables.lock:
            self._tables.check_open()
            schedule = self._records.get(name)
            if schedule is None or not rules.schedule_fires(schedule, expected_tick):
                return schedule
            for run in runs:
                self._tables.runs.setdefault(run.id, run)
            schedule = rules.schedule_fired(schedule, next_tick, last_tick, now)
            self._records[name] = schedule
        if runs:
            self._tables.doorbell.ring(rules.SCHEDULE_BELL)
        return schedule
