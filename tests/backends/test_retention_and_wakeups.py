"""`durable.prune` / `durable db prune`, and `Store.wait_for_work` across connections, on every
store (the prune and wait_for_work contracts themselves are in `durable.testing.check_store`)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

import durable
from durable.backends import MemoryStore, SQLStore
from durable.store import LeaseOwner, RunRecord, RunStatus, RunUpdate, StepKind, StepRecord, Store

OWNER = LeaseOwner("owner-a", "host-a", 101)
WORKFLOW = "app.book_trip"


def _run(run_id: str, created_at: float, status: RunStatus = RunStatus.PENDING) -> RunRecord:
    return RunRecord(run_id, WORKFLOW, status, b"args", created_at, created_at)


async def _finish(store: Store, run_id: str, at: float, status: RunStatus) -> None:
    """Record one step and a signal for the run, then finish it with ``status`` at ``at``."""
    lease = await store.acquire_lease(run_id, OWNER, now=at, duration=30)
    assert lease is not None
    step = StepRecord(
        run_id, 1, StepKind.ACTIVITY, "app.charge", durable.StepStatus.COMPLETED, 1, at, at, b"ok"
    )
    await store.commit(lease, [step], now=at)
    await store.send_signal(run_id, "approve", b"yes", now=at)
    await store.commit(lease, update=RunUpdate(status, result=b"r", release=True), now=at)


class _FixedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


async def test_durable_prune_works_in_batches_until_none_is_left(store: Store) -> None:
    for i in range(7):
        await store.create_run(_run(f"r{i}", 1_000.0))
        await _finish(store, f"r{i}", 1_000.0 + i, RunStatus.COMPLETED)
    clock = _FixedClock(1_003.5 + 10 * 86_400)  # r0..r3 are older than ten days
    deleted = await durable.prune(
        older_than=timedelta(days=10), store=store, batch_size=2, clock=clock
    )
    assert deleted == 4
    assert sorted(run.id for run in await store.list_runs()) == ["r4", "r5", "r6"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"older_than": timedelta(days=-1)}, "older_than"),
        ({"older_than": 30}, "older_than"),
        ({"older_than": timedelta(days=1), "batch_size": 0}, "batch_size"),
    ],
)
async def test_durable_prune_checks_its_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await durable.prune(store=MemoryStore(), **kwargs)  # type: ignore[arg-type]


def test_durable_db_prune_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    now = time.time()

    async def seed() -> None:
        async with SQLStore(url) as store:
            await store.create_run(_run("ancient", now - 40 * 86_400))
            await _finish(store, "ancient", now - 40 * 86_400, RunStatus.COMPLETED)
            await store.create_run(_run("fresh", now))
            await _finish(store, "fresh", now, RunStatus.COMPLETED)

    anyio.run(seed)
    command = [sys.executable, "-m", "durable", "db", "prune", url, "--older-than", "30d"]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "deleted 1 finished runs" in done.stdout

    async def left() -> list[str]:
        async with SQLStore(url) as store:
            return [run.id for run in await store.list_runs()]

    assert anyio.run(left) == ["fresh"]
    bad = subprocess.run(
        [*command[:-1], "thirty days"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "e.g. 30d" in bad.stderr


# -- wait_for_work ---------------------------------------------------------------------------


def _twin(store: Store) -> Store:
    """Another handle on the same data: a second connection for SQL stores (as another
    process would have), the same object for the in-memory store."""
    return SQLStore(store.url) if isinstance(store, SQLStore) else store


def _polls(store: Store) -> bool:
    """SQLite has no cross-process notification: its waits end every 50 ms."""
    return isinstance(store, SQLStore) and store.url.startswith("sqlite")


async def test_wait_for_work_wakes_when_another_connection_starts_a_run(store: Store) -> None:
    other = _twin(store)
    woke_after: list[float] = []

    async def waiter() -> None:
        started = time.monotonic()
        await store.wait_for_work(workflows=[WORKFLOW], now=time.time(), within=600)
        woke_after.append(time.monotonic() - started)

    try:
        with anyio.fail_after(60):  # a wait that is not woken lasts 600 s
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await anyio.sleep(0.3)
                await other.create_run(_run("r", time.time()))
    finally:
        if other is not store:
            await other.close()
    assert woke_after
    if not _polls(store):
        assert woke_after[0] >= 0.25  # woken by the new run, not before


async def test_wait_for_work_ignores_other_workflows_and_wakes_when_a_timer_is_due(
    store: Store,
) -> None:
    now = time.time()
    await store.create_run(replace(_run("other", now), workflow="app.other"))
    await store.create_run(_run("parked", now))
    lease = await store.acquire_lease("parked", OWNER, now=now, duration=30)
    assert lease is not None
    update = RunUpdate(RunStatus.SLEEPING, wake_at=now + 0.5, release=True)
    await store.commit(lease, update=update, now=now)

    started = time.monotonic()
    with anyio.fail_after(60):  # the wait asked for is 600 s
        await store.wait_for_work(workflows=[WORKFLOW], now=time.time(), within=600)
    if not _polls(store):
        assert time.monotonic() - started >= 0.3  # not by the other workflow's pending run
