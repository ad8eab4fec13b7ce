"""Every statement `durable.backends.SQLStore` runs, as SQLAlchemy Core over the tables of
`._schema`, compiled once for the store's dialect (`Compiled`), so the hot path hands ready SQL
text to the DBAPI cursor.

`Statements` is one namespace (``store._s.get_run``) assembled from one class per area: runs
and leases (`_RunStatements`), steps and commits (`_StepStatements`), signals and requests
(`_RequestStatements`). They share their building blocks (`_Parts`): the columns, the fencing
predicate, the status sets. The comments name the rule of `._rules` each statement applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from durable.store import RunQuery, RunStatus, StepStatus

from ._schema import (
    ACTIVE_STATUSES,
    RUN_FIELDS,
    STEP_FIELDS,
    events_table,
    parked_statuses,
    signals_table,
    streams_table,
    tables,
)

__all__ = ["Compiled", "Statements"]


class Compiled:
    """A Core statement compiled once for one dialect, run straight on a DBAPI cursor.

    Args:
        statement: the Core statement; its bind parameters without a value are filled per call.
        dialect: the dialect to compile for.

    Attributes:
        sql: the statement's SQL text in the dialect's parameter style.
    """

    __slots__ = ("_consts", "_keys", "sql")

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled)
        self._keys = tuple(compiled.positiontup or ()) if compiled.positional else None
        self._consts = {k: v for k, v in compiled.params.items() if v is not None}

    def args(self, values: Mapping[str, Any]) -> Any:
        """The DBAPI parameters for ``values`` (plus the statement's own constants)."""
        merged = {**self._consts, **values} if self._consts else values
        if self._keys is None:
            return merged
        return tuple([merged[k] for k in self._keys])


class _Parts:
    """What the statements of every area are built from: the tables, the run columns and the
    predicates several statements share."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.runs, self.steps, _ = tables()
        c = self.c = self.runs.c
        bp = sa.bindparam
        self.run_columns = [c[name] for name in RUN_FIELDS]
        self.step_columns = [self.steps.c[name] for name in STEP_FIELDS]
        self.by_id = c.id == bp("rid")
        self.fenced = sa.and_(self.by_id, c.lease_token == bp("token"))
        self.finished = [sa.literal(s.value) for s in RunStatus if s.finished]
        self.parked = [sa.literal(RunStatus.SLEEPING.value), sa.literal(RunStatus.WAITING.value)]
        self.released = {
            "lease_owner": sa.null(),
            "lease_host": sa.null(),
            "lease_pid": sa.null(),
            "lease_expires_at": sa.null(),
        }
        # The claim and due queries spell the claim index's predicate with literal values (not
        # bound parameters), so the planners can match it to the partial index.
        self.active = c.status.in_([_sql_literal(s.value) for s in ACTIVE_STATUSES])
        self.is_pending = c.status == _sql_literal(RunStatus.PENDING.value)
        self.is_parked = c.status.in_([_sql_literal(s) for s in parked_statuses()])
        self.is_paused = c.status == _sql_literal(RunStatus.PAUSED.value)
        idle = c.lease_owner.is_(None)
        # `_rules.runnable` (with `active`): a paused run is never runnable by time, not even
        # with a lapsed lease; only `resume` un-pauses it.
        self.runnable = sa.or_(
            sa.and_(self.is_pending, idle, sa.or_(c.wake_at.is_(None), c.wake_at <= bp("now"))),
            sa.and_(self.is_parked, idle, c.wake_at <= bp("now")),
            sa.and_(c.lease_owner.is_not(None), c.lease_expires_at <= bp("now"), ~self.is_paused),
        )
        # `durable.store.due_at`: when a run becomes claimable by time alone (a pending one
        # now, a parked one at its wake time, a leased one when its lease expires, a paused
        # one only by a write).
        self.due_at = sa.case(
            (self.is_paused, sa.null()),
            (c.lease_owner.is_not(None), c.lease_expires_at),
            (self.is_pending, sa.func.coalesce(c.wake_at, c.created_at)),
            (self.is_parked, c.wake_at),
            else_=sa.null(),
        )
        self.unqueued = c.queue.is_(None)

    def comp(self, statement: ClauseElement) -> Compiled:
        return Compiled(statement, self.dialect)


class _RunStatements:
    """Runs and their leases: inserting and reading runs, acquiring, claiming, renewing and
    releasing leases, pruning, blocking unreadable runs."""

    _dialect: Dialect

    def _compile_runs(self, p: _Parts) -> None:
        runs, steps, c, bp, comp = p.runs, p.steps, p.c, sa.bindparam, p.comp
        oldest_first = (c.created_at, c.id)
        free = sa.or_(  # `_rules.lease_free`
            c.lease_owner.is_(None),
            c.lease_expires_at <= bp("now"),
            c.lease_token == bp("takeover"),
        )
        self.insert_run = comp(runs.insert())
        self.get_run = comp(sa.select(*p.run_columns).where(p.by_id))
        self.list_all = comp(
            sa.select(*p.run_columns).order_by(*oldest_first).limit(bp("lim", type_=sa.Integer))
        )
        self.list_status = comp(
            sa.select(*p.run_columns)
            .where(c.status == bp("filter_status"))
            .order_by(*oldest_first)
            .limit(bp("lim", type_=sa.Integer))
        )
        # Only runs in a status this version knows are acquired (an unknown one reads as
        # blocked); taking a lease someone still holds counts a recovery (`_rules.acquire`).
        unfinished = [sa.literal(s.value) for s in RunStatus if not s.finished]
        self.acquire = comp(
            runs.update()
            .where(p.by_id, c.status.in_(unfinished), free)
            .values(
                recoveries=c.recoveries + sa.case((c.lease_owner.is_not(None), 1), else_=0),
                started_at=sa.func.coalesce(c.started_at, bp("now")),
                lease_token=c.lease_token + 1,
                lease_owner=bp("owner"),
                lease_host=bp("host"),
                lease_pid=bp("pid"),
                lease_expires_at=bp("expires"),
                status=sa.literal(RunStatus.RUNNING.value),
                error_text=sa.null(),
                wake_at=sa.null(),
                updated_at=bp("now"),
            )
        )
        self._dialect = p.dialect
        # Runs without a queue (queued ones are claimed per queue: `._sql_queues`).
        self._claimable = (
            sa.select(*p.run_columns)
            .where(p.active, p.unqueued, p.runnable)
            .order_by(sa.func.coalesce(c.wake_at, c.created_at), c.id)  # `_rules.claim_order`
            .limit(bp("lim", type_=sa.Integer))
            .with_for_update(skip_locked=True)
        )
        self._claimable_for: dict[tuple[str, ...], Compiled] = {}
        # When the next run without a queue becomes claimable: the minimum of
        # `durable.store.due_at`.
        self._due = sa.select(sa.func.min(p.due_at)).where(p.active, p.unqueued)
        self._due_for: dict[tuple[str, ...], Compiled] = {}
        # A finished run is pruned only when no unfinished run is above it (at any depth):
        # `keep` walks down from every unfinished run (the rule of `._rules.prunable`).
        below = runs.alias("below")
        keep = (
            sa.select(c.id.label("id"))
            .where(c.status.not_in([_sql_literal(s.value) for s in RunStatus if s.finished]))
            .cte("keep", recursive=True)
        )
        keep = keep.union(sa.select(below.c.id).join(keep, below.c.parent_id == keep.c.id))
        self.prune_ids = comp(
            sa.select(c.id)
            .where(
                c.status.in_([_sql_literal(s.value) for s in RunStatus if s.finished]),
                c.updated_at < bp("before"),
                c.id.not_in(sa.select(keep.c.id)),
            )
            .order_by(c.updated_at, c.id)
            .limit(bp("lim", type_=sa.Integer))
            .with_for_update(skip_locked=True)
        )
        # Runs whose status this version does not know (see `run_from_row`).
        self.unknown_status = comp(
            sa.select(c.id, c.status)
            .where(c.status.not_in([_sql_literal(s.value) for s in RunStatus]))
            .limit(bp("lim", type_=sa.Integer))
            .with_for_update(skip_locked=True)
        )
        self.block_run = comp(
            runs.update()
            .where(p.by_id, c.status == bp("old_status"))
            .values(
                status=sa.literal(RunStatus.BLOCKED.value),
                error_text=bp("text"),
                updated_at=bp("now"),
            )
        )
        # `_rules.leased_on`: the leased runs a worker may take over (not blocked, not paused)
        self._leased_on = sa.select(*p.run_columns).where(
            p.active, ~p.is_paused, c.lease_owner.is_not(None), c.lease_host == bp("host")
        )
        self._leased_on_for: dict[tuple[str, ...], Compiled] = {}
        self.delete_steps = comp(steps.delete().where(steps.c.run_id == bp("rid")))
        self.delete_signals = comp(
            signals_table().delete().where(signals_table().c.run_id == bp("rid"))
        )
        self.delete_run = comp(runs.delete().where(p.by_id))
        events, streams = events_table(), streams_table()
        self.delete_events = comp(events.delete().where(events.c.run_id == bp("rid")))
        self.delete_streams = comp(streams.delete().where(streams.c.run_id == bp("rid")))
        # What deleting a run deletes, the run's row last.
        self.delete_run_rows = (
            self.delete_signals,
            self.delete_events,
            self.delete_streams,
            self.delete_steps,
            self.delete_run,
        )
        self.delete_step = comp(
            steps.delete().where(steps.c.run_id == bp("rid"), steps.c.seq == bp("seq"))
        )
        # `_rules.resettable` and `_rules.reset`: a retry makes a stopped run pending again
        self.reset_run = comp(
            runs.update()
            .where(p.fenced, c.status == bp("old_status"), c.lease_owner.is_(None))
            .values(
                **p.released,
                status=sa.literal(RunStatus.PENDING.value),
                result=sa.null(),
                error=sa.null(),
                error_text=sa.null(),
                lease_token=c.lease_token + 1,
                cancel_requested=sa.false(),
                cancelled_seq=sa.null(),
                rollback_requested=bp("rollback", type_=sa.Boolean),
                wake_at=sa.null(),
                pause_requested=sa.false(),
                recoveries=0,
                deadline=sa.null(),
                updated_at=bp("now"),
            )
        )
        # `_rules.fenced` then `_rules.continued`: the run's next generation, same lease
        self.continue_run = comp(
            runs.update()
            .where(p.fenced)
            .values(
                args=bp("args", type_=sa.LargeBinary),
                generation=c.generation + 1,
                status=sa.literal(RunStatus.RUNNING.value),
                result=sa.null(),
                error=sa.null(),
                error_text=sa.null(),
                wake_at=sa.null(),
                cancel_requested=sa.and_(c.cancel_requested, c.cancelled_seq.is_(None)),
                cancelled_seq=sa.null(),
                recoveries=0,
                updated_at=bp("now"),
            )
        )
        # A continued run's consumed signals: deleted, but one with an idempotency key keeps
        # its key (without its payload), so that a sender retrying it still sends nothing.
        sig = signals_table()
        consumed = sa.and_(sig.c.run_id == bp("rid"), sig.c.consumed_seq.is_not(None))
        self.delete_consumed_signals = comp(
            sig.delete().where(consumed, sig.c.idempotency_key.is_(None))
        )
        self.empty_consumed_signals = comp(
            sig.update()
            .where(consumed, sig.c.idempotency_key.is_not(None))
            .values(payload=sa.literal(b"", sa.LargeBinary))
        )
        # Re-reads after a commit whose outcome is unknown (the connection broke during it).
        self.leased_by = comp(
            sa.select(c.id, c.lease_token).where(
                c.lease_owner == bp("owner"), c.lease_expires_at == bp("expires")
            )
        )
        self.expire_leases_of = comp(
            runs.update()
            .where(c.lease_owner == bp("owner"), c.lease_expires_at == bp("expires"))
            .values(lease_expires_at=0.0)
        )
        self.token = comp(sa.select(c.lease_token).where(p.by_id))
        # `_rules.fenced` then `_rules.renewed` / `_rules.released`
        self.renew = comp(runs.update().where(p.fenced).values(lease_expires_at=bp("expires")))
        self.release = comp(runs.update().where(p.fenced).values(**p.released))

    def claimable(self, workflows: tuple[str, ...]) -> Compiled:
        """The claim query for these workflow names (compiled once per set of names)."""
        return self._for_workflows(self._claimable, self._claimable_for, workflows)

    def leased_on(self, workflows: tuple[str, ...]) -> Compiled:
        """Unfinished runs of these workflows leased by an executor on ``host``."""
        return self._for_workflows(self._leased_on, self._leased_on_for, workflows)

    def due(self, workflows: tuple[str, ...]) -> Compiled:
        """When the next run of these workflows becomes claimable (a one-row ``min``)."""
        return self._for_workflows(self._due, self._due_for, workflows)

    def _for_workflows(
        self,
        statement: sa.Select[Any],
        cache: dict[tuple[str, ...], Compiled],
        workflows: tuple[str, ...],
    ) -> Compiled:
        compiled = cache.get(workflows)
        if compiled is None:
            runs, _, _ = tables()
            names: list[sa.BindParameter[str]] = [
                sa.bindparam(f"wf{i}", value=name, type_=sa.String)
                for i, name in enumerate(workflows)
            ]
            compiled = Compiled(statement.where(runs.c.workflow.in_(names)), self._dialect)
            cache[workflows] = compiled
        return compiled


class _StepStatements:
    """Steps and commits: the fenced step writes of the hot path, the run update of a
    commit, the checks a commit makes under the run's row lock, reading a run's steps."""

    def _compile_steps(self, p: _Parts) -> None:
        runs, steps, c, bp, comp = p.runs, p.steps, p.c, sa.bindparam, p.comp
        fenced = p.fenced
        # `_rules.updated`: a None result / error / cancelled_seq / wake_at keeps the value
        changes = {
            "updated_at": bp("now"),
            "status": bp("new_status"),
            "result": sa.func.coalesce(bp("new_result", type_=sa.LargeBinary), c.result),
            "error": sa.func.coalesce(bp("new_error", type_=sa.LargeBinary), c.error),
            "error_text": bp("new_error_text", type_=sa.String),
            "cancelled_seq": sa.func.coalesce(
                bp("new_cancelled_seq", type_=sa.Integer), c.cancelled_seq
            ),
            "wake_at": sa.func.coalesce(bp("new_wake_at", type_=sa.Double), c.wake_at),
        }
        self.step_status = comp(
            sa.select(steps.c.status, steps.c.attempts, steps.c.result).where(
                steps.c.run_id == bp("rid"), steps.c.seq == bp("seq")
            )
        )
        # Steps without a run update: check the token under a row lock (Postgres FOR SHARE;
        # SQLite's BEGIN IMMEDIATE already holds the database's write lock) instead of
        # rewriting the run row, so a one-step commit writes one row.
        self.check_token = comp(sa.select(c.lease_token).where(p.by_id).with_for_update(read=True))
        # The same, for a commit that starts a step: also the requests that stop it.
        self.check_control = comp(
            sa.select(c.lease_token, c.pause_requested, c.cancel_requested, c.cancelled_seq)
            .where(p.by_id)
            .with_for_update(read=True)
        )
        may_start = sa.and_(  # no `_rules.interruption`
            fenced,
            c.pause_requested == sa.false(),
            sa.or_(c.cancel_requested == sa.false(), c.cancelled_seq.is_not(None)),
        )
        self.update = comp(runs.update().where(fenced).values(**changes))
        # `_rules.updated` on release: the earlier of the update's wake time and the one a
        # signal set while the run was leased (else a signal sent as it parked is never seen).
        new_wake = sa.cast(bp("new_wake_at", type_=sa.Double), sa.Double)  # typed for Postgres
        soonest = sa.case(
            (new_wake.is_(None), c.wake_at),
            (c.wake_at.is_(None), new_wake),
            (c.wake_at < new_wake, c.wake_at),
            else_=new_wake,
        )
        released = {**changes, "wake_at": soonest}
        self.update_release = comp(runs.update().where(fenced).values(**released, **p.released))
        self.insert_step = comp(steps.insert())
        # One step, fenced, in one statement: inserted only while the run's token is the
        # lease's (Postgres holds the run row FOR SHARE until the commit, so a takeover waits).
        step_columns = p.step_columns
        self.insert_step_fenced = comp(
            steps.insert().from_select(
                step_columns,
                sa.select(*[bp(col.name, type_=col.type) for col in step_columns]).where(
                    sa.exists(sa.select(c.id).where(fenced).with_for_update(read=True))
                ),
            )
        )
        # Starting a step, in one statement: its ``started`` row is inserted only while the
        # run's token is the lease's and no request stops it (the hot path). Relaxed, its
        # commit does not wait for the WAL flush (synchronous_commit off for this transaction
        # only): the step's outcome commit, which does wait, flushes it too, and a server
        # crash can only lose the start of an attempt whose outcome was not committed either
        # (the attempt count may then be one short). Fencing and requests are checked under
        # the row lock all the same.
        starting: sa.ColumnElement[bool] = sa.exists(
            sa.select(c.id).where(may_start).with_for_update(read=True)
        )
        no_flush = sa.func.set_config("synchronous_commit", "off", sa.true()) == sa.literal("off")
        # [0] flushed as any commit; [1] relaxed (Postgres only; see `Store.commit(relaxed=)`)
        self.insert_step_starting = tuple(
            comp(
                steps.insert().from_select(
                    step_columns,
                    sa.select(*[bp(col.name, type_=col.type) for col in step_columns]).where(
                        sa.and_(starting, no_flush) if relaxed else starting
                    ),
                )
            )
            for relaxed in (False, True)
        )
        sc = steps.c
        # What replaces a ``started`` row: its outcome, or another attempt's start.
        replaced = {
            "kind": bp("kind"),
            "name": bp("name"),
            "location": bp("location", type_=sa.String),
            "started_at": bp("started_at"),
            "status": bp("status"),
            "attempts": bp("attempts"),
            "finished_at": bp("finished_at"),
            "result": bp("result", type_=sa.LargeBinary),
            "error": bp("error", type_=sa.LargeBinary),
        }
        # A step's outcome replacing its ``started`` row, fenced, in one statement.
        self.replace_step_fenced = comp(
            steps.update()
            .where(
                sc.run_id == bp("rid"),
                sc.seq == bp("seq"),
                sc.status == sa.literal(StepStatus.STARTED.value),
                sa.exists(sa.select(c.id).where(fenced).with_for_update(read=True)),
            )
            .values(**replaced)
        )
        self.replace_step = comp(
            steps.update()
            .where(
                sc.run_id == bp("rid"),
                sc.seq == bp("seq"),
                sc.status == sa.literal(StepStatus.STARTED.value),
            )
            .values(**replaced)
        )
        self.load_steps = comp(
            sa.select(*step_columns).where(steps.c.run_id == bp("rid")).order_by(steps.c.seq)
        )


class _RequestStatements:
    """Signals and requests: buffering and consuming signals, waking parked runs, and the
    cancel, pause, resume and rollback requests."""

    def _compile_requests(self, p: _Parts) -> None:
        runs, c, bp, comp = p.runs, p.c, sa.bindparam, p.comp
        by_id, finished, parked = p.by_id, p.finished, p.parked
        sent = signals_table().c
        self.find_signal = comp(
            sa.select(sent.id).where(
                sent.run_id == bp("rid"), sent.name == bp("name"), sent.sent_at == bp("now")
            )
        )
        self.wake_parked = comp(  # `_rules.woken`
            runs.update()
            .where(by_id, c.status.in_(parked), c.lease_owner.is_(None))
            .values(wake_at=bp("now"))
        )
        self.wake_waiting = comp(  # `_rules.on_signal`
            runs.update()
            .where(by_id, c.status == sa.literal(RunStatus.WAITING.value))
            .values(wake_at=bp("now"))
        )
        # `_rules.signal_taken`: the executor found the signal itself
        self.clear_wake = comp(runs.update().where(p.fenced).values(wake_at=sa.null()))
        sig = signals_table().c
        insert = sqlite_insert if p.dialect.name == "sqlite" else postgresql_insert
        # A second signal with the same idempotency key to one run inserts nothing.
        self.insert_signal = comp(
            insert(signals_table())
            .values(
                run_id=bp("rid"),
                name=bp("name"),
                payload=bp("payload", type_=sa.LargeBinary),
                sent_at=bp("now"),
                idempotency_key=bp("key", type_=sa.String),
            )
            .on_conflict_do_nothing()
        )
        self.run_status_locked = comp(sa.select(c.status).where(by_id).with_for_update(read=True))
        self.oldest_signal = comp(
            sa.select(sig.id, sig.payload)
            .where(sig.run_id == bp("rid"), sig.name == bp("name"), sig.consumed_seq.is_(None))
            .order_by(sig.id)
            .limit(1)
            .with_for_update()
        )
        self.consume_signal = comp(
            signals_table()
            .update()
            .where(sig.id == bp("sid"), sig.consumed_seq.is_(None))
            .values(consumed_seq=bp("seq"))
        )
        # The requests: `_rules.request_cancel`, `request_pause`, `resume`, `request_rollback`.
        self.request_cancel = comp(
            runs.update()
            .where(by_id, c.status.not_in(finished))
            .values(
                cancel_requested=sa.true(),
                updated_at=bp("now"),
                # a parked (or delayed pending) run is woken at once, to be cancelled
                wake_at=sa.case(
                    (sa.and_(c.status.in_(parked), c.lease_owner.is_(None)), bp("now")),
                    (
                        sa.and_(
                            c.status == sa.literal(RunStatus.PENDING.value),
                            c.lease_owner.is_(None),
                            c.wake_at.is_not(None),
                        ),
                        bp("now"),
                    ),
                    else_=c.wake_at,
                ),
            )
        )
        self.request_pause = comp(
            runs.update()
            .where(by_id, c.status.not_in(finished))
            .values(
                pause_requested=sa.true(),
                updated_at=bp("now"),
                # a run nobody executes (pending or parked) is paused at once
                status=sa.case(
                    (
                        sa.and_(
                            c.status.in_([sa.literal(RunStatus.PENDING.value), *parked]),
                            c.lease_owner.is_(None),
                        ),
                        sa.literal(RunStatus.PAUSED.value),
                    ),
                    else_=c.status,
                ),
            )
        )
        self.resume = comp(
            runs.update()
            .where(by_id, c.status.not_in(finished))
            .values(
                pause_requested=sa.false(),
                updated_at=bp("now"),
                status=sa.case(
                    (
                        c.status == sa.literal(RunStatus.PAUSED.value),
                        sa.literal(RunStatus.PENDING.value),
                    ),
                    else_=c.status,
                ),
                wake_at=sa.case(
                    (c.status == sa.literal(RunStatus.PAUSED.value), sa.null()),
                    else_=c.wake_at,
                ),
            )
        )
        self.request_rollback = comp(
            runs.update()
            .where(by_id, c.status == sa.literal(RunStatus.COMPLETED.value))
            .values(
                status=sa.literal(RunStatus.COMPENSATING.value),
                rollback_requested=sa.true(),
                updated_at=bp("now"),
            )
        )


class Statements(_RunStatements, _StepStatements, _RequestStatements):
    """Every statement `durable.backends.SQLStore` runs, compiled once for one dialect.

    Args:
        dialect: the SQLAlchemy dialect of the store's engine.
    """

    def __init__(self, dialect: Dialect) -> None:
        parts = self._parts = _Parts(dialect)
        self._compile_runs(parts)
        self._compile_steps(parts)
        self._compile_requests(parts)

    def find_runs(self, query: RunQuery) -> tuple[Compiled, dict[str, Any]]:
        """The statement (compiled for this query's filters) and values of
        `durable.store.Store.find_runs`; it selects as `durable.backends._rules.matches`
        does, newest first (`_rules.newest_first`)."""
        p, bp, c = self._parts, sa.bindparam, self._parts.c
        where: list[sa.ColumnElement[bool]] = []
        values: dict[str, Any] = {"lim": max(query.limit, 0)}
        for column, key, wanted in (
            (c.status, "st", None if query.statuses is None else [str(s) for s in query.statuses]),
            (c.workflow, "wf", None if query.workflows is None else list(query.workflows)),
        ):
            if wanted is None:
                continue
            names = [f"{key}{i}" for i in range(len(wanted))]
            where.append(column.in_([bp(n) for n in names]) if names else sa.false())
            values.update(zip(names, sorted(wanted), strict=True))
        if query.id_prefix is not None:  # compared as a substring: no LIKE pattern to escape
            where.append(sa.func.substr(c.id, 1, len(query.id_prefix)) == bp("prefix"))
            values["prefix"] = query.id_prefix
        if query.parent_id is not None:
            where.append(c.parent_id == bp("parent"))
            values["parent"] = query.parent_id
        if query.created_after is not None:
            where.append(c.created_at > bp("after"))
            values["after"] = query.created_after
        if query.created_before is not None:
            where.append(c.created_at < bp("before"))
            values["before"] = query.created_before
        if query.older_than is not None:
            at, run_id = query.older_than
            where.append(
                sa.or_(
                    c.created_at < bp("cur_at"),
                    sa.and_(c.created_at == bp("cur_at"), c.id < bp("cur_id")),
                )
            )
            values["cur_at"], values["cur_id"] = at, run_id
        statement = (
            sa.select(*p.run_columns)
            .where(sa.and_(sa.true(), *where))
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(bp("lim", type_=sa.Integer))
        )
        return Compiled(statement, p.dialect), values


def _sql_literal(value: str) -> sa.ColumnElement[str]:
    """A constant string written into the SQL text (values are durable's own enum strings)."""
    assert value.isidentifier(), value
    return sa.literal_column(f"'{value}'", sa.String)
