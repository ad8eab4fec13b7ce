"""The SQL schema of a durable store (tables, indexes, version, migrations) and how records map
to rows.

Tables, portable between SQLite and Postgres (no dialect-specific types):

* ``durable_runs``: one row per run; columns mirror `durable.store.RunRecord`.
* ``durable_steps``: one row per recorded step, keyed by ``(run_id, seq)``; columns mirror
  `durable.store.StepRecord`.
* ``durable_signals``: signals buffered for runs.
* ``durable_queues``: each queue's limits; ``durable_schedules``: cron schedules.
* ``durable_events``: each run's events (the latest value per key); ``durable_streams``: the
  entries of each run's streams, keyed by ``(run_id, key, position)``.
* ``durable_schema``: one row (``id = 1``) holding the schema ``version``.

Payloads are opaque bytes (``LargeBinary``), timestamps are float seconds since the epoch
(``Double``), statuses and kinds are their lower-case string values. Column names equal the
record field names, so rows convert to records positionally.

The statements run on these tables are `._statements`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy import BigInteger, Double, Integer, LargeBinary, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from durable.store import (
    RunRecord,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
    UnreadableRecord,
)

__all__ = [
    "ACTIVE_STATUSES",
    "RUN_FIELDS",
    "SCHEMA_VERSION",
    "STEP_FIELDS",
    "DurableModel",
    "EventRow",
    "QueueRow",
    "RunRow",
    "ScheduleRow",
    "SchemaRow",
    "SignalRow",
    "StepRow",
    "StreamRow",
    "events_table",
    "migration_ddl",
    "parked_statuses",
    "queues_table",
    "run_from_row",
    "run_values",
    "schedules_table",
    "signals_table",
    "step_from_row",
    "step_values",
    "streams_table",
    "tables",
    "unknown_status_text",
]

SCHEMA_VERSION = 8
"""The schema version this code writes and understands.

