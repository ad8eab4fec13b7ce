"""The Postgres driver's limits: every column type of durable's tables has a decoder, a query
that gets no reply is given up, a full pool says so (`PoolTimeout`), and waiting for a
connection can be cancelled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import psycopg
import pytest

import durable
from durable.backends import SQLStore


@pytest.fixture
async def pg(fresh_postgres_url: str) -> AsyncIterator[SQLStore]:
    async with SQLStore(fresh_postgres_url, pool_size=1, reconnect_timeout=1.0) as store:
        yield store


def test_every_column_type_of_the_schema_has_a_decoder(fresh_postgres_url: str) -> None:
    from durable.backends._pg_conn import DECODERS

    anyio.run(SQLStore(fresh_postgres_url).close)  # creates the schema

    with psycopg.connect(fresh_postgres_url) as conn:
        rows = conn.execute(
            """
            SELECT c.relname, a.attname, a.atttypid::int, format_type(a.atttypid, NULL)
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relnamespace = current_schema()::regnamespace
              AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
            """
        ).fetchall()
    assert {r[0] for r in rows} >= {"durable_runs", "durable_steps", "durable_signals"}
    missing = [f"{t}.{c} ({name}, oid {oid})" for t, c, oid, name in rows if oid not in DECODERS]
    assert not missing, f"no decoder for: {missing}"


async def test_a_query_without_a_reply_is_given_up(
    pg: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("durable.backends._pg_conn.QUERY_TIMEOUT", 0.3)

    async def stall(cur: Any) -> None:
        await cur.execute("SELECT pg_sleep(30)")

    with anyio.fail_after(20):  # a hang guard: the query itself would take 30 s
        with pytest.raises(durable.StoreError, match="no reply"):
            await pg._calls.call(False, stall)
    assert await pg.get_run("nothing") is None  # the store goes on working


async def test_a_full_pool_raises_pool_timeout_and_the_wait_can_be_cancelled(
    pg: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = pg._runner._pool  # type: ignore[attr-defined]
    held = [await pool.take(pg.url) for _ in range(2)]  # pool_size=1: at most 2 connections
    try:
        with anyio.move_on_after(0.2) as waiting:
            await pg.get_run("x")
        assert waiting.cancelled_caught  # cancelled while it waited for a connection
        monkeypatch.setattr("durable.backends._pg_conn.POOL_TIMEOUT", 0.2)
        with pytest.raises(durable.PoolTimeout, match="no free connection"):
            await pg.get_run("x")
    finally:
        for conn in held:
            pool.give(conn)
    assert await pg.get_run("x") is None


def _pool(url: str, size: int) -> Any:
    from durable.backends._pg_conn import PgPool

    return PgPool(url, size, size)


async def _prepared_on_server(conn: Any) -> set[str]:
    result = await conn.query("SELECT statement FROM pg_prepared_statements")
    return {result.get_value(row, 0).decode() for row in range(result.ntuples)}


async def test_a_statement_sent_again_is_prepared_and_answers_the_same(
    fresh_postgres_url: str,
) -> None:
    """The first time a statement with parameters is sent unnamed; from the second on it is
    prepared on the connection and sent by name, with the same results."""
    pool = _pool(fresh_postgres_url, 1)
    conn = await pool.take("test")
    try:
        sql = "SELECT $1::int + 1"
        answers = []
        for k in range(4):
            result = await conn.query(sql, (k,))
            answers.append(int.from_bytes(result.get_value(0, 0), "big"))  # binary int4
            if k == 0:
                assert sql not in await _prepared_on_server(conn)
        assert answers == [1, 2, 3, 4]
        assert sql in await _prepared_on_server(conn)
        parameterless = "SELECT 1"
        for _ in range(3):
            await conn.query(parameterless)
        assert parameterless not in await _prepared_on_server(conn)
    finally:
        pool.give(conn)
        pool.closed = True
        pool.drop_idle()


async def test_a_pipeline_commits_each_transaction_alone(fresh_postgres_url: str) -> None:
    """Two transactions in one pipeline: the first has a failing statement, so none of it is
    written (and the statement after the failure is reported not run); the second commits.
    The statements to prepare are prepared all the same, and the connection stays usable."""
    pool = _pool(fresh_postgres_url, 1)
    conn = await pool.take("test")
    try:
        await conn.query("CREATE TABLE piped (k int PRIMARY KEY)")
        insert = "INSERT INTO piped VALUES ($1)"
        await conn.query(insert, (0,))  # sent once: the pipeline prepares it
        outcomes = await conn.pipeline(
            [[(insert, (1,)), (insert, (0,)), (insert, (2,))], [(insert, (3,))]]
        )
        first, second = outcomes
        assert not isinstance(first[0], psycopg.Error)
        assert isinstance(first[1], psycopg.errors.UniqueViolation)
        assert isinstance(first[2], psycopg.Error) and "not run" in str(first[2])
        assert [r.command_tuples for r in second] == [1]
        rows = await conn.query("SELECT k FROM piped ORDER BY k")
        keys = [int.from_bytes(rows.get_value(r, 0), "big") for r in range(rows.ntuples)]
        assert keys == [0, 3]
        assert insert in await _prepared_on_server(conn)
        assert conn.idle and not conn.broken
    finally:
        pool.give(conn)
        pool.closed = True
        pool.drop_idle()


async def test_a_returned_connection_goes_to_the_longest_waiting_task(
    fresh_postgres_url: str,
) -> None:
    """First come, first served; a waiter that is cancelled passes its turn on."""
    pool = _pool(fresh_postgres_url, 1)
    held = await pool.take("test")
    served: list[str] = []
    scopes: dict[str, anyio.CancelScope] = {}

    async def wait(name: str) -> None:
        with anyio.CancelScope() as scope:
            scopes[name] = scope
            conn = await pool.take("test")
            served.append(name)
            await anyio.lowlevel.checkpoint()
            pool.give(conn)

    try:
        async with anyio.create_task_group() as tg:
            for name in ("a", "b", "c", "d"):
                tg.start_soon(wait, name)
                await anyio.wait_all_tasks_blocked()
            scopes["b"].cancel()
            await anyio.wait_all_tasks_blocked()
            pool.give(held)
        assert served == ["a", "c", "d"]
    finally:
        pool.closed = True
        pool.drop_idle()


@pytest.mark.parametrize("how", ["default", "argument", "url"])
async def test_prepared_statements_can_be_turned_off(fresh_postgres_url: str, how: str) -> None:
    """``SQLStore(prepared_statements=False)``, or ``?prepared_statements=false`` in the URL
    (for a pooler in transaction mode that does not keep them): the store works the same and
    its connections prepare nothing."""
    from durable.store import LeaseOwner, RunRecord, RunStatus, StepKind, StepRecord, StepStatus

    prepared = how == "default"
    url, options = fresh_postgres_url, {}
    if how == "argument":
        options["prepared_statements"] = False
    elif how == "url":
        url += ("&" if "?" in url else "?") + "prepared_statements=false"
    async with SQLStore(url, pool_size=1, **options) as store:
        for k in range(3):
            run = RunRecord(
                id=f"p{k}", workflow="w", status=RunStatus.PENDING, args=b"x",
                created_at=1.0, updated_at=1.0,
            )  # fmt: skip
            await store.create_run(run)
            lease = await store.acquire_lease(run.id, LeaseOwner("o", "h", 1), now=1, duration=60)
            assert lease is not None
            step = StepRecord(
                run.id, 1, StepKind.ACTIVITY, "a", StepStatus.COMPLETED, 1, 1.0, 1.0, result=b"r"
            )
            await store.commit(lease, [step], now=1.0)
            assert [s.seq for s in await store.load_steps(run.id)] == [1]
        pool = store._runner._pool  # type: ignore[attr-defined]
        conn = await pool.take("test")
        try:
            assert bool(await _prepared_on_server(conn)) is prepared
        finally:
            pool.give(conn)


def test_prepared_statements_must_be_a_bool(fresh_postgres_url: str) -> None:
    with pytest.raises(durable.StoreError, match="prepared_statements"):
        SQLStore(fresh_postgres_url, prepared_statements="no")  # type: ignore[arg-type]
    url = fresh_postgres_url + ("&" if "?" in fresh_postgres_url else "?")
    with pytest.raises(durable.StoreError, match=r"prepared_statements= must be true or false"):
        SQLStore(url + "prepared_statements=maybe")
