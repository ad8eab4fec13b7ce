"""`SQLStore`'s events and streams: the ``durable_events`` and ``durable_streams`` tables, their
statements, and the transactions that publish, withdraw and read them.

A publication is fenced like a commit, and locks the run's row first (``FOR UPDATE`` on
Postgres; SQLite's ``BEGIN IMMEDIATE`` serialises writers already), so concurrent writers of one
run (activities of a `durable.gather`) take a stream's positions one after the other. It rings
the run's publication bell (`._rules.published_bell`; on Postgres a ``NOTIFY`` with it), which
wakes the readers of that run and no worker. The rules spelled here are `._rules`' events and
streams section.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import fields
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect

from durable.store import (
    EntryKind,
    EventWrite,
    Lease,
    LeaseLost,
    StepRecord,
    StoreError,
    StreamEntry,
    StreamWrite,
)

from . import _rules as rules
from ._schema import events_table, step_values, streams_table, tables
from ._sql_calls import Calls, execute, fence_detail, fetch_all, fetch_one
from ._sql_errors import duplicate
from ._statements import Compiled
from ._verify import NOT_APPLIED

__all__ = ["Streams"]

ENTRY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(StreamEntry))
"""StreamEntry field names in order; equal to the ``durable_streams`` column names."""


class _Statements:
    """The event and stream statements, compiled once for the store's dialect."""

    def __init__(self, dialect: Dialect) -> None:
        runs, events, streams = tables()[0], events_table(), streams_table()
        bp = sa.bindparam
        e, st = events.c, streams.c
        insert = sqlite_insert if dialect.name == "sqlite" else postgresql_insert

        def comp(statement: Any) -> Compiled:
            return Compiled(statement, dialect)

        self.lock_run = comp(
            sa.select(runs.c.lease_token).where(runs.c.id == bp("rid")).with_for_update()
        )
        upsert = insert(events)
        self.set_event = comp(
            upsert.on_conflict_do_update(
                index_elements=[e.run_id, e.key],
                set_={"value": upsert.excluded.value, "updated_at": upsert.excluded.updated_at},
            )
        )
        self.read_events = comp(sa.select(e.key, e.value).where(e.run_id == bp("rid")))
        of_stream = sa.and_(st.run_id == bp("rid"), st.key == bp("key"))
        self.last_position = comp(
            sa.select(sa.func.coalesce(sa.func.max(st.position), 0)).where(of_stream)
        )
        self.insert_entry = comp(streams.insert())
        columns = [st[name] for name in ENTRY_FIELDS]
        self.read_stream = comp(
            sa.select(*columns)
            .where(of_stream, st.position > bp("after"))
            .order_by(st.position)
            .limit(bp("lim", type_=sa.Integer))
        )
        # `_rules.withdrawable`
        withdrawable = sa.and_(
            st.run_id == bp("rid"),
            st.generation == bp("gen"),
            st.seq == bp("seq"),
            st.kind != sa.literal(EntryKind.RETRY.value),
            st.withdrawn == sa.false(),
            sa.func.coalesce(st.attempt, 0) < bp("below"),
        )
        self.withdrawable = comp(
            sa.select(*columns).where(withdrawable).order_by(st.key, st.position)
        )
        self.withdraw = comp(streams.update().where(withdrawable).values(withdrawn=True))


