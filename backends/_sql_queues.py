"""`SQLStore`'s queues: their stored limits, and what claiming and acquiring a queued run
check under a lock on its queue (the rules of `._rules`' queue section, measured with SQL).

A queue's limits hold across processes because every write that makes one more of its runs
execute (`SQLStore.claim`, `SQLStore.acquire_lease` of a run nobody holds) first locks the
queue's row in ``durable_queues`` (Postgres ``SELECT ... FOR UPDATE``; SQLite's ``BEGIN
IMMEDIATE`` already serialises writers), then counts the queue's executing and recently started
runs, then leases. Claimers lock queues in name order, so two claimers never deadlock. Runs
finishing or parking only lower the counts, so they need no lock.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from durable.store import QueueSettings, RunRecord, RunStatus

from . import _rules as rules
from ._schema import queues_table, run_from_row
from ._sql_calls import fetch_all, fetch_one
from ._statements import Compiled, Statements

__all__ = [
    "QueueStatements",
    "admits_run",
    "admitted_runs",
    "load",
    "queue_due",
    "queue_names",
    "queue_values",
    "settings_from_row",
]

_CANDIDATES_PER_SLOT = 4
"""A claim reads up to this many runnable runs of a queue per free slot (at least 32), so runs
whose key is full do not hide the next key's runs from it."""


def queue_values(settings: QueueSettings) -> dict[str, Any]:
    """The ``durable_queues`` column values of ``settings``."""
    return {
        "name": settings.name,
        "concurrency": settings.concurrency,
        "per_key_concurrency": settings.per_key_concurrency,
        "rate_count": settings.rate_count,
        "rate_period": settings.rate_period,
        "updated_at": settings.updated_at,
    }


def settings_from_row(row: Sequence[Any]) -> QueueSettings:
    """A `QueueSettings` from a row selected in `queue_values` order."""
    return QueueSettings(*row)


class QueueStatements:
    """The statements of the queue checks, compiled once for one dialect.

    Args:
        s: the store's other statements (their columns, predicates and dialect are shared).
    """

    def __init__(self, s: Statements) -> None:
        p = s._parts
        dialect = p.dialect
        c, bp, runs = p.c, sa.bindparam, p.runs
        table = queues_table()
        q = table.c
        self._dialect = dialect
        self._p = p
        columns = [q.name, q.concurrency, q.per_key_concurrency, q.rate_count, q.rate_period]
        insert = sqlite_insert if dialect.name == "sqlite" else postgresql_insert
        upsert = insert(table)
        self.put = Compiled(
            upsert.on_conflict_do_update(
                index_elements=[q.name],
                set_={
                    name: upsert.excluded[name]
                    for name in (
                        "concurrency",
                        "per_key_concurrency",
                        "rate_count",
                        "rate_period",
                        "updated_at",
                    )
                },
            ),
            dialect,
        )
        self.add_if_absent = Compiled(insert(table).on_conflict_do_nothing(), dialect)
        self.list = Compiled(sa.select(*columns, q.updated_at).order_by(q.name), dialect)
        self.names = Compiled(sa.select(q.name).order_by(q.name), dialect)
        by_name = q.name == bp("q")
        self.get = Compiled(sa.select(*columns, q.updated_at).where(by_name), dialect)
        # The lock every admission of one more executing run takes first.
        self.lock = Compiled(
            sa.select(*columns, q.updated_at).where(by_name).with_for_update(), dialect
        )
        in_queue = c.queue == bp("q")
        leased = sa.and_(in_queue, c.lease_owner.is_not(None))  # the queue leased index
        self.executing = Compiled(
            sa.select(c.queue_key, sa.func.count()).where(leased).group_by(c.queue_key), dialect
        )
        self.started = Compiled(
            sa.select(sa.func.count(), sa.func.min(c.started_at)).where(
                in_queue, c.started_at.is_not(None), c.started_at > bp("since")
            ),
            dialect,
        )
        # Keys with no room left (`_rules.admits`): their runs are passed over.
        full_keys = (
            sa.select(c.queue_key)
            .where(leased, c.queue_key.is_not(None))
            .group_by(c.queue_key)
            .having(sa.func.count() >= bp("per_key", type_=sa.Integer))
        )
        self._key_has_room = sa.or_(c.queue_key.is_(None), c.queue_key.not_in(full_keys))
        order = (c.priority, sa.func.coalesce(c.wake_at, c.created_at), c.id)
        # `_rules.queue_order`: runs whose executor died first (they count already; a full
        # queue is never left full of dead runs), then the rest by priority and due time.
        self._takeovers = (
            sa.select(*p.run_columns)
            .where(leased, p.active, p.runnable)
            .order_by(*order)
            .with_for_update(skip_locked=True)
        )
        self._takeovers_for: dict[tuple[str, ...], Compiled] = {}
        self._candidates = (
            sa.select(*p.run_columns)
            .where(in_queue, c.lease_owner.is_(None), p.active, p.runnable, self._key_has_room)
            .order_by(*order)
            .limit(bp("lim", type_=sa.Integer))
            .with_for_update(skip_locked=True)
        )
        self._candidates_for: dict[tuple[str, ...], Compiled] = {}
        # `_rules.queue_due`, as three minimums: leased runs (their lease's expiry), and runs
        # nobody holds that started before (limited by room) or never did (also by the rate).
        free = sa.and_(c.lease_owner.is_(None), self._key_has_room)
        self._due = sa.select(
            sa.func.min(sa.case((c.lease_owner.is_not(None), p.due_at), else_=sa.null())),
            sa.func.min(
                sa.case((sa.and_(free, c.started_at.is_not(None)), p.due_at), else_=sa.null())
            ),
            sa.func.min(
                sa.case((sa.and_(free, c.started_at.is_(None)), p.due_at), else_=sa.null())
            ),
        ).where(in_queue, p.active)
        self._due_for: dict[tuple[str, ...], Compiled] = {}
        self.queue_of = Compiled(
            sa.select(c.queue, c.queue_key, c.started_at, c.lease_owner).where(p.by_id), dialect
        )
        self._runs = runs

    def candidates(self, workflows: tuple[str, ...]) -> Compiled:
        """A queue's runnable runs of ``workflows`` that nobody holds, by priority and due
        time, locked (rows other claimers hold are skipped), passing over keys with no room."""
        return self._for(self._candidates, self._candidates_for, workflows)

    def takeovers(self, workflows: tuple[str, ...]) -> Compiled:
        """A queue's runs of ``workflows`` whose lease lapsed, by priority and due time,
        locked."""
        return self._for(self._takeovers, self._takeovers_for, workflows)

    def due(self, workflows: tuple[str, ...]) -> Compiled:
        """The three minimums `QueueStatements.queue_due` combines, for ``workflows``."""
        return self._for(self._due, self._due_for, workflows)

    def _for(
        self, statement: Any, cache: dict[tuple[str, ...], Compiled], workflows: tuple[str, ...]
    ) -> Compiled:
        compiled = cache.get(workflows)
        if compiled is None:
            names = [
                sa.bindparam(f"wf{i}", value=name, type_=sa.String)
                for i, name in enumerate(workflows)
            ]
            compiled = Compiled(statement.where(self._p.c.workflow.in_(names)), self._dialect)
            cache[workflows] = compiled
        return compiled


