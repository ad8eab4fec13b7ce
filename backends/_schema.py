"""The SQL schema of a durable store, the statements run on it, and how records map to rows.

Three tables, portable between SQLite and Postgres (no dialect-specific types):

* ``durable_runs``: one row per run; columns mirror `durable.store.RunRecord`.
* ``durable_steps``: one row per recorded step, keyed by ``(run_id, seq)``; columns mirror
  `durable.store.StepRecord`.
* ``durable_schema``: one row (``id = 1``) holding the schema ``version``.

Payloads are opaque bytes (``LargeBinary``), timestamps are float seconds since the epoch
(``Double``), statuses and kinds are their lower-case string values. Column names equal the
record field names, so rows convert to records positionally.

`Statements` builds every statement `durable.backends.SQLStore` runs as a SQLAlchemy Core
statement over these tables and compiles it once for the store's dialect (`Compiled`), so the
hot path hands ready SQL text to the DBAPI cursor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy import BigInteger, Double, Integer, LargeBinary, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import registry
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement
from sqlmodel import Field, SQLModel

from durable.store import RunRecord, RunStatus, StepKind, StepRecord, StepStatus, StoreError

__all__ = [
    "MIGRATIONS",
    "RUN_FIELDS",
    "SCHEMA_VERSION",
    "STEP_FIELDS",
    "Compiled",
    "DurableModel",
    "RunRow",
    "SchemaRow",
    "SignalRow",
    "Statements",
    "StepRow",
    "check_step_batch",
    "run_from_row",
    "run_values",
    "signals_table",
    "step_from_row",
    "step_values",
    "tables",
]

SCHEMA_VERSION = 2
"""The schema version this code writes and understands.

