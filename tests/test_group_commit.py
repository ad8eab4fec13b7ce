"""Group commit: the commits of many runs made at the same moment share one transaction, and
each run's outcome is still its own (issue 18). Speed is measured in benchmarks/, never here."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import PROGRAMS, Processes, empty_postgres, eventually

import durable
from durable import StepStatus
from durable.backends import SQLStore
from durable.backends._group import GroupCommit, Grouped
from durable.store import LeaseOwner, RunRecord, RunStatus, StepKind, StepRecord, Store

sys.path.insert(0, str(PROGRAMS))
import group_app

RUNS = 100
gate: anyio.Event
started: set[str] = set()


@durable.activity(name="group.wait_at_gate")
async def wait_at_gate() -> str:
    started.add(durable.info().run_id)
    await gate.wait()
    return "through"


@durable.activity(name="group.step")
async def step(i: int) -> int:
    return i


@durable.workflow(name="group.flow")
async def flow() -> int:
    await wait_at_gate()
    total = 0
    for i in range(5):
        total += await step(i)
    return total


def _group_of(store: Store) -> GroupCommit | None:
    runner = getattr(store, "_runner", None)
    return getattr(runner, "_group", None)


async def test_a_run_whose_lease_is_stolen_fails_alone_and_the_others_commit(
    store: Store,
) -> None:
    """100 runs wait at one gate; one run's lease is taken over; the gate opens, so all 100
    record their next steps at once (in shared transactions where the store groups): the
    stolen run stops with LeaseLost and nothing more of it is written, the 99 others finish."""
    global gate
    gate = anyio.Event()
    started.clear()
    outcomes: dict[str, Any] = {}

    async def one(run_id: str) -> None:
        try:
            outcomes[run_id] = await durable.execute(flow, id=run_id, store=store)
        except durable.LeaseLost as exc:
            outcomes[run_id] = exc

    group = _group_of(store)
    batches_before = 0 if group is None else group.batches
    requests_before = 0 if group is None else group.requests
    async with anyio.create_task_group() as tg:
        for k in range(RUNS):
            tg.start_soon(one, f"g{k}")

        async def all_at_gate() -> bool:
            return len(started) == RUNS

        await eventually("every run at the gate", all_at_gate)
        victim = await store.get_run("g42")
        assert victim is not None
        stolen = await store.acquire_lease(
            "g42",
            LeaseOwner("thief", "elsewhere", 1),
            now=time.time(),
            duration=60,
            takeover_token=victim.lease_token,
        )
        assert stolen is not None
        before = await store.load_steps("g42")
        gate.set()
    assert isinstance(outcomes.pop("g42"), durable.LeaseLost)
    assert outcomes == {f"g{k}": 10 for k in range(RUNS) if k != 42}
    # nothing of the stolen run was written after the theft
    assert await store.load_steps("g42") == before
    assert [s.status for s in before] == [StepStatus.STARTED]
    run = await store.get_run("g42")
    assert run is not None and run.lease_owner == "thief"
    for k in (0, 41, 43, 99):
        steps = await store.load_steps(f"g{k}")
        assert [s.status for s in steps] == [StepStatus.COMPLETED] * 6
    if group is not None:  # a grouping store did share transactions
        assert group.requests - requests_before > group.batches - batches_before


async def _leased(store: Store, run_id: str) -> Any:
    await store.create_run(
        RunRecord(
            id=run_id,
            workflow="w",
            status=RunStatus.PENDING,
            args=b"x",
            created_at=1.0,
            updated_at=1.0,
        )
    )
    lease = await store.acquire_lease(run_id, LeaseOwner("o", "h", 1), now=1.0, duration=1e6)
    assert lease is not None
    return lease


def _step(run_id: str, seq: int, at: float) -> StepRecord:
    return StepRecord(
        run_id, seq, StepKind.ACTIVITY, "a", StepStatus.COMPLETED, 1, at, at, result=b"r"
    )


def _started(run_id: str, seq: int) -> StepRecord:
    return StepRecord(run_id, seq, StepKind.ACTIVITY, "a", StepStatus.STARTED, 1, 1.0, 1.0)


async def _commit_together(
    store: Store, leases: list[Any], steps: list[StepRecord], **options: Any
) -> dict[int, BaseException]:
    """Commit ``steps[k]`` under ``leases[k]``, all at the same moment; the errors, by k."""
    errors: dict[int, BaseException] = {}

    async def commit(k: int) -> None:
        try:
            await store.commit(leases[k], [steps[k]], now=2.0, **options)
        except durable.StoreError as exc:
            errors[k] = exc

    async with anyio.create_task_group() as tg:
        for k in range(len(steps)):
            tg.start_soon(commit, k)
    return errors


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
async def test_a_step_recorded_twice_fails_alone_in_its_batch(store: Store) -> None:
    """Commits made together: one writes a step that is already recorded (its own error:
    StoreError, nothing of it written), the others are written."""
    leases = [await _leased(store, f"r{k}") for k in range(10)]
    await store.commit(leases[3], [_step("r3", 1, 1.0)], now=1.0)
    group = _group_of(store)
    assert group is not None
    batches = group.batches
    errors = await _commit_together(store, leases, [_step(f"r{k}", 1, 2.0) for k in range(10)])
    assert list(errors) == [3] and "already recorded" in str(errors[3])
    assert group.batches - batches < 10  # they shared transactions
    for k in range(10):
        steps = await store.load_steps(f"r{k}")
        assert [(s.seq, s.finished_at) for s in steps] == [(1, 1.0 if k == 3 else 2.0)]


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
async def test_relaxed_and_strict_commits_made_together_are_all_written(store: Store) -> None:
    """Starting steps (relaxed: they may skip the flush) and recorded steps (strict) of
    different runs at the same moment: each is written, none refused. (On Postgres a relaxed
    statement turns the flush off for its whole transaction, so the two kinds go to separate
    transactions; whether a commit waited for the disk cannot be seen from here.)"""
    leases = [await _leased(store, f"m{k}") for k in range(20)]
    steps = [_started(f"m{k}", 1) if k % 2 else _step(f"m{k}", 1, 2.0) for k in range(len(leases))]
    errors: dict[int, BaseException] = {}

    async def commit(k: int) -> None:
        relaxed = bool(k % 2)
        try:
            stopped = await store.commit(
                leases[k], [steps[k]], now=2.0, check_requests=relaxed, relaxed=relaxed
            )
            assert stopped is None
        except durable.StoreError as exc:
            errors[k] = exc

    async with anyio.create_task_group() as tg:
        for k in range(len(leases)):
            tg.start_soon(commit, k)
    assert errors == {}
    for k, step in enumerate(steps):
        assert [s.status for s in await store.load_steps(f"m{k}")] == [step.status]


@pytest.mark.parametrize("lost", ["after", "before"])
async def test_a_pipeline_whose_connection_breaks_writes_each_step_once(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    """Postgres: the connection breaks while a batch's pipeline is in flight, so which of its
    transactions committed is unknown. Each call re-reads whether its step is recorded:
    written once either way (``after``: the batch committed and its reply was lost; ``before``:
    it never reached the server), and every caller told it succeeded."""
    import psycopg

    from durable.backends._pg_conn import PgConnection

    real = PgConnection.pipeline
    broken: list[int] = []

    async def breaks(self: PgConnection, transactions: Any) -> Any:
        statements = sum(map(len, transactions))
        if not broken and statements > 1:  # a batch (not a statement prepared as it runs)
            broken.append(statements)
            if lost == "after":
                await real(self, transactions)
            self.close()
            raise psycopg.OperationalError("the connection was lost (a test broke it)")
        return await real(self, transactions)

    monkeypatch.setattr(PgConnection, "pipeline", breaks)
    async with SQLStore(postgres_url) as store:
        empty_postgres(postgres_url)
        leases = [await _leased(store, f"p{k}") for k in range(10)]
        errors = await _commit_together(store, leases, [_step(f"p{k}", 1, 2.0) for k in range(10)])
        assert errors == {}
        assert broken  # a batch lost its connection
        for k in range(10):
            steps = await store.load_steps(f"p{k}")
            assert [(s.seq, s.finished_at) for s in steps] == [(1, 2.0)]


async def test_commits_queued_while_another_process_holds_the_lock_are_all_written(
    tmp_path: Path,
) -> None:
    """SQLite: another connection holds the write lock, so a commit made alone waits for it;
    the commits made meanwhile queue behind that one. Once the lock is free, every one of them
    is written and returns (none is left waiting for a batch that nobody writes)."""
    import sqlite3

    path = tmp_path / "locked.db"
    async with SQLStore(f"sqlite:///{path}") as store:
        leases = [await _leased(store, f"q{k}") for k in range(10)]
        group = _group_of(store)
        assert group is not None
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the write lock, held by "another process"
        done: list[int] = []

        async def commit(k: int) -> None:
            await store.commit(leases[k], [_step(f"q{k}", 1, 2.0)], now=2.0)
            done.append(k)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(commit, 0)

                async def leading() -> bool:
                    return group._leading and not group._queue

                await eventually("the first commit waiting for the lock", leading)
                for k in range(1, 10):
                    tg.start_soon(commit, k)

                async def queued() -> bool:
                    return len(group._queue) == 9

                await eventually("the other commits queued behind it", queued)
                assert done == []
                blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        assert sorted(done) == list(range(10))
        for k in range(10):
            assert [s.seq for s in await store.load_steps(f"q{k}")] == [1]


async def test_a_failing_transaction_fails_every_request_of_its_batch() -> None:
    """When the shared transaction itself fails, no request is reported written."""
    seen: list[int] = []

    async def alone(fn: Any, args: tuple[Any, ...], relaxed: bool) -> Any:
        return await fn(None, *args)

    async def flush(batch: list[Grouped]) -> None:
        seen.append(len(batch))
        raise OSError("disk full")

    group = GroupCommit(alone, flush)

    async def body(cur: Any, k: int) -> int:
        return k

    results: dict[int, Any] = {}

    async def one(k: int) -> None:
        try:
            results[k] = await group.run(body, (k,), False)
        except OSError as exc:
            results[k] = exc

    async with anyio.create_task_group() as tg:
        for k in range(5):
            tg.start_soon(one, k)
    assert seen == [5]  # the five were written together
    assert all(isinstance(v, OSError) for v in results.values()) and len(results) == 5


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.timeout(300)
async def test_a_sigkill_during_grouped_commits_loses_no_step_a_workflow_saw(
    tmp_path: Path, processes: Processes, kind: str, request: pytest.FixtureRequest
) -> None:
    """A worker executes 100 runs at once (their commits grouped) and is SIGKILLed at a
    random moment: every step a workflow logged as returned is recorded; a new worker then
    finishes every run."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'kill.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    returned = tmp_path / "returned.txt"
    returned.touch()
    env = {**os.environ, "RETURNED_FILE": str(returned)}
    async with SQLStore(url) as store:
        for k in range(RUNS):
            await durable.start(group_app.logged, 30, id=f"k{k}", store=store)
        options = ("--concurrency", "100", "--grace", "1")
        worker = processes.spawn_worker("group_app", url, tmp_path / "w1.log", *options, env=env)
        enough = random.randint(300, 2000)

        async def logged_enough() -> bool:
            return len(returned.read_text().splitlines()) >= enough

        await eventually("the workflows' progress", logged_enough, every=0.01)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        seen = [line.split() for line in returned.read_text().splitlines() if line.strip()]
        assert len(seen) >= enough
        for run_id, seq in seen:
            steps = {s.seq: s for s in await store.load_steps(run_id)}
            assert int(seq) in steps, f"{run_id} step {seq} was seen returned, not recorded"
            assert steps[int(seq)].status == StepStatus.COMPLETED
        processes.spawn_worker("group_app", url, tmp_path / "w2.log", *options, env=env)
        for k in range(RUNS):
            handle = durable.get_handle(f"k{k}", store)
            assert await handle.result(timeout=120) == sum(range(30))