class Streams:
    """The events and streams of one `SQLStore`'s runs."""

    def __init__(self, calls: Calls) -> None:
        self._calls = calls
        self._s = _Statements(calls.s._parts.dialect)

    async def publish(
        self,
        lease: Lease,
        write: EventWrite | StreamWrite,
        steps: Sequence[StepRecord],
        now: float,
    ) -> int:
        """`SQLStore.publish`. A reply lost with the connection (Postgres) is re-read
        through the workflow's step when there is one; an activity's write has none, so its
        outcome stays unknown: `StoreError`, and the executor stops (a resumed attempt
        withdraws whatever the lost one wrote)."""
        rules.check_step_batch(lease.run_id, steps)
        verify = partial(self._verify_publish, lease, write, steps)
        return await self._calls.call(
            True,
            self._publish,
            lease,
            write,
            steps,
            now,
            verify=verify if self._calls.loses_replies else None,
            notify=True,
            run_id=lease.run_id,
            steps=steps,
            bell=rules.published_bell(lease.run_id),
        )

    async def _publish(
        self,
        cur: Any,
        lease: Lease,
        write: EventWrite | StreamWrite,
        steps: Sequence[StepRecord],
        now: float,
    ) -> int:
        await self._lock_fenced(cur, lease)
        if steps:
            insert = self._calls.s.insert_step
            try:
                await cur.executemany(insert.sql, [insert.args(step_values(s)) for s in steps])
            except self._calls.integrity_error as exc:
                if not duplicate(exc):
                    raise
                raise self._calls.say.already_recorded(lease, exc) from exc
        if isinstance(write, EventWrite):
            values = {"run_id": lease.run_id, "key": write.key, "value": write.value}
            await execute(cur, self._s.set_event, {**values, "updated_at": now})
            return 0
        entries: list[tuple[EntryKind, bytes | None]] = [(EntryKind.VALUE, v) for v in write.values]
        if write.close:
            entries.append((EntryKind.CLOSE, None))
        origin = (write.generation, write.seq, write.attempt)
        return await self._append(cur, lease.run_id, write.key, entries, origin, now)

    async def _append(
        self,
        cur: Any,
        run_id: str,
        key: str,
        entries: Sequence[tuple[EntryKind, bytes | None]],
        origin: tuple[int, int, int | None],
        now: float,
    ) -> int:
        row = await fetch_one(cur, self._s.last_position, {"rid": run_id, "key": key})
        position = int(row[0])
        generation, seq, attempt = origin
        rows = []
        for kind, value in entries:
            position += 1
            rows.append(
                self._s.insert_entry.args(
                    {
                        "run_id": run_id,
                        "key": key,
                        "position": position,
                        "kind": kind.value,
                        "value": value,
                        "generation": generation,
                        "seq": seq,
                        "attempt": attempt,
                        "withdrawn": False,
                        "written_at": now,
                    }
                )
            )
        if len(rows) == 1:
            await cur.execute(self._s.insert_entry.sql, rows[0])
        elif rows:
            await cur.executemany(self._s.insert_entry.sql, rows)
        return position

    async def _lock_fenced(self, cur: Any, lease: Lease) -> None:
        row = await fetch_one(cur, self._s.lock_run, {"rid": lease.run_id})
        if row is None or row[0] != lease.token:
            raise LeaseLost(lease.run_id, await fence_detail(cur, self._calls.s, lease))

    async def _verify_publish(
        self,
        lease: Lease,
        write: EventWrite | StreamWrite,
        steps: Sequence[StepRecord],
        cur: Any,
    ) -> Any:
        if not steps:
            raise StoreError(
                f"the durable store {self._calls.url!r} lost the reply to a stream write of "
                f"run {lease.run_id!r} (stream {write.key!r}): whether it was written is "
                "unknown; the attempt's writes are withdrawn when it is retried"
            )
        found = await fetch_one(
            cur, self._calls.s.step_status, {"rid": lease.run_id, "seq": steps[-1].seq}
        )
        if found is None:
            return NOT_APPLIED
        if isinstance(write, EventWrite):
            return 0
        row = await fetch_one(cur, self._s.last_position, {"rid": lease.run_id, "key": write.key})
        return int(row[0])

    async def withdraw(
        self, lease: Lease, generation: int, seq: int, below: int, now: float
    ) -> int:
        """`SQLStore.withdraw`: doing it twice withdraws nothing more (no ``verify``)."""
        return await self._calls.call(
            True,
            self._withdraw,
            lease,
            generation,
            seq,
            below,
            now,
            notify=True,
            run_id=lease.run_id,
            bell=rules.published_bell(lease.run_id),
        )

    async def _withdraw(
        self, cur: Any, lease: Lease, generation: int, seq: int, below: int, now: float
    ) -> int:
        await self._lock_fenced(cur, lease)
        return await self.withdraw_steps(cur, lease.run_id, generation, [seq], below, now)

    async def withdraw_steps(
        self,
        cur: Any,
        run_id: str,
        generation: int,
        seqs: Collection[int],
        below: int,
        now: float,
    ) -> int:
        """Withdraw what steps ``seqs`` of ``generation`` wrote (attempts below ``below``) and
        append the markers, in the caller's transaction (which holds the run's row); how many
        entries were withdrawn."""
        gone: list[StreamEntry] = []
        for seq in seqs:
            values = {"rid": run_id, "gen": generation, "seq": seq, "below": below}
            rows = await fetch_all(cur, self._s.withdrawable, values)
            if rows:
                gone += [_entry(row) for row in rows]
                await execute(cur, self._s.withdraw, values)
        for key, gen, step, attempt in rules.markers(gone):
            origin = (gen, step, attempt)
            await self._append(cur, run_id, key, [(EntryKind.RETRY, None)], origin, now)
        return len(gone)

    async def read_events(self, run_id: str) -> dict[str, bytes]:
        """`SQLStore.read_events`."""
        rows = await self._calls.call(
            False, fetch_all, self._s.read_events, {"rid": run_id}, run_id=run_id
        )
        return {key: bytes(value) for key, value in rows}

    async def read_stream(self, run_id: str, key: str, after: int, limit: int) -> list[StreamEntry]:
        """`SQLStore.read_stream`."""
        values = {"rid": run_id, "key": key, "after": after, "lim": max(limit, 0)}
        rows = await self._calls.call(False, fetch_all, self._s.read_stream, values, run_id=run_id)
        return [_entry(row) for row in rows]


def _entry(row: Sequence[Any]) -> StreamEntry:
    values = dict(zip(ENTRY_FIELDS, row, strict=True))
    values["kind"] = EntryKind(values["kind"])
    values["withdrawn"] = bool(values["withdrawn"])  # SQLite returns its booleans as 0 / 1
    if values["value"] is not None:
        values["value"] = bytes(values["value"])
    return StreamEntry(**values)
