"""`SQLStore`'s cron schedules: the ``durable_schedules`` table, its statements, and the
transactions that store, pause and fire schedules.

Firing is the part that must hold across processes: one transaction updates the schedule row
only if its ``next_tick`` is still the tick the caller fired (a conditional ``UPDATE``, which
Postgres re-checks on the locked row and SQLite runs under ``BEGIN IMMEDIATE``), and only then
inserts the tick's runs (``ON CONFLICT DO NOTHING``: an id already taken is skipped). Of any
number of workers firing the same tick, exactly one moves the schedule on and records the runs;
the others change nothing. The rules spelled here are `._rules`' schedule section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy import Double
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect

from durable.store import RunRecord, ScheduleRecord

from . import _rules as rules
from ._doorbell import Doorbell
from ._schema import run_values, schedules_table, tables
from ._sql_calls import Calls, Runner, execute, fetch_all, fetch_one
from ._sqlite import SQLiteRunner
from ._statements import Compiled
from ._verify import NOT_APPLIED

__all__ = ["Schedules"]

SCHEDULE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ScheduleRecord))
"""ScheduleRecord field names in order; equal to the ``durable_schedules`` column names."""


class _Statements:
    """The schedule statements, compiled once for the store's dialect."""

    def __init__(self, dialect: Dialect) -> None:
        table, runs = schedules_table(), tables()[0]
        c, bp = table.c, sa.bindparam
        columns = [c[name] for name in SCHEDULE_FIELDS]
        by_name = c.name == bp("name")
        insert = sqlite_insert if dialect.name == "sqlite" else postgresql_insert

        def comp(statement: Any) -> Compiled:
            return Compiled(statement, dialect)

        self.get = comp(sa.select(*columns).where(by_name))
        self.get_locked = comp(sa.select(*columns).where(by_name).with_for_update())
        self.list = comp(sa.select(*columns).order_by(c.name))
        self.insert = comp(insert(table).on_conflict_do_nothing())
        self.replace = comp(
            table.update()
            .where(by_name)
            .values({name: bp(f"v_{name}") for name in SCHEDULE_FIELDS if name != "name"})
        )
        self.delete = comp(table.delete().where(by_name))
        # `_rules.schedule_fires` and `_rules.schedule_fired`: compare-and-set on next_tick.
        self.fire = comp(
            table.update()
            .where(by_name, c.paused == sa.false(), c.next_tick == bp("expected"))
            .values(
                next_tick=bp("next", type_=Double),
                last_tick=sa.func.coalesce(bp("last", type_=Double), c.last_tick),
                updated_at=bp("now"),
            )
        )
        self.insert_run = comp(insert(runs).on_conflict_do_nothing())
        # What another process's schedule write changes (SQLite tells only that it wrote).
        self.fingerprint = comp(sa.select(sa.func.count(), sa.func.max(c.updated_at)))


def _from_row(row: Sequence[Any]) -> ScheduleRecord:
    schedule = ScheduleRecord(*row)
    if type(schedule.paused) is not bool:  # SQLite returns its booleans as 0 / 1
        schedule = ScheduleRecord(*row[:7], bool(row[7]), *row[8:])
    return schedule


def _values(schedule: ScheduleRecord) -> dict[str, Any]:
    return {name: getattr(schedule, name) for name in SCHEDULE_FIELDS}


