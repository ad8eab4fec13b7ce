"""Our stores beyond the shipped contract battery (tests/backends/test_conformance.py): shared
between threads, and SQLite-specific behaviour."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest
from support import python

from durable.backends import SQLStore
from durable.backends._schema import SCHEMA_VERSION, tables
from durable.store import (
    Lease,
    LeaseLost,
    LeaseOwner,
    RunRecord,
    RunStatus,
    RunUpdate,
    SchemaVersionError,
    StepKind,
    StepRecord,
    StepStatus,
    Store,
    StoreError,
)

A = LeaseOwner("owner-a", "host-a", 101)
B = LeaseOwner("owner-b", "host-b", 202)


def make_run(
    run_id: str = "run-1",
    *,
    status: RunStatus = RunStatus.PENDING,
    created_at: float = 100.0,
    error_text: str | None = None,
) -> RunRecord:
    return RunRecord(
        id=run_id,
        workflow="app.book_trip",
        status=status,
        args=b"\x80args",
        created_at=created_at,
        updated_at=created_at,
        error_text=error_text,
    )


def make_step(
    run_id: str, seq: int, *, name: str = "app.charge", result: bytes = b"ok"
) -> StepRecord:
    return StepRecord(
        run_id=run_id,
        seq=seq,
        kind=StepKind.ACTIVITY,
        name=name,
        status=StepStatus.COMPLETED,
        attempts=1,
        started_at=100.0 + seq,
        finished_at=100.5 + seq,
        result=result,
        location=f"app.py:{10 + seq}",
    )


async def leased(
    store: Store, run_id: str = "run-1", *, now: float = 100.0, duration: float = 30.0
) -> Lease:
    await store.create_run(make_run(run_id))
    lease = await store.acquire_lease(run_id, A, now=now, duration=duration)
    assert lease is not None
    return lease


# -- every store, beyond the contract battery: shared between threads ---------------------------


async def test_concurrent_acquires_from_threads_grant_one_lease(store: Store) -> None:
    await store.create_run(make_run())
    owners = [LeaseOwner(f"thread-{i}", "host", i) for i in range(8)]
    results: list[Lease | None] = []
    start = threading.Barrier(len(owners))

    def attempt(owner: LeaseOwner) -> None:
        async def acquire() -> Lease | None:
            return await store.acquire_lease("run-1", owner, now=100.0, duration=60.0)

        start.wait()
        results.append(anyio.run(acquire))

    threads = [threading.Thread(target=attempt, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    granted = [r for r in results if r is not None]
    assert len(results) == len(owners)
    assert len(granted) == 1
    run = await store.get_run("run-1")
    assert run is not None
    assert (run.lease_owner, run.lease_token) == (granted[0].owner.owner, 1)


# -- SQLite --------------------------------------------------------------------------------------


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.db'}"


async def test_two_sqlite_stores_on_one_file_see_each_other(db_url: str) -> None:
    async with SQLStore(db_url) as one, SQLStore(db_url) as two:
        stored, created = await one.create_run(make_run())
        assert created is True
        assert await two.create_run(make_run()) == (stored, False)

        lease = await one.acquire_lease("run-1", A, now=100.0, duration=30.0)
        assert lease is not None
        assert await two.acquire_lease("run-1", B, now=110.0, duration=30.0) is None
        await one.commit(lease, [make_step("run-1", 1)], now=111.0)
        assert await two.load_steps("run-1") == [make_step("run-1", 1)]

        taken = await two.acquire_lease("run-1", B, now=200.0, duration=30.0)
        assert taken is not None
        with pytest.raises(LeaseLost):
            await one.commit(lease, [make_step("run-1", 2)], now=201.0)
        assert [s.seq for s in await one.load_steps("run-1")] == [1]


async def test_reopening_a_sqlite_file_keeps_its_data(db_url: str) -> None:
    async with SQLStore(db_url) as store:
        lease = await leased(store)
        await store.commit(lease, [make_step("run-1", 1)], RunUpdate(RunStatus.SLEEPING), now=101.0)
        saved = await store.get_run("run-1")

    async with SQLStore(db_url) as store:
        assert await store.get_run("run-1") == saved
        assert await store.load_steps("run-1") == [make_step("run-1", 1)]
        # The lease survived the reopen: the old lease still commits, a newcomer is refused.
        assert await store.acquire_lease("run-1", B, now=102.0, duration=30.0) is None
        await store.commit(lease, [make_step("run-1", 2)], now=103.0)
        assert len(await store.load_steps("run-1")) == 2


_CRASH = r"""
import asyncio, os, sys
from durable.backends import SQLStore
from durable.store import LeaseOwner, RunRecord, RunStatus, StepKind, StepRecord, StepStatus

