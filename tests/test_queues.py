"""`durable.Queue`: limits that hold across worker processes (three workers on one SQLite file
and on Postgres), in one process (`q.execute` waits for room), and on the test environment's
virtual clock; and the errors for bad queue arguments."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import PROGRAMS, Processes, durable_cli, eventually, stop, wait_for_log

import durable
from durable.backends import SQLStore
from durable.store import Store
from durable.testing import WorkflowEnvironment

sys.path.insert(0, str(PROGRAMS))
import queue_app

# -- three worker processes on one store ---------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL for worker processes: a SQLite file, or a fresh Postgres schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'queues.db'}"
    else:
        url = str(request.getfixturevalue("fresh_postgres_url"))
    init = durable_cli(PROGRAMS, "db", "init", url, timeout=120)
    assert init.returncode == 0, init.stderr
    return url


@pytest.fixture
def workers(shared_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Three worker processes serving queue_app on ``shared_url``; the side log's path."""
    side = tmp_path / "side.jsonl"
    env = {**os.environ, "SIDE_LOG": str(side)}
    processes = Processes()
    try:
        options = ("--concurrency", "10")
        started = []
        for i in range(3):  # started together, then each awaited: their imports overlap
            log = tmp_path / f"worker-{i}.log"
            args = ["-m", "durable", "worker", "queue_app", "--store", shared_url, *options]
            started.append((processes.spawn(args, log, env), log))
        for proc, log in started:
            wait_for_log(proc, log, "durable worker: ready")
        procs = [proc for proc, _ in started]
        yield shared_url, side
        for proc in procs:
            stop(proc)
    finally:
        processes.close()


def _records(side: Path) -> list[dict[str, Any]]:
    if not side.exists():
        return []
    return [json.loads(line) for line in side.read_text().splitlines() if line]


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of the intervals that overlap at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, change in events:  # an end sorts before a start at the same instant
        current += change
        most = max(most, current)
    return most


async def _finish_all(url: str, ids: list[str]) -> list[Any]:
    async with SQLStore(url) as store:
        results = []
        with anyio.fail_after(180):
            for run_id in ids:
                results.append(await durable.get_handle(run_id, store).result())
        return results


@pytest.mark.timeout(300)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_concurrency_2_never_has_more_than_2_runs_executing(
    workers: tuple[str, Path],
) -> None:
    url, side = workers
    ids = [f"limited-{i}" for i in range(12)]
    async with SQLStore(url) as store:
        for run_id in ids:
            await queue_app.LIMITED.start(queue_app.job, run_id, 0.15, id=run_id, store=store)
    assert await _finish_all(url, ids) == ids
    records = _records(side)
    assert sorted(r["run"] for r in records) == sorted(ids)
    assert _most_at_once([(r["start"], r["end"]) for r in records]) <= 2


@pytest.mark.timeout(300)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_per_key_concurrency_1_serialises_each_key(workers: tuple[str, Path]) -> None:
    url, side = workers
    ids = []
    async with SQLStore(url) as store:
        for i in range(12):
            run_id, key = f"tenant-{i % 3}-{i}", f"tenant-{i % 3}"
            ids.append(run_id)
            await queue_app.PER_KEY.start(queue_app.job, key, 0.1, id=run_id, key=key, store=store)
    assert sorted(await _finish_all(url, ids)) == sorted(f"tenant-{i % 3}" for i in range(12))
    records = _records(side)
    assert len(records) == 12
    for key in ("tenant-0", "tenant-1", "tenant-2"):
        mine = [(r["start"], r["end"]) for r in records if r["tag"] == key]
        assert len(mine) == 4
        assert _most_at_once(mine) == 1, f"runs of {key} overlapped: {sorted(mine)}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_rate_limit_of_5_per_second_holds_over_30_runs(
    workers: tuple[str, Path],
) -> None:
    url, _ = workers
    ids = [f"rated-{i:02d}" for i in range(30)]
    async with SQLStore(url) as store:
        for run_id in ids:
            await queue_app.RATED.start(queue_app.job, run_id, id=run_id, store=store)
    await _finish_all(url, ids)
    async with SQLStore(url) as store:
        starts = []
        for run_id in ids:
            run = await store.get_run(run_id)
            assert run is not None and run.started_at is not None
            starts.append(run.started_at)
    starts.sort()
    for i, start in enumerate(starts):  # every 1 s window holds at most 5 starts
        within = [s for s in starts[i:] if s < start + 1.0]
        assert len(within) <= 5, f"{len(within)} runs started within 1 s of {start}"
    # 30 starts at 5 per second span at least 5 seconds (a consequence of the limit)
    assert starts[-1] - starts[0] >= 5.0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_priority_then_fifo_order_holds_among_queued_runs(
    workers: tuple[str, Path], tmp_path: Path
) -> None:
    url, side = workers
    fifo = tmp_path / "gate.fifo"
    os.mkfifo(fifo)
    async with SQLStore(url) as store:
        gate = await queue_app.ORDERED.start(queue_app.gate, str(fifo), id="gate", store=store)

        async def gate_holds() -> bool:
            return any(r["run"] == "gate" for r in _records(side))

        await eventually("the gate run holds the queue's only slot", gate_holds)
        priorities = [("p5-a", 5), ("p1-a", 1), ("p3", 3), ("p1-b", 1), ("p0", 0), ("p5-b", 5)]
        for run_id, priority in priorities:
            await queue_app.ORDERED.start(
                queue_app.job, run_id, id=run_id, priority=priority, store=store
            )
        await anyio.to_thread.run_sync(fifo.write_text, "open")  # the gate reads it and ends
        assert await gate.result() == "open"
    await _finish_all(url, [run_id for run_id, _ in priorities])
    ran = [r["run"] for r in sorted(_records(side), key=lambda r: r["start"]) if r["run"] != "gate"]
    assert ran == ["p0", "p1-a", "p1-b", "p3", "p5-a", "p5-b"]