class Schedules:
    """The schedules of one `SQLStore`."""

    def __init__(self, calls: Calls, runner: Runner, doorbell: Doorbell) -> None:
        self._calls = calls
        self._runner = runner
        self._doorbell = doorbell
        self._s = _Statements(calls.s._parts.dialect)
        self._polled = isinstance(runner, SQLiteRunner)  # no notifications between processes

    async def put(self, schedule: ScheduleRecord, now: float) -> ScheduleRecord:
        """`SQLStore.put_schedule` (no ``verify``: doing it twice stores the same)."""
        stored: ScheduleRecord = await self._calls.call(
            True, self._put, schedule, now, notify=True, run_id=rules.SCHEDULE_BELL
        )
        return stored

    async def _put(self, cur: Any, schedule: ScheduleRecord, now: float) -> ScheduleRecord:
        for _ in range(5):
            row = await fetch_one(cur, self._s.get_locked, {"name": schedule.name})
            existing = None if row is None else _from_row(row)
            stored = rules.schedule_put(existing, schedule, now)
            if existing is None:
                if await execute(cur, self._s.insert, _values(stored)) == 1:
                    return stored
                continue  # created by a concurrent transaction meanwhile: update that one
            values = {f"v_{name}": value for name, value in _values(stored).items()}
            await execute(cur, self._s.replace, {**values, "name": schedule.name})
            return stored
        raise AssertionError(f"schedule {schedule.name!r} could not be stored")  # pragma: no cover

    async def get(self, name: str) -> ScheduleRecord | None:
        """`SQLStore.get_schedule`."""
        row = await self._calls.call(False, fetch_one, self._s.get, {"name": name})
        return None if row is None else _from_row(row)

    async def list(self) -> list[ScheduleRecord]:
        """`SQLStore.list_schedules`: ordered by name."""
        rows = await self._calls.call(False, fetch_all, self._s.list, {})
        return [_from_row(row) for row in rows]

    async def set_paused(
        self, name: str, paused: bool, now: float, next_tick: float | None
    ) -> ScheduleRecord | None:
        """`SQLStore.set_schedule_paused` (no ``verify``: doing it twice changes the same)."""
        result: ScheduleRecord | None = await self._calls.call(
            True,
            self._set_paused,
            name,
            paused,
            now,
            next_tick,
            notify=not paused,
            run_id=rules.SCHEDULE_BELL,
        )
        return result

    async def _set_paused(
        self, cur: Any, name: str, paused: bool, now: float, next_tick: float | None
    ) -> ScheduleRecord | None:
        row = await fetch_one(cur, self._s.get_locked, {"name": name})
        if row is None:
            return None
        schedule = rules.schedule_paused(_from_row(row), paused, now, next_tick)
        values = {f"v_{field}": value for field, value in _values(schedule).items()}
        await execute(cur, self._s.replace, {**values, "name": name})
        return schedule

    async def delete(self, name: str) -> bool:
        """`SQLStore.delete_schedule`: whether it existed."""
        deleted: bool = await self._calls.call(
            True, self._delete, name, verify=lambda cur: self._verify_delete(cur, name)
        )
        return deleted

    async def _delete(self, cur: Any, name: str) -> bool:
        return await execute(cur, self._s.delete, {"name": name}) == 1

    async def _verify_delete(self, cur: Any, name: str) -> Any:
        gone = await fetch_one(cur, self._s.get, {"name": name}) is None
        return True if gone else NOT_APPLIED

    async def fire(
        self,
        name: str,
        expected_tick: float,
        next_tick: float | None,
        last_tick: float | None,
        runs: Sequence[RunRecord],
        now: float,
    ) -> ScheduleRecord | None:
        """`SQLStore.fire_schedule`. No ``verify`` is needed: a commit whose outcome was lost
        and is done again finds the schedule moved on (or not) and changes nothing twice."""
        values = {
            "name": name,
            "expected": expected_tick,
            "next": next_tick,
            "last": last_tick,
            "now": now,
        }
        fired: ScheduleRecord | None = await self._calls.call(
            True,
            self._fire,
            values,
            [run_values(run) for run in runs],
            notify=bool(runs),
            run_id=rules.SCHEDULE_BELL,
        )
        return fired

    async def _fire(
        self, cur: Any, values: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]
    ) -> ScheduleRecord | None:
        if await execute(cur, self._s.fire, values) == 1 and runs:
            insert = self._s.insert_run
            await cur.executemany(insert.sql, [insert.args(run) for run in runs])
        row = await fetch_one(cur, self._s.get, {"name": values["name"]})
        return None if row is None else _from_row(row)

    async def wait(self, within: float) -> bool:
        """`SQLStore.wait_for_schedules`: this process's schedule writes wake it at once,
        other processes' through the runner: on Postgres their ``NOTIFY``; on SQLite a commit
        of another process (its data version) after which the schedules look different
        (their count or latest ``updated_at``), so the many commits of runs wake nobody."""
        self._calls.check_open()
        deadline = anyio.current_time() + within
        event = self._doorbell.watcher([rules.SCHEDULE_BELL])
        try:
            seen = await self._fingerprint() if self._polled else None
            while not event.is_set():
                left = deadline - anyio.current_time()
                if left <= 0:
                    return False
                if await self._runner.wait(event, left) and seen is not None:
                    if await self._fingerprint() != seen:
                        return True
            return True
        finally:
            self._doorbell.forget(event)

    async def _fingerprint(self) -> tuple[Any, ...]:
        row = await self._calls.call(False, fetch_one, self._s.fingerprint, {})
        return tuple(row)