async def main(url):
    store = SQLStore(url)
    await store.create_run(RunRecord("crash", "app.wf", RunStatus.PENDING, b"a", 1.0, 1.0))
    lease = await store.acquire_lease("crash", LeaseOwner("o", "h", 1), now=1.0, duration=60.0)
    step = StepRecord("crash", 1, StepKind.ACTIVITY, "app.act", StepStatus.COMPLETED, 1, 1.0, 2.0)
    await store.commit(lease, [step], now=2.0)
    os._exit(3)  # die without closing anything

asyncio.run(main(sys.argv[1]))
"""


def test_a_commit_survives_a_crash_of_the_process(db_url: str, tmp_path: Path) -> None:
    proc = python("-c", _CRASH, db_url, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr

    async def read() -> tuple[RunRecord | None, list[StepRecord]]:
        async with SQLStore(db_url) as store:
            return await store.get_run("crash"), await store.load_steps("crash")

    run, steps = anyio.run(read)
    assert run is not None
    assert (run.status, run.lease_token) == (RunStatus.RUNNING, 1)
    assert [(s.seq, s.name) for s in steps] == [(1, "app.act")]


@pytest.mark.parametrize(("durability", "synchronous"), [("process", 1), ("power", 2)])
async def test_sqlite_uses_wal_and_the_requested_durability(
    db_url: str, tmp_path: Path, durability: str, synchronous: int
) -> None:
    async with SQLStore(db_url, durability=durability) as store:  # type: ignore[arg-type]
        assert store._runner._raw.execute("PRAGMA synchronous").fetchone()[0] == synchronous
    with sqlite3.connect(tmp_path / "shared.db") as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    check.close()


async def test_unknown_durability_is_refused(db_url: str) -> None:
    with pytest.raises(StoreError, match="durability"):
        SQLStore(db_url, durability="sometimes")  # type: ignore[arg-type]


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 100)
    url = f"sqlite:///{path}"
    with pytest.raises(StoreError, match="not a SQLite database") as error:
        SQLStore(url)
    assert url in str(error.value)
    assert path.read_text().startswith("these are my notes")


@pytest.mark.parametrize(
    "url", ["mysql://user@localhost/app", "redis://localhost:6379/0", "durable.db"]
)
async def test_an_unknown_url_scheme_is_refused(url: str) -> None:
    with pytest.raises(StoreError) as error:
        SQLStore(url)
    assert type(error.value) is StoreError
    assert url in str(error.value)
    assert "sqlite:///" in str(error.value)


async def test_a_newer_schema_version_is_refused(db_url: str, tmp_path: Path) -> None:
    async with SQLStore(db_url):
        pass
    with sqlite3.connect(tmp_path / "shared.db") as db:
        db.execute("UPDATE durable_schema SET version = ?", (SCHEMA_VERSION + 1,))
    db.close()

    with pytest.raises(SchemaVersionError) as error:
        SQLStore(db_url)
    assert (error.value.found, error.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    assert db_url in str(error.value)
    assert isinstance(error.value, StoreError)


@pytest.mark.parametrize("with_schema_table", [False, True])
async def test_a_foreign_database_with_durable_runs_is_refused(
    tmp_path: Path, with_schema_table: bool
) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE durable_runs (name TEXT)")
        if with_schema_table:
            db.execute("CREATE TABLE durable_schema (id INTEGER PRIMARY KEY, version INTEGER)")
    db.close()
    url = f"sqlite:///{path}"

    with pytest.raises(StoreError, match="not a durable database") as error:
        SQLStore(url)
    assert url in str(error.value)
    with sqlite3.connect(path) as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert "durable_steps" not in names  # nothing was created in someone else's database


async def test_a_missing_postgres_driver_gives_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m == "psycopg" or m.startswith("psycopg.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes `import psycopg` fail
    with pytest.raises(StoreError, match=r"pip install 'durable-sdk\[postgres\]'") as error:
        SQLStore("postgresql://app:s3cret@db.example/app")
    assert "db.example" in str(error.value)
    assert "s3cret" not in str(error.value)


def test_durable_tables_stay_out_of_the_global_sqlmodel_metadata() -> None:
    from sqlmodel import SQLModel

    names = {t.name for t in tables()}
    assert names == {"durable_runs", "durable_steps", "durable_schema"}
    assert names.isdisjoint(SQLModel.metadata.tables)  # an app's create_all never makes them


def test_the_schema_and_statements_compile_for_postgres() -> None:
    from sqlalchemy.dialects.postgresql import psycopg
    from sqlalchemy.schema import CreateTable

    from durable.backends._statements import Statements

    dialect = psycopg.dialect()  # type: ignore[no-untyped-call]
    statements = Statements(dialect)
    assert "%(token)s" in statements.update.sql  # pyformat parameters, named
    ddl = "\n".join(str(CreateTable(t).compile(dialect=dialect)) for t in tables())
    assert "BYTEA" in ddl
    assert "DOUBLE PRECISION" in ddl
    assert "PRIMARY KEY (run_id, seq)" in ddl


_HAMMER = r"""
import asyncio, json, os, sys, time
from durable.backends import SQLStore
from durable.store import LeaseLost, LeaseOwner, StepKind, StepRecord, StepStatus