# -- one process ---------------------------------------------------------------------------------

_running = 0
_most = 0


@durable.activity
async def _counted(seconds: float) -> int:
    global _running, _most
    _running += 1
    _most = max(_most, _running)
    try:
        await anyio.sleep(seconds)
    finally:
        _running -= 1
    return _most


@durable.workflow(name="test_queues.counted")
async def _counted_flow(seconds: float) -> int:
    return await _counted(seconds)


async def test_execute_waits_for_room_in_the_queue(store: Store) -> None:
    """Eight `q.execute` calls at once on a queue of 3: all finish, never more than 3 at once
    (each waits for a run of the queue to release its slot: the store wakes it)."""
    global _most
    _most = 0
    queue = durable.Queue("test-execute-room", concurrency=3)
    results: list[int] = []

    async def one(i: int) -> None:
        results.append(await queue.execute(_counted_flow, 0.05, id=f"room-{i}", store=store))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(one, i)
    assert len(results) == 8 and _most <= 3
    run = await store.get_run("room-0")
    assert run is not None and run.queue == "test-execute-room" and run.status == "completed"


async def test_a_worker_given_queues_claims_only_their_runs(store: Store) -> None:
    mail, sms = durable.Queue("test-mail"), durable.Queue("test-sms")
    await mail.start(_counted_flow, 0.0, id="mail-1", store=store)
    await sms.start(_counted_flow, 0.0, id="sms-1", store=store)
    await durable.start(_counted_flow, 0.0, id="plain-1", store=store)
    worker = durable.Worker(store, [_counted_flow], queues=[sms])
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(30):
            await durable.get_handle("sms-1", store).result()
        worker.stop()
    assert await durable.get_handle("mail-1", store).status() == "pending"
    assert await durable.get_handle("plain-1", store).status() == "pending"


async def test_the_latest_declaration_of_a_queue_wins(store: Store) -> None:
    await durable.Queue("test-decl", concurrency=2).declare(store)
    newer = durable.Queue("test-decl", concurrency=7, rate_limit=(10, timedelta(minutes=1)))
    await newer.declare(store)
    (settings,) = [q for q in await store.list_queues() if q.name == "test-decl"]
    assert (settings.concurrency, settings.rate_count, settings.rate_period) == (7, 10, 60.0)
    assert repr(newer) == "Queue('test-decl', concurrency=7, rate_limit=(10, 60.0))"


# -- the virtual clock ---------------------------------------------------------------------------