async def test_a_batch_that_gets_no_connection_fails_each_call_with_pool_timeout(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Postgres: every pooled connection stays busy past POOL_TIMEOUT, so a batch gets none.
    Each of its calls fails with PoolTimeout at once (the batch waited once; each call
    waiting again in turn would hold the others for as long per call), and nothing is
    written; once connections are free, the same commits succeed."""
    from durable.backends import _pg_conn

    async with SQLStore(postgres_url, pool_size=1) as store:
        empty_postgres(postgres_url)
        leases = [await _leased(store, f"t{k}") for k in range(10)]
        pool = store._runner._pool  # type: ignore[attr-defined]
        held = [await pool.take("test") for _ in range(2)]  # pool_size=1: 2 connections
        monkeypatch.setattr(_pg_conn, "POOL_TIMEOUT", 0.2)
        takes = 0
        real_take = pool.take

        async def counting_take(url: str) -> Any:
            nonlocal takes
            takes += 1
            return await real_take(url)

        monkeypatch.setattr(pool, "take", counting_take)
        group = _group_of(store)
        assert group is not None
        batches = group.batches
        steps = [_step(f"t{k}", 1, 2.0) for k in range(10)]
        errors: dict[int, BaseException] = {}

        async def commit(k: int) -> None:
            try:
                await store.commit(leases[k], [steps[k]], now=2.0)
            except durable.PoolTimeout as exc:
                errors[k] = exc

        async with anyio.create_task_group() as tg:
            for k in range(10):
                tg.start_soon(commit, k)
        assert sorted(errors) == list(range(10))
        assert takes == group.batches - batches < 10  # one wait per batch, not per call
        for conn in held:
            pool.give(conn)
        assert await _commit_together(store, leases, steps) == {}
        for k in range(10):
            assert [s.seq for s in await store.load_steps(f"t{k}")] == [1]