History: 1 — runs, steps; 2 — runs gain ``cancel_requested``, ``cancelled_seq``,
``rollback_requested``, ``wake_at`` and ``pause_requested`` (sagas, parking, pause), and the
``durable_signals`` table; 3 — the claim and prune indexes, and on Postgres
``durable_signals.id`` an identity column (an application role needs no sequence privilege);
4 — runs gain ``code_version`` (the workflow code they started under); 5 — runs gain
``recoveries`` and an index on ``parent_id`` (prune keeps the children of unfinished runs),
signals gain ``idempotency_key`` (unique per run); 6 — runs gain ``trace_context`` (the
OpenTelemetry context of the code that started them); 7 — runs gain ``queue``, ``queue_key``,
``priority``, ``started_at``, ``deadline`` and ``generation`` (queues, deadlines,
continue-as-new) with the queue indexes, the claim index holds only runs without a queue,
the prune index covers the new status ``timed_out``,
and the ``durable_queues`` and ``durable_schedules`` tables; 8 — the ``durable_events`` and
``durable_streams`` tables (``durable.set_event``, ``durable.stream_write``).
`migration_ddl` upgrades an older database in place.
"""

ACTIVE_STATUSES: tuple[RunStatus, ...] = tuple(
    s for s in RunStatus if not s.finished and s is not RunStatus.BLOCKED
)
"""Statuses of runs a worker may have to execute now or later. The claim index holds only these
rows, so claiming costs the same with a million finished runs in the table."""

_FALSE = {"sqlite": "0", "postgresql": "false"}


def migration_ddl(version: int, dialect: Dialect, existing: frozenset[str]) -> list[str]:
    """The DDL that takes a database of schema ``version`` to ``version + 1``, given the
    names of the ``existing`` tables.

    Tables added by a version are created by ``create_all`` after the DDL runs (whole, with
    the columns and indexes later versions gave them), so no DDL touches a missing table.
    """
    if version == 1:
        flag = f"BOOLEAN NOT NULL DEFAULT {_FALSE[dialect.name]}"
        return [
            f"ALTER TABLE durable_runs ADD COLUMN cancel_requested {flag}",
            "ALTER TABLE durable_runs ADD COLUMN cancelled_seq INTEGER",
            f"ALTER TABLE durable_runs ADD COLUMN rollback_requested {flag}",
            "ALTER TABLE durable_runs ADD COLUMN wake_at DOUBLE PRECISION",
            f"ALTER TABLE durable_runs ADD COLUMN pause_requested {flag}",
        ]
    if version == 2:
        # The claim index is created by version 7's step (its predicate names a v7 column).
        ddl = [
            str(sa.schema.CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
            for index in _table(RunRow).indexes
            if index.name == PRUNE_INDEX
        ]
        if dialect.name == "postgresql":
            ddl += [
                "ALTER TABLE durable_signals ALTER COLUMN id DROP DEFAULT",
                "DROP SEQUENCE IF EXISTS durable_signals_id_seq",
                "ALTER TABLE durable_signals ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY",
                "SELECT setval(pg_get_serial_sequence('durable_signals', 'id'), "
                "COALESCE(MAX(id), 0) + 1, false) FROM durable_signals",
            ]
        return ddl
    if version == 3:
        return ["ALTER TABLE durable_runs ADD COLUMN code_version VARCHAR"]
    if version == 4:
        indexes = [index for index in _table(RunRow).indexes if index.name == PARENT_INDEX]
        ddl = ["ALTER TABLE durable_runs ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0"]
        if SignalRow.__tablename__ in existing:
            ddl.append("ALTER TABLE durable_signals ADD COLUMN idempotency_key VARCHAR")
            indexes += [i for i in _table(SignalRow).indexes if i.name == SIGNAL_KEY_INDEX]
        return ddl + [
            str(sa.schema.CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
            for index in indexes
        ]
    if version == 5:
        return ["ALTER TABLE durable_runs ADD COLUMN trace_context VARCHAR"]
    if version == 6:
        ddl = [
            "ALTER TABLE durable_runs ADD COLUMN queue VARCHAR",
            "ALTER TABLE durable_runs ADD COLUMN queue_key VARCHAR",
            "ALTER TABLE durable_runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE durable_runs ADD COLUMN started_at DOUBLE PRECISION",
            "ALTER TABLE durable_runs ADD COLUMN deadline DOUBLE PRECISION",
            "ALTER TABLE durable_runs ADD COLUMN generation INTEGER NOT NULL DEFAULT 1",
        ]
        # ``timed_out`` is a new finished status: the prune index's predicate names them all;
        # the claim index now holds only runs without a queue.
        ddl += [f"DROP INDEX IF EXISTS {PRUNE_INDEX}", f"DROP INDEX IF EXISTS {CLAIM_INDEX}"]
        return ddl + [
            str(sa.schema.CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
            for index in _table(RunRow).indexes
            if index.name
            in (
                CLAIM_INDEX,
                PRUNE_INDEX,
                QUEUE_CLAIM_INDEX,
                QUEUE_LEASED_INDEX,
                QUEUE_STARTED_INDEX,
            )
        ]
    if version == 7:
        return []  # new tables only: ``create_all`` makes them
    raise ValueError(f"no migration from schema version {version}")


CLAIM_INDEX = "durable_runs_claim"
PRUNE_INDEX = "durable_runs_prune"
PARENT_INDEX = "durable_runs_parent"
SIGNAL_KEY_INDEX = "durable_signals_key"
QUEUE_CLAIM_INDEX = "durable_runs_queue_claim"
QUEUE_LEASED_INDEX = "durable_runs_queue_leased"
QUEUE_STARTED_INDEX = "durable_runs_queue_started"


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
    code_version: str | None = None
    recoveries: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    trace_context: str | None = None
    queue: str | None = None
    queue_key: str | None = None
    priority: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    started_at: float | None = Field(default=None, sa_type=Double)
    deadline: float | None = Field(default=None, sa_type=Double)
    generation: int = Field(default=1, sa_column_kwargs={"server_default": "1"})


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
            BigInteger().with_variant(Integer(), "sqlite"),
            sa.Identity(),  # Postgres: no sequence privilege needed to insert; SQLite: rowid
            primary_key=True,
            autoincrement=True,
        ),
    )
    run_id: str = Field(index=True)
    name: str
    payload: bytes = Field(sa_type=LargeBinary)
    sent_at: float = Field(sa_type=Double)
    consumed_seq: int | None = None
    idempotency_key: str | None = None


class QueueRow(DurableModel, table=True):
    """A row of ``durable_queues``: the limits of one `durable.Queue`, as its latest
    declaration set them (see `durable.store.QueueSettings`)."""

    __tablename__ = "durable_queues"

    name: str = Field(primary_key=True)
    concurrency: int | None = None
    per_key_concurrency: int | None = None
    rate_count: int | None = None
    rate_period: float | None = Field(default=None, sa_type=Double)
    updated_at: float = Field(sa_type=Double)


class ScheduleRow(DurableModel, table=True):
    """A row of ``durable_schedules``: one cron schedule (see
    `durable.store.ScheduleRecord`)."""

    __tablename__ = "durable_schedules"

    name: str = Field(primary_key=True)
    workflow: str
    cron: str
    timezone: str
    args: bytes = Field(sa_type=LargeBinary)
    catch_up: str
    queue: str | None = None
    paused: bool = False
    next_tick: float | None = Field(default=None, sa_type=Double)
    last_tick: float | None = Field(default=None, sa_type=Double)
    created_at: float = Field(sa_type=Double)
    updated_at: float = Field(sa_type=Double)


class EventRow(DurableModel, table=True):
    """A row of ``durable_events``: the latest value a run set for one event key
    (``durable.set_event``)."""

    __tablename__ = "durable_events"

    run_id: str = Field(primary_key=True)
    key: str = Field(primary_key=True)
    value: bytes = Field(sa_type=LargeBinary)
    updated_at: float = Field(sa_type=Double)


class StreamRow(DurableModel, table=True):
    """A row of ``durable_streams``: one entry of a run's stream (see
    `durable.store.StreamEntry`); key ``(run_id, key, position)``."""

    __tablename__ = "durable_streams"

    run_id: str = Field(primary_key=True)
    key: str = Field(primary_key=True)
    position: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    kind: str
    value: bytes | None = Field(default=None, sa_type=LargeBinary)
    generation: int
    seq: int
    attempt: int | None = None
    withdrawn: bool = False
    written_at: float = Field(sa_type=Double)


class SchemaRow(DurableModel, table=True):
    """The single row of ``durable_schema``: which schema version wrote the database."""

    __tablename__ = "durable_schema"

    id: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    version: int = Field(sa_type=Integer)


def _indexes() -> None:
    c = _table(RunRow).c
    active = c.status.in_([s.value for s in ACTIVE_STATUSES])
    finished = c.status.in_([s.value for s in RunStatus if s.finished])
    # Claiming walks this index in due order and stops after `limit` rows (or finds nothing
    # without touching finished runs); the query repeats the predicate so planners use it.
    unqueued = sa.and_(active, c.queue.is_(None))  # queued runs: the queue claim index
    sa.Index(
        CLAIM_INDEX,
        sa.func.coalesce(c.wake_at, c.created_at),
        c.id,
        postgresql_where=unqueued,
        sqlite_where=unqueued,
    )
    sa.Index(PRUNE_INDEX, c.updated_at, postgresql_where=finished, sqlite_where=finished)
    sa.Index(PARENT_INDEX, c.parent_id)
    # A queue's runnable runs in claim order (`_rules.queue_order`), its runs executing now
    # (counted against its limits) and its runs started lately (counted by its rate limit).
    queued = sa.and_(active, c.queue.is_not(None))
    sa.Index(
        QUEUE_CLAIM_INDEX,
        c.queue,
        c.priority,
        sa.func.coalesce(c.wake_at, c.created_at),
        c.id,
        postgresql_where=queued,
        sqlite_where=queued,
    )
    leased = sa.and_(c.queue.is_not(None), c.lease_owner.is_not(None))
    sa.Index(QUEUE_LEASED_INDEX, c.queue, c.queue_key, postgresql_where=leased, sqlite_where=leased)
    started = sa.and_(c.queue.is_not(None), c.started_at.is_not(None))
    sa.Index(
        QUEUE_STARTED_INDEX, c.queue, c.started_at, postgresql_where=started, sqlite_where=started
    )
    sig = _table(SignalRow).c
    sa.Index(SIGNAL_KEY_INDEX, sig.run_id, sig.idempotency_key, unique=True)


def tables() -> tuple[Table, Table, Table]:
    """The Core tables ``(runs, steps, schema)`` behind the models."""
    return (_table(RunRow), _table(StepRow), _table(SchemaRow))


def signals_table() -> Table:
    """The Core table behind `SignalRow`."""
    return _table(SignalRow)


def queues_table() -> Table:
    """The Core table behind `QueueRow`."""
    return _table(QueueRow)


def schedules_table() -> Table:
    """The Core table behind `ScheduleRow`."""
    return _table(ScheduleRow)


def events_table() -> Table:
    """The Core table behind `EventRow`."""
    return _table(EventRow)


def streams_table() -> Table:
    """The Core table behind `StreamRow`."""
    return _table(StreamRow)


def _table(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


_indexes()

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


_KNOWN_STATUSES = frozenset(s.value for s in RunStatus)


def unknown_status_text(run_id: str, status: object) -> str:
    """The ``error_text`` of a run whose stored status this version does not know."""
    return str(UnreadableRecord(run_id, None, "status", status))


def run_from_row(row: Sequence[Any]) -> RunRecord:
    """Build a `RunRecord` from a row selected in `RUN_FIELDS` order (SQLite returns its
    booleans as 0 / 1). A status this version does not know reads as ``blocked``, with an
    ``error_text`` that names it: such a run is never claimed or acquired."""
    if row[2] not in _KNOWN_STATUSES:
        text = unknown_status_text(row[0], row[2])
        row = [*row]
        row[2], row[RUN_FIELDS.index("error_text")] = RunStatus.BLOCKED, text
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
    """Build a `StepRecord` from a row selected in `STEP_FIELDS` order.

    Raises:
        UnreadableRecord: the row's kind or status is not one this version knows.
    """
    try:
        kind = StepKind(row[2])
    except ValueError:
        raise UnreadableRecord(row[0], row[1], "kind", row[2]) from None
    try:
        status = StepStatus(row[4])
    except ValueError:
        raise UnreadableRecord(row[0], row[1], "status", row[4]) from None
    return StepRecord(row[0], row[1], kind, row[3], status, *row[5:])


def parked_statuses() -> tuple[str, ...]:
    """The statuses of a parked run (waiting for a timer or a signal, executed by nobody)."""
    return (RunStatus.SLEEPING.value, RunStatus.WAITING.value)
