"""Postgres outages inside `SQLStore`: dropped connections are retried, and a commit whose
reply was lost is settled by re-reading, so nothing is lost or written twice.

A whole-server restart under load is in tests/test_scale_out.py; here the connections are
killed by the server (``pg_terminate_backend``), and the lost-reply case, which no real fault
produces on demand, is made by closing the connection right after the server committed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from support import require_postgres

from durable.backends import SQLStore
from durable.backends import _pg_conn as pg_conn
from durable.store import (
    LeaseOwner,
    RunRecord,
    RunStatus,
    RunUpdate,
    StepKind,
    StepRecord,
    StepStatus,
    StoreError,
)

OWNER = LeaseOwner("owner-a", "host-a", 101)


@pytest.fixture
def app_name() -> str:
    return f"durable_outage_{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def store(fresh_postgres_url: str, app_name: str) -> AsyncIterator[SQLStore]:
    async with SQLStore(f"{fresh_postgres_url}&application_name={app_name}") as s:
        yield s


def _terminate(url: str, app_name: str) -> int:
    """Kill every server process of the store's connections; how many there were."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app_name,),
        ).fetchall()
    return len(rows)


def _run(run_id: str) -> RunRecord:
    return RunRecord(run_id, "app.flow", RunStatus.PENDING, b"args", 1.0, 1.0)


def _step(run_id: str, seq: int) -> StepRecord:
    return StepRecord(
        run_id, seq, StepKind.ACTIVITY, "app.charge", StepStatus.COMPLETED, 1, 2.0, 2.0, b"ok"
    )


async def test_calls_survive_the_server_killing_every_connection(
    store: SQLStore, fresh_postgres_url: str, app_name: str
) -> None:
    await store.create_run(_run("r"))
    lease = await store.acquire_lease("r", OWNER, now=1.0, duration=30)
    assert lease is not None
    assert _terminate(fresh_postgres_url, app_name) >= 1
    await store.commit(lease, [_step("r", 1)], now=2.0)  # a dead pooled connection: retried
    assert _terminate(fresh_postgres_url, app_name) >= 1
    assert [s.seq for s in await store.load_steps("r")] == [1]
    assert _terminate(fresh_postgres_url, app_name) >= 1
    run = await store.get_run("r")
    assert run is not None and run.lease_token == lease.token


@pytest.fixture
def lose_reply(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bool], None]]:
    """``lose_reply(applied)`` makes the next ``COMMIT`` (or one-statement write outside a
    transaction, which is its own commit) break the connection: after the server committed
    (``applied=True``, the reply is lost) or before it was sent."""
    original = pg_conn.PgConnection.query
    armed: list[bool] = []

    async def query(self: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        commits = sql == "COMMIT" or (self.idle and sql.lstrip().startswith(("INSERT", "UPDATE")))
        if not armed or not commits:
            return await original(self, sql, params)
        applied = armed.pop()
        if applied:
            await original(self, sql, params)
        self.close()  # the socket is gone: the caller cannot tell what happened
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(pg_conn.PgConnection, "query", query)
    yield armed.append
    assert not armed, "the armed commit was never reached"


@pytest.mark.parametrize("applied", [True, False])
async def test_a_step_commit_with_a_lost_reply_is_written_exactly_once(
    store: SQLStore, lose_reply: Callable[[bool], None], applied: bool
) -> None:
    await store.create_run(_run("r"))
    lease = await store.acquire_lease("r", OWNER, now=1.0, duration=30)
    assert lease is not None
    lose_reply(applied)
    await store.commit(lease, [_step("r", 1), _step("r", 2)], now=2.0)
    assert [s.seq for s in await store.load_steps("r")] == [1, 2]

    lose_reply(applied)
    finish = RunUpdate(RunStatus.COMPLETED, result=b"done", release=True)
    await store.commit(lease, update=finish, now=3.0)
    run = await store.get_run("r")
    assert run is not None and (run.status, run.result, run.lease_owner) == (
        RunStatus.COMPLETED,
        b"done",
        None,
    )


@pytest.mark.parametrize("applied", [True, False])
async def test_create_acquire_and_signal_with_a_lost_reply_happen_once(
    store: SQLStore, lose_reply: Callable[[bool], None], applied: bool
) -> None:
    lose_reply(applied)
    stored, created = await store.create_run(_run("r"))
    assert created and stored.id == "r"  # our own insert, even when its reply was lost

    lose_reply(applied)
    lease = await store.acquire_lease("r", OWNER, now=1.0, duration=30)
    assert lease is not None and lease.token == 1  # one acquire: the token moved once

    lose_reply(applied)
    await store.send_signal("r", "approve", b"yes", now=5.0)
    step = StepRecord("r", 1, StepKind.SIGNAL, "approve", StepStatus.COMPLETED, 1, 6.0, 6.0)
    assert await store.receive_signal(lease, "approve", step, now=6.0) == b"yes"
    second = StepRecord("r", 2, StepKind.SIGNAL, "approve", StepStatus.COMPLETED, 1, 7.0, 7.0)
    assert await store.receive_signal(lease, "approve", second, now=7.0) is None  # sent once


async def test_a_claim_with_a_lost_reply_frees_what_it_took(
    store: SQLStore, lose_reply: Callable[[bool], None]
) -> None:
    for i in range(3):
        await store.create_run(_run(f"r{i}"))
    lose_reply(True)
    assert await store.claim(OWNER, now=2.0, duration=30, limit=10, workflows=["app.flow"]) == []
    # the runs it leased are claimable again at once, by anyone
    other = LeaseOwner("owner-b", "host-b", 202)
    again = await store.claim(other, now=2.0, duration=30, limit=10, workflows=["app.flow"])
    assert sorted(run.id for run, _ in again) == ["r0", "r1", "r2"]


@pytest.mark.parametrize("applied", [True, False])
async def test_a_continue_with_a_lost_reply_starts_one_generation(
    store: SQLStore, lose_reply: Callable[[bool], None], applied: bool
) -> None:
    await store.create_run(_run("r"))
    lease = await store.acquire_lease("r", OWNER, now=1.0, duration=30)
    assert lease is not None
    await store.commit(lease, [_step("r", 1)], now=2.0)
    lose_reply(applied)
    run = await store.continue_run(lease, b"next", now=3.0)
    assert (run.generation, run.args, run.lease_token) == (2, b"next", lease.token)
    assert run == await store.get_run("r")
    assert await store.load_steps("r") == []


@pytest.fixture
def own_database() -> Iterator[str]:
    """A database of this test alone (so it can refuse connections without harming others)."""
    base = require_postgres()
    name = f"durable_outage_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


async def test_an_unreachable_database_fails_with_a_clear_error_after_reconnect_timeout(
    own_database: str,
) -> None:
    async with SQLStore(own_database, reconnect_timeout=0.5) as store:
        name = own_database.rsplit("/", 1)[1]
        with psycopg.connect(own_database.rsplit("/", 1)[0] + "/test", autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        with pytest.raises(StoreError, match=r"unreachable for 0\.5 s \(reconnect_timeout\)"):
            await store.get_run("r")
