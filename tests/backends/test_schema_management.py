"""Creating, upgrading and checking the schema (SQLite and Postgres), `durable db init`, the
claim index, and the least privileges an application role needs on Postgres."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

import durable
from durable.backends import SQLStore
from durable.backends._schema import (
    CLAIM_INDEX,
    PARENT_INDEX,
    PRUNE_INDEX,
    QUEUE_CLAIM_INDEX,
    QUEUE_LEASED_INDEX,
    QUEUE_STARTED_INDEX,
    SCHEMA_VERSION,
    SIGNAL_KEY_INDEX,
)
from durable.backends._statements import Statements


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))


def _downgrade_to_version_2(url: str) -> None:
    """Make a database of the current version exactly what version 2 wrote."""
    engine = _engine(url)
    with engine.begin() as conn:
        # from v7 (and the claim index, whose predicate names the queue column since v7)
        for index in (CLAIM_INDEX, QUEUE_CLAIM_INDEX, QUEUE_LEASED_INDEX, QUEUE_STARTED_INDEX):
            conn.exec_driver_sql(f"DROP INDEX {index}")
        for column in ("queue", "queue_key", "priority", "started_at", "deadline", "generation"):
            conn.exec_driver_sql(f"ALTER TABLE durable_runs DROP COLUMN {column}")
        conn.exec_driver_sql("DROP TABLE durable_queues")
        conn.exec_driver_sql("DROP TABLE durable_schedules")
        conn.exec_driver_sql("ALTER TABLE durable_runs DROP COLUMN trace_context")  # from v6
        conn.exec_driver_sql(f"DROP INDEX {PARENT_INDEX}")  # from v5
        conn.exec_driver_sql(f"DROP INDEX {SIGNAL_KEY_INDEX}")
        conn.exec_driver_sql("ALTER TABLE durable_runs DROP COLUMN recoveries")
        conn.exec_driver_sql("ALTER TABLE durable_signals DROP COLUMN idempotency_key")
        conn.exec_driver_sql("ALTER TABLE durable_runs DROP COLUMN code_version")  # from v4
        conn.exec_driver_sql(f"DROP INDEX {PRUNE_INDEX}")
        if engine.dialect.name == "postgresql":  # version 2 had a serial (sequence) id
            conn.exec_driver_sql("ALTER TABLE durable_signals ALTER COLUMN id DROP IDENTITY")
            conn.exec_driver_sql(
                "CREATE SEQUENCE durable_signals_id_seq OWNED BY durable_signals.id"
            )
            conn.exec_driver_sql(
                "ALTER TABLE durable_signals ALTER COLUMN id "
                "SET DEFAULT nextval('durable_signals_id_seq')"
            )
            conn.exec_driver_sql("SELECT setval('durable_signals_id_seq', 5)")
        conn.exec_driver_sql("UPDATE durable_schema SET version = 2")
    engine.dispose()


def _index_names(url: str) -> set[str]:
    engine = _engine(url)
    query = (
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        if engine.dialect.name == "postgresql"
        else "SELECT name FROM sqlite_master WHERE type = 'index'"
    )
    with engine.connect() as conn:
        names = {row[0] for row in conn.exec_driver_sql(query)}
    engine.dispose()
    return names


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


async def test_a_version_2_database_is_upgraded_in_place_keeping_its_runs(
    empty_url: str,
) -> None:
    async with SQLStore(empty_url) as store:
        assert store.schema_change == "created"
        await durable.start(_signalled, id="kept", store=store)
        await durable.signal("kept", "go", 1, store=store)
    _downgrade_to_version_2(empty_url)
    assert CLAIM_INDEX not in _index_names(empty_url)

    async with SQLStore(empty_url) as store:
        assert store.schema_change == "upgraded from version 2"
        assert {CLAIM_INDEX, PRUNE_INDEX, PARENT_INDEX, SIGNAL_KEY_INDEX} <= _index_names(empty_url)
        assert {QUEUE_CLAIM_INDEX, QUEUE_LEASED_INDEX, QUEUE_STARTED_INDEX} <= _index_names(
            empty_url
        )
        kept = await store.get_run("kept")
        assert kept is not None and (kept.queue, kept.priority, kept.generation) == (None, 0, 1)
        await durable.signal("kept", "go", 2, store=store)  # a new signal row gets an id
        assert await _with_worker(store, durable.get_handle("kept", store)) == 3
    async with SQLStore(empty_url) as store:
        assert store.schema_change == "current"


async def _with_worker(store: SQLStore, handle: durable.WorkflowHandle) -> object:
    """Run a worker until the run has finished; its result."""
    worker = durable.Worker(store, [_signalled, _least_privilege])
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(30):
            result = await handle.result()
        worker.stop()
    return result


@durable.workflow(name="schema_tests.signalled")
async def _signalled() -> int:
    first: int = await durable.wait_signal("go")
    second: int = await durable.wait_signal("go")
    return first + second


def test_durable_db_init_creates_the_schema_and_is_a_no_op_again(
    empty_url: str, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "durable", "db", "init", empty_url]
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert f"schema version {SCHEMA_VERSION} (created)" in outputs[0]
    assert f"schema version {SCHEMA_VERSION} (current)" in outputs[1]


def test_workers_starting_together_on_an_empty_postgres_database_create_it_once(
    fresh_postgres_url: str,
) -> None:
    changes: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def open_store() -> None:
        try:
            barrier.wait()
            store = SQLStore(fresh_postgres_url)
            changes.append(store.schema_change)
            anyio.run(store.close)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(changes) == ["created"] + ["current"] * 5


@pytest.fixture
def app_role(fresh_postgres_url: str) -> Iterator[str]:
    """A login role with only SELECT, INSERT, UPDATE and DELETE on the tables of a schema that
    `durable db init` created; yields the URL that logs in as that role."""

    async def init() -> None:
        await SQLStore(fresh_postgres_url).close()

    anyio.run(init)
    role = f"durable_app_{uuid.uuid4().hex[:8]}"
    engine = _engine(fresh_postgres_url)
    with engine.begin() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.exec_driver_sql(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}"
        )
    try:
        yield fresh_postgres_url.replace("postgresql://postgres@", f"postgresql://{role}@")
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        engine.dispose()


@durable.activity(name="schema_tests.add")
async def _add(a: int, b: int) -> int:
    return a + b


@durable.workflow(name="schema_tests.least_privilege")
async def _least_privilege() -> int:
    total = await _add(1, 2)
    total += await durable.wait_signal("more", timeout=30)
    return total


async def test_an_application_role_with_only_dml_privileges_runs_workflows(app_role: str) -> None:
    async with SQLStore(app_role) as store:
        assert store.schema_change == "current"  # no DDL was attempted
        handle = await durable.start(_least_privilege, id="priv", store=store)
        await durable.signal("priv", "more", 4, store=store)
        assert await _with_worker(store, handle) == 7
        assert await durable.prune(older_than=timedelta(0), store=store) == 1


def test_claiming_reads_only_unfinished_runs_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    anyio.run(SQLStore(url).close)
    dialect = sa.create_engine(url).dialect
    statements = Statements(dialect)
    with sqlite3.connect(tmp_path / "app.db") as db:
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) "
            "INSERT INTO durable_runs (id, workflow, status, args, created_at, updated_at, "
            "lease_token, cancel_requested, rollback_requested, pause_requested) "
            "SELECT 'done-' || i, 'app.a', 'completed', x'00', i, i, 1, 0, 0, 0 FROM n"
        )
        db.execute("ANALYZE")
        plans = []
        for statement in (statements.claimable(("app.a",)), statements.due(("app.a",))):
            args = statement.args({"now": 1.0, "lim": 10})
            rows = db.execute(f"EXPLAIN QUERY PLAN {statement.sql}", args).fetchall()
            plans.append(" / ".join(str(row[3]) for row in rows))
    db.close()
    # an index search on the unfinished statuses, or a walk of the partial claim index (which
    # holds only unfinished runs): never a scan of the table or of an index of all runs
    for plan in plans:
        assert (
            "SEARCH durable_runs USING INDEX" in plan
            or f"SCAN durable_runs USING INDEX {CLAIM_INDEX}" in plan
        ), plan
        assert "SCAN durable_runs" not in plan.replace(
            f"SCAN durable_runs USING INDEX {CLAIM_INDEX}", ""
        ), plan


def test_claiming_uses_the_claim_index_among_many_finished_runs_on_postgres(
    fresh_postgres_url: str,
) -> None:
    anyio.run(SQLStore(fresh_postgres_url).close)
    engine = _engine(fresh_postgres_url)
    statements = Statements(engine.dialect)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO durable_runs (id, workflow, status, args, created_at, updated_at, "
            "lease_token, cancel_requested, rollback_requested, pause_requested) "
            "SELECT 'done-' || i, 'app.a', 'completed', '\\x00', i, i, 1, false, false, false "
            "FROM generate_series(1, 200000) AS i"
        )
        conn.exec_driver_sql("ANALYZE durable_runs")
        raw = conn.connection.dbapi_connection
        assert raw is not None
        plans = []
        with raw.cursor() as cur:
            for statement in (statements.claimable(("app.a",)), statements.due(("app.a",))):
                cur.execute(f"EXPLAIN {statement.sql}", statement.args({"now": 1e12, "lim": 10}))
                plans.append("\n".join(row[0] for row in cur.fetchall()))
    engine.dispose()
    for plan in plans:
        assert CLAIM_INDEX in plan, plan
        assert "Seq Scan" not in plan, plan