async def load(
    cur: Any, qs: QueueStatements, name: str, now: float, *, lock: bool
) -> tuple[QueueSettings, rules.QueueLoad]:
    """The queue's settings (locked with ``lock``) and its load at ``now``. A queue with no
    row (only a database written by hand) has no limits."""
    row = await fetch_one(cur, qs.lock if lock else qs.get, {"q": name})
    settings = QueueSettings(name) if row is None else settings_from_row(row)
    executing = 0
    by_key: dict[str, int] = {}
    if settings.concurrency is not None or settings.per_key_concurrency is not None:
        for key, count in await fetch_all(cur, qs.executing, {"q": name}):
            executing += int(count)
            if key is not None:
                by_key[key] = int(count)
    started, oldest = 0, None
    if settings.rate_count is not None and settings.rate_period is not None:
        since = now - settings.rate_period
        found = await fetch_one(cur, qs.started, {"q": name, "since": since})
        if found is not None:
            started, oldest = int(found[0]), found[1]
    return settings, rules.QueueLoad(executing, by_key, started, oldest)


async def admitted_runs(
    cur: Any,
    qs: QueueStatements,
    name: str,
    workflows: tuple[str, ...],
    now: float,
    limit: int,
) -> list[RunRecord]:
    """Under the queue's lock: up to ``limit`` of its runnable runs that its limits admit
    together, in `_rules.queue_order`."""
    settings, current = await load(cur, qs, name, now, lock=True)
    values: dict[str, Any] = {"q": name, "now": now}
    rows = await fetch_all(cur, qs.takeovers(workflows), values)
    if settings.concurrency is None or current.executing < settings.concurrency:
        values |= {"lim": max(limit * _CANDIDATES_PER_SLOT, 32)}
        values["per_key"] = settings.per_key_concurrency
        rows += await fetch_all(cur, qs.candidates(workflows), values)
    admitted: list[RunRecord] = []
    for row in rows:
        if len(admitted) >= limit:
            break
        run = run_from_row(row)
        if rules.admits(settings, current, run):
            admitted.append(run)
            current = rules.with_admitted(current, run, now)
    return admitted


async def queue_due(
    cur: Any, qs: QueueStatements, name: str, workflows: tuple[str, ...], now: float
) -> float | None:
    """`_rules.queue_due` for one queue: when `SQLStore.claim` may next take one of its
    runs by time alone."""
    settings, current = await load(cur, qs, name, now, lock=False)
    values = {"q": name, "per_key": settings.per_key_concurrency}
    row = await fetch_one(cur, qs.due(workflows), values)
    if row is None:
        return None
    leased, started, fresh = row
    dues = [leased]
    if settings.concurrency is None or current.executing < settings.concurrency:
        dues.append(started)
        rate = settings.rate_count
        if fresh is not None and rate is not None and current.started >= rate:
            if current.oldest_start is None or settings.rate_period is None:
                fresh = None
            else:
                fresh = max(fresh, current.oldest_start + settings.rate_period)
        dues.append(fresh)
    return min((float(d) for d in dues if d is not None), default=None)


async def admits_run(cur: Any, qs: QueueStatements, run_id: str, now: float) -> bool:
    """Whether `SQLStore.acquire_lease` may lease ``run_id`` as far as its queue goes: yes
    for a run without a queue or one someone holds (a takeover); otherwise its queue is
    locked (the lock lasts until the transaction ends) and its limits decide."""
    row = await fetch_one(cur, qs.queue_of, {"rid": run_id})
    if row is None or row[0] is None or row[3] is not None:
        return True
    settings, current = await load(cur, qs, row[0], now, lock=True)
    probe = RunRecord(
        id=run_id,
        workflow="",
        status=RunStatus.PENDING,
        args=b"",
        created_at=0.0,
        updated_at=0.0,
        queue=row[0],
        queue_key=row[1],
        started_at=row[2],
    )
    return rules.admits(settings, current, probe)


async def queue_names(cur: Any, qs: QueueStatements, queues: Collection[str] | None) -> list[str]:
    """The queues a claim serves, in name order (the order their locks are taken in)."""
    if queues is not None:
        return sorted(set(queues))
    return [row[0] for row in await fetch_all(cur, qs.names, {})]
