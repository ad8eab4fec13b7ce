"""The Postgres driver's limits: every column type of durable's tables has a decoder, a query
that gets no reply is given up, a full pool says so (`PoolTimeout`), and waiting for a
connection can be cancelled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
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