async def main(url, go, name, rounds):
    owner = LeaseOwner(name, "localhost", os.getpid())
    tokens, lost = [], 0
    async with SQLStore(url) as store:
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.001)
        for _ in range(rounds):
            lease = await store.acquire_lease("shared", owner, now=time.time(), duration=3600.0)
            if lease is None:
                continue
            tokens.append(lease.token)
            step = StepRecord(
                "shared", lease.token, StepKind.ACTIVITY, name, StepStatus.COMPLETED, 1, 0.0, 0.0
            )
            try:
                await store.commit(lease, [step], now=time.time())
            except LeaseLost:
                lost += 1
            await store.release_lease(lease)
    print(json.dumps({"tokens": tokens, "lost": lost}), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


def test_two_processes_never_hold_one_lease_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hammer.db'}"
    go = tmp_path / "go"

    async def setup() -> None:
        async with SQLStore(url) as store:
            await store.create_run(make_run("shared"))

    anyio.run(setup)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _HAMMER, url, str(go), f"proc-{i}", "300"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONWARNINGS": "error"},
        )
        for i in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
        go.touch()
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    tokens = [t for r in results for t in r["tokens"]]
    assert [r["lost"] for r in results] == [0, 0]  # no holder was ever overtaken
    assert len(tokens) == len(set(tokens)) > 0  # every grant had its own token

    async def check() -> tuple[RunRecord | None, list[StepRecord]]:
        async with SQLStore(url) as store:
            return await store.get_run("shared"), await store.load_steps("shared")

    run, steps = anyio.run(check)
    assert run is not None
    assert run.lease_token == len(tokens)
    assert sorted(s.seq for s in steps) == sorted(tokens)