async def test_a_rate_limit_on_the_virtual_clock_spaces_starts_without_real_waiting() -> None:
    hourly = durable.Queue("test-hourly", rate_limit=(1, timedelta(hours=1)))
    async with WorkflowEnvironment(workflows=[_counted_flow]) as env:
        handles = [
            await hourly.start(_counted_flow, 0.0, id=f"h-{i}", store=env.store) for i in range(4)
        ]
        with anyio.fail_after(10):  # virtual hours, real milliseconds
            for handle in handles:  # the handles q.start returned move the virtual clock too
                await handle.result()
        starts = []
        for handle in handles:
            run = await env.store.get_run(handle.id)
            assert run is not None and run.started_at is not None
            starts.append(run.started_at)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(gap >= 3600 for gap in gaps), gaps


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": 0}, "concurrency=...) must be an int >= 1"),
        ({"concurrency": 1.5}, "concurrency=...) must be an int >= 1"),
        ({"per_key_concurrency": -1}, "per_key_concurrency=...) must be an int >= 1"),
        ({"rate_limit": 5}, "takes (count, period)"),
        ({"rate_limit": (0, 1)}, "the count must be an int >= 1"),
        ({"rate_limit": (5, 0)}, "must be a finite number of seconds > 0"),
        ({"rate_limit": (5, "1s")}, "the period takes seconds or a timedelta"),
    ],
)
def test_bad_queue_limits_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=r"durable\.Queue") as error:
        durable.Queue("bad", **kwargs)
    assert message in str(error.value)


def test_a_bad_queue_name_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        durable.Queue("")


async def test_bad_placement_is_refused_naming_the_run(store: Store) -> None:
    queue = durable.Queue("test-placement")
    with pytest.raises(ValueError, match="'p-1': key= must be a non-empty string"):
        await queue.start(_counted_flow, 0.0, id="p-1", key="", store=store)
    with pytest.raises(ValueError, match="'p-2': priority= must be an int"):
        await queue.start(_counted_flow, 0.0, id="p-2", priority=2**40, store=store)
    assert await store.get_run("p-1") is None and await store.get_run("p-2") is None


def test_a_worker_needs_a_queue_when_given_queues() -> None:
    with pytest.raises(ValueError, match="at least one queue"):
        durable.Worker(durable.backends.MemoryStore(), [_counted_flow], queues=[])


async def test_a_queued_run_takes_a_deadline(store: Store) -> None:
    queue = durable.Queue("test-deadline")
    await queue.start(_counted_flow, 0.0, id="t-1", timeout=timedelta(minutes=1), store=store)
    run = await store.get_run("t-1")
    assert run is not None and run.deadline is not None
    assert run.deadline - run.created_at == pytest.approx(60.0, abs=1.0)
    with pytest.raises(ValueError, match=r"'t-2'.*timeout= must be a finite number"):
        await queue.start(_counted_flow, 0.0, id="t-2", timeout=-1, store=store)
    assert await store.get_run("t-2") is None


async def test_operators_see_a_run_s_queue(store: Store) -> None:
    from durable._inspect import info_json

    queue = durable.Queue("test-shown")
    handle = await queue.start(
        _counted_flow, 0.0, id="shown-1", key="acme", priority=3, store=store
    )
    info = await handle.describe()
    assert (info.queue, info.queue_key, info.priority) == ("test-shown", "acme", 3)
    shown = info_json(info)
    assert (shown["queue"], shown["queue_key"], shown["priority"]) == ("test-shown", "acme", 3)


async def test_a_schedule_takes_a_queue_object_and_declares_it() -> None:
    nightly = durable.Queue("test-sched-queue", concurrency=1)
    async with WorkflowEnvironment(workflows=[_counted_flow]) as env:
        with durable.executor_config(clock=env.clock):
            info = await durable.schedule(
                "queued-nightly", _counted_flow, cron="@daily", args=(0.0,), queue=nightly,
                store=env.store,
            )  # fmt: skip
        assert info.queue == "test-sched-queue"
        (settings,) = [q for q in await env.store.list_queues() if q.name == nightly.name]
        assert settings.concurrency == 1


async def test_the_environment_delays_a_start_on_its_virtual_clock() -> None:
    async with WorkflowEnvironment(workflows=[_counted_flow]) as env:
        began = env.clock.time()
        handle = await env.start(_counted_flow, 0.0, id="later", delay=timedelta(hours=2))
        await handle.result()
        run = await env.store.get_run("later")
        assert run is not None and run.started_at is not None
        assert run.started_at - began >= 7200


def test_a_rate_limit_may_be_a_list_and_an_empty_queue_name_is_refused() -> None:
    assert durable.Queue("test-list-rate", rate_limit=[5, 1]).rate_limit == (5, 1.0)
    with pytest.raises(ValueError, match="non-empty strings"):
        durable.Worker(durable.backends.MemoryStore(), [_counted_flow], queues=[""])


async def test_a_bad_delay_names_the_queue(store: Store) -> None:
    queue = durable.Queue("test-bad-delay")
    with pytest.raises(ValueError, match=r"Queue\('test-bad-delay'\)\.start\(\.\.\., id='d-1'\)"):
        await queue.start(_counted_flow, 0.0, id="d-1", delay=-5, store=store)