History: 1 — runs, steps; 2 — runs gain ``cancel_requested``, ``cancelled_seq`` and
``rollback_requested`` (sagas), and the ``durable_signals`` table. `MIGRATIONS` upgrades an
older database in place (new tables are created by ``create_all``).
"""

MIGRATIONS: dict[int, tuple[str, ...]] = {
    # from version 1 to 2; {false} is the dialect's boolean false literal
    1: (
        "ALTER TABLE durable_runs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT {false}",
        "ALTER TABLE durable_runs ADD COLUMN cancelled_seq INTEGER",
        "ALTER TABLE durable_runs ADD COLUMN rollback_requested BOOLEAN NOT NULL DEFAULT {false}",
        "ALTER TABLE durable_runs ADD COLUMN wake_at DOUBLE PRECISION",
        "ALTER TABLE durable_runs ADD COLUMN pause_requested BOOLEAN NOT NULL DEFAULT {false}",
    ),
}
"""DDL that takes a database from version N to N + 1, per N."""


class DurableModel(SQLModel, registry=registry()):
    """Base of the table models, with its own ``metadata``.

    Keeping durable's tables out of the global ``SQLModel.metadata`` means an application's
    ``SQLModel.metadata.create_all(engine)`` never creates them in its database, and
    ``DurableModel.metadata.create_all`` creates exactly durable's tables.
    """


class RunRow(DurableModel, table=True):
    """A row of ``durable_runs`` (see `durable.store.RunRecord` for the meaning of each column)."""

    __tablename__ = "durable_runs"

    id: str = Field(primary_key=True)
    workflow: str
    status: str = Field(index=True)
    args: bytes = Field(sa_type=LargeBinary)
    created_at: float = Field(sa_type=Double)
    updated_at: float = Field(sa_type=Double)
    parent_id: str | None = None
    result: bytes | None = Field(default=None, sa_type=LargeBinary)
    error: bytes | None = Field(default=None, sa_type=LargeBinary)
    error_text: str | None = None
    lease_owner: str | None = None
    lease_host: str | None = None
    lease_pid: int | None = Field(default=None, sa_type=BigInteger)
    lease_token: int = Field(default=0, sa_type=BigInteger)
    lease_expires_at: float | None = Field(default=None, sa_type=Double)
    cancel_requested: bool = False
    cancelled_seq: int | None = None
    rollback_requested: bool = False
    wake_at: float | None = Field(default=None, sa_type=Double, index=True)
    pause_requested: bool = False


class StepRow(DurableModel, table=True):
    """A row of ``durable_steps`` (see `durable.store.StepRecord`); key ``(run_id, seq)``."""

    __tablename__ = "durable_steps"

    run_id: str = Field(primary_key=True)
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    kind: str
    name: str
    status: str
    attempts: int
    started_at: float = Field(sa_type=Double)
    finished_at: float = Field(sa_type=Double)
    result: bytes | None = Field(default=None, sa_type=LargeBinary)
    error: bytes | None = Field(default=None, sa_type=LargeBinary)
    location: str | None = None


class SignalRow(DurableModel, table=True):
    """A row of ``durable_signals``: a signal sent to a run, buffered until a wait consumes it
    (``consumed_seq`` is the step that did). ``id`` orders the signals of a run."""

    __tablename__ = "durable_signals"

    # SQLite auto-numbers only an INTEGER PRIMARY KEY (the rowid), Postgres a BIGINT identity.
    id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    run_id: str = Field(index=True)
    name: str
    payload: bytes = Field(sa_type=LargeBinary)
    sent_at: float = Field(sa_type=Double)
    consumed_seq: int | None = None


class SchemaRow(DurableModel, table=True):
    """The single row of ``durable_schema``: which schema version wrote the database."""

    __tablename__ = "durable_schema"

    id: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    version: int = Field(sa_type=Integer)


def tables() -> tuple[Table, Table, Table]:
    """The Core tables ``(runs, steps, schema)`` behind the models."""
    return (_table(RunRow), _table(StepRow), _table(SchemaRow))


def signals_table() -> Table:
    """The Core table behind `SignalRow`."""
    return _table(SignalRow)


def _table(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


RUN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RunRecord))
"""RunRecord field names in order; equal to the ``durable_runs`` column names."""

STEP_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(StepRecord))
"""StepRecord field names in order; equal to the ``durable_steps`` column names."""


def run_values(run: RunRecord) -> dict[str, Any]:
    """The column values of ``run``, statuses as plain strings."""
    values = {name: getattr(run, name) for name in RUN_FIELDS}
    values["status"] = str(run.status)
    return values


def step_values(step: StepRecord) -> dict[str, Any]:
    """The column values of ``step``, kind and status as plain strings."""
    return {
        "run_id": step.run_id,
        "seq": step.seq,
        "kind": str(step.kind),
        "name": step.name,
        "status": str(step.status),
        "attempts": step.attempts,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "result": step.result,
        "error": step.error,
        "location": step.location,
    }


def run_from_row(row: Sequence[Any]) -> RunRecord:
    """Build a `RunRecord` from a row selected in `RUN_FIELDS` order (SQLite returns its
    booleans as 0 / 1)."""
    run = RunRecord(row[0], row[1], RunStatus(row[2]), *row[3:])
    flags = (run.cancel_requested, run.rollback_requested, run.pause_requested)
    if any(type(flag) is not bool for flag in flags):
        run = replace(
            run,
            cancel_requested=bool(run.cancel_requested),
            rollback_requested=bool(run.rollback_requested),
            pause_requested=bool(run.pause_requested),
        )
    return run


def step_from_row(row: Sequence[Any]) -> StepRecord:
    """Build a `StepRecord` from a row selected in `STEP_FIELDS` order."""
    return StepRecord(row[0], row[1], StepKind(row[2]), row[3], StepStatus(row[4]), *row[5:])


def check_step_batch(run_id: str, steps: Sequence[StepRecord]) -> None:
    """Refuse a batch that names another run or repeats a step number, before any write.

    Raises:
        StoreError: a step belongs to another run, or two steps share a ``seq``.
    """
    seen: set[int] = set()
    for step in steps:
        if step.run_id != run_id:
            raise StoreError(
                f"cannot commit step {step.seq} of run {step.run_id!r} under the lease of run "
                f"{run_id!r}; nothing was written"
            )
        if step.seq in seen:
            raise StoreError(
                f"cannot commit steps to run {run_id!r}: step {step.seq} appears twice in one "
                "batch; nothing was written"
            )
        seen.add(step.seq)


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


class Statements:
    """Every statement `durable.backends.SQLStore` runs, compiled once for one dialect.

    Args:
        dialect: the SQLAlchemy dialect of the store's engine.
    """

    def __init__(self, dialect: Dialect) -> None:
        runs, steps, _ = tables()
        c = runs.c
        bp = sa.bindparam
        run_columns = [c[name] for name in RUN_FIELDS]
        by_id = c.id == bp("rid")
        fenced = sa.and_(by_id, c.lease_token == bp("token"))
        finished = [sa.literal(s.value) for s in RunStatus if s.finished]
        released = {
            "lease_owner": sa.null(),
            "lease_host": sa.null(),
            "lease_pid": sa.null(),
            "lease_expires_at": sa.null(),
        }
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
        oldest_first = (c.created_at, c.id)
        free = sa.or_(
            c.lease_owner.is_(None),
            c.lease_expires_at <= bp("now"),
            c.lease_token == bp("takeover"),
        )

        def comp(statement: ClauseElement) -> Compiled:
            return Compiled(statement, dialect)

        self.insert_run = comp(runs.insert())
        self.get_run = comp(sa.select(*run_columns).where(by_id))
        self.list_all = comp(
            sa.select(*run_columns).order_by(*oldest_first).limit(bp("lim", type_=sa.Integer))
        )
        self.list_status = comp(
            sa.select(*run_columns)
            .where(c.status == bp("filter_status"))
            .order_by(*oldest_first)
            .limit(bp("lim", type_=sa.Integer))
        )
        self.acquire = comp(
            runs.update()
            .where(by_id, c.status.not_in(finished), free)
            .values(
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
        parked = [sa.literal(RunStatus.SLEEPING.value), sa.literal(RunStatus.WAITING.value)]
        not_claimable = [*finished, sa.literal(RunStatus.BLOCKED.value)]
        runnable = sa.or_(
            sa.and_(c.status == sa.literal(RunStatus.PENDING.value), c.lease_owner.is_(None)),
            sa.and_(c.status.in_(parked), c.lease_owner.is_(None), c.wake_at <= bp("now")),
            sa.and_(
                c.status.not_in(not_claimable),
                c.lease_owner.is_not(None),
                c.lease_expires_at <= bp("now"),
            ),
        )
        self._dialect = dialect
        self._claimable = (
            sa.select(*run_columns)
            .where(runnable)
            .order_by(sa.func.coalesce(c.wake_at, c.created_at), c.id)
            .limit(bp("lim", type_=sa.Integer))
            .with_for_update(skip_locked=True)
        )
        self._claimable_for: dict[tuple[str, ...], Compiled] = {}
        self.wake_parked = comp(
            runs.update()
            .where(by_id, c.status.in_(parked), c.lease_owner.is_(None))
            .values(wake_at=bp("now"))
        )
        self.wake_waiting = comp(
            runs.update()
            .where(by_id, c.status == sa.literal(RunStatus.WAITING.value), c.lease_owner.is_(None))
            .values(wake_at=bp("now"))
        )
        self.token = comp(sa.select(c.lease_token).where(by_id))
        self.renew = comp(runs.update().where(fenced).values(lease_expires_at=bp("expires")))
        self.release = comp(runs.update().where(fenced).values(**released))
        # Steps without a run update: check the token under a row lock (Postgres FOR SHARE;
        # SQLite's BEGIN IMMEDIATE already holds the database's write lock) instead of
        # rewriting the run row, so a one-step commit writes one row.
        self.check_token = comp(sa.select(c.lease_token).where(by_id).with_for_update(read=True))
        self.update = comp(runs.update().where(fenced).values(**changes))
        self.update_release = comp(runs.update().where(fenced).values(**changes, **released))
        self.insert_step = comp(steps.insert())
        sc = steps.c
        self.replace_step = comp(
            steps.update()
            .where(
                sc.run_id == bp("rid"),
                sc.seq == bp("seq"),
                sc.status == sa.literal(StepStatus.STARTED.value),
            )
            .values(
                status=bp("status"),
                attempts=bp("attempts"),
                finished_at=bp("finished_at"),
                result=bp("result", type_=sa.LargeBinary),
                error=bp("error", type_=sa.LargeBinary),
            )
        )
        sig = signals_table().c
        self.insert_signal = comp(
            signals_table()
            .insert()
            .values(
                run_id=bp("rid"),
                name=bp("name"),
                payload=bp("payload", type_=sa.LargeBinary),
                sent_at=bp("now"),
            )
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
        self.request_cancel = comp(
            runs.update()
            .where(by_id, c.status.not_in(finished))
            .values(
                cancel_requested=sa.true(),
                updated_at=bp("now"),
                # a parked run is woken at once, to be cancelled
                wake_at=sa.case(
                    (sa.and_(c.status.in_(parked), c.lease_owner.is_(None)), bp("now")),
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
        self.load_steps = comp(
            sa.select(*[steps.c[name] for name in STEP_FIELDS])
            .where(steps.c.run_id == bp("rid"))
            .order_by(steps.c.seq)
        )

    def claimable(self, workflows: tuple[str, ...]) -> Compiled:
        """The claim query for these workflow names (compiled once per set of names)."""
        compiled = self._claimable_for.get(workflows)
        if compiled is None:
            runs, _, _ = tables()
            names: list[sa.BindParameter[str]] = [
                sa.bindparam(f"wf{i}", value=name, type_=sa.String)
                for i, name in enumerate(workflows)
            ]
            statement = self._claimable.where(runs.c.workflow.in_(names))
            compiled = Compiled(statement, self._dialect)
            self._claimable_for[workflows] = compiled
        return compiled
