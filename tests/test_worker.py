"""Workers: claim runnable runs, share them safely, take over from dead ones, stop cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from support import PROGRAMS, Processes, eventually, eventually_sync, read_log, stop

import durable
from durable import RunStatus
from durable.backends import SQLStore
from durable.store import Store

sys.path.insert(0, str(PROGRAMS))
import worker_app


@pytest.fixture
def side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "side.txt"
    path.touch()
    monkeypatch.setenv("SIDE_FILE", str(path))
    return path


def _lines(side: Path) -> list[list[str]]:
    return [line.split() for line in side.read_text().splitlines()]


def _has(side: Path, tag: str) -> bool:
    return any(t == tag for _, t, *_ in _lines(side))


async def _tagged(side: Path, tag: str) -> bool:
    return _has(side, tag)


async def _all_finished(store: Store, ids: list[str]) -> None:
    async def finished() -> bool:
        runs = [await store.get_run(i) for i in ids]
        return all(r is not None and r.status.finished for r in runs)

    await eventually(f"the end of runs {ids}", finished)


async def test_a_worker_executes_started_runs(store: Store, side: Path) -> None:
    ids = [f"w{i}" for i in range(12)]
    for run_id in ids:
        await durable.start(worker_app.five_steps, 0.0, id=run_id, store=store)
    worker = durable.Worker(store, [worker_app.five_steps], concurrency=4)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await _all_finished(store, ids)
        worker.stop()
    for run_id in ids:
        assert await durable.get_handle(run_id, store).result() == 10
    counts = defaultdict(int)
    for run_id, tag, *_ in _lines(side):
        counts[(run_id, tag)] += 1
    assert set(counts.values()) == {1} and len(counts) == 12 * 10


def test_worker_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        durable.Worker(concurrency=0)
    with pytest.raises(TypeError, match="@workflow"):
        durable.Worker(workflows=[print])


def _spawn_worker(
    processes: Processes, url: str, side: Path, lease: float = 30.0, concurrency: int = 100
) -> subprocess.Popen[bytes]:
    """Start a worker process and return once it is ready (SIGTERM then stops it cleanly)."""
    log = side.parent / f"worker-{uuid.uuid4().hex[:8]}.log"
    options = ("--lease", str(lease), "--grace", "5", "--concurrency", str(concurrency))
    env = {**os.environ, "SIDE_FILE": str(side)}
    proc = processes.spawn_worker("worker_app", url, log, *options, env=env)
    logs[proc.pid] = log
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM the worker and collect its log."""
    stop(proc)
    output = read_log(logs[proc.pid])
    stopped.append((proc.returncode, output))
    return output


logs: dict[int, Path] = {}
stopped: list[tuple[int, str]] = []


@pytest.fixture(autouse=True)
def _workers_exit_cleanly() -> Iterator[None]:
    stopped.clear()
    logs.clear()
    yield
    for returncode, err in stopped:
        assert returncode == 0, err


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.db'}"


def test_two_worker_processes_share_one_sqlite_file(
    processes: Processes, sqlite_url: str, side: Path
) -> None:
    async def start_all() -> list[str]:
        async with SQLStore(sqlite_url) as store:
            ids = [f"r{i}" for i in range(30)]
            for run_id in ids:
                await durable.start(worker_app.five_steps, 0.05, id=run_id, store=store)
            return ids

    # Both workers are ready before the runs exist (the first once took all 30 before the
    # second had started on a busy machine); 4 at a time each, the second gets its share.
    workers = [_spawn_worker(processes, sqlite_url, side, concurrency=4) for _ in range(2)]

    async def wait() -> list[int]:
        async with SQLStore(sqlite_url) as store:
            await _all_finished(store, ids)
            return [await durable.get_handle(i, store).result() for i in ids]

    try:
        ids = anyio.run(start_all)
        assert anyio.run(wait) == [10] * 30
    finally:
        for proc in workers:
            _stop(proc)
    pids_per_run: dict[str, set[str]] = defaultdict(set)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for run_id, tag, _key, pid, _t in _lines(side):
        pids_per_run[run_id].add(pid)
        counts[(run_id, tag)] += 1
    assert set(counts.values()) == {1}  # no crash: every activity ran exactly once
    assert all(len(pids) == 1 for pids in pids_per_run.values())  # no run advanced by both
    assert len({pid for pids in pids_per_run.values() for pid in pids}) == 2  # both worked


def test_a_killed_workers_runs_are_taken_over_after_its_lease(
    processes: Processes, sqlite_url: str, side: Path
) -> None:
    async def start_all() -> list[str]:
        async with SQLStore(sqlite_url) as store:
            ids = [f"k{i}" for i in range(6)]
            for run_id in ids:
                await durable.start(worker_app.five_steps, 0.2, id=run_id, store=store)
            return ids

    ids = anyio.run(start_all)
    first = _spawn_worker(processes, sqlite_url, side, lease=1.5)
    eventually_sync("the start of a second step", lambda: _has(side, "start1"), within=30)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = time.time()
    second = _spawn_worker(processes, sqlite_url, side, lease=1.5)

    async def wait() -> list[int]:
        async with SQLStore(sqlite_url) as store:
            await _all_finished(store, ids)
            return [await durable.get_handle(i, store).result() for i in ids]

    try:
        assert anyio.run(wait) == [10] * 6
    finally:
        _stop(second)
    done: dict[tuple[str, str], int] = defaultdict(int)
    starts: dict[tuple[str, str], list[str]] = defaultdict(list)
    for run_id, tag, key, _pid, _t in _lines(side):
        if tag.startswith("done"):
            done[(run_id, tag)] += 1
        else:
            starts[(run_id, tag)].append(key)
    assert all(n in (1, 2) for n in done.values()) and len(done) == 6 * 5
    twice = [k for k, keys in starts.items() if len(keys) > 1]
    assert twice  # the activities in flight at the kill ran again ...
    assert all(len(set(starts[k])) == 1 for k in twice)  # ... with the same idempotency key
    taken_over = [float(t) for r, tag, _k, pid, t in _lines(side) if pid == str(second.pid)]
    assert min(taken_over) >= killed_at  # by the second worker, after the kill


def test_a_parked_run_is_finished_by_a_later_worker_when_due(
    processes: Processes, sqlite_url: str, side: Path
) -> None:

    async def start_and_park() -> float:
        async with SQLStore(sqlite_url) as store:

            async def execute() -> None:
                await durable.execute(worker_app.sleeper, 2.0, id="s1", store=store)

            async def parked() -> bool:
                run = await store.get_run("s1")
                return run is not None and run.status == RunStatus.SLEEPING and not run.lease_owner

            async with anyio.create_task_group() as tg:  # the process "exits" once it parked
                tg.start_soon(execute)
                await eventually("the run's parking", parked)
                tg.cancel_scope.cancel()
            run = await store.get_run("s1")
            assert run is not None and run.status == RunStatus.SLEEPING
            assert run.lease_owner is None and run.wake_at is not None
            return run.wake_at

    with durable.executor_config(park_after=0.1):
        due = anyio.run(start_and_park)
    worker = _spawn_worker(processes, sqlite_url, side)

    async def wait() -> str:
        async with SQLStore(sqlite_url) as store:
            await _all_finished(store, ["s1"])
            return await durable.get_handle("s1", store).result()

    try:
        assert anyio.run(wait) == "woke"
    finally:
        _stop(worker)
    after = [float(t) for _, tag, _k, _p, t in _lines(side) if tag == "start1"]
    assert len(after) == 1 and after[0] >= due


def test_sigterm_leaves_no_lease_held(processes: Processes, sqlite_url: str, side: Path) -> None:
    async def start_all() -> list[str]:
        async with SQLStore(sqlite_url) as store:
            ids = [f"t{i}" for i in range(4)]
            for run_id in ids:
                await durable.start(worker_app.five_steps, 1.0, id=run_id, store=store)
            return ids

    ids = anyio.run(start_all)
    worker = _spawn_worker(processes, sqlite_url, side)
    eventually_sync("a first activity", lambda: bool(_lines(side)), within=30)
    _stop(worker)

    async def leases() -> list[str | None]:
        async with SQLStore(sqlite_url) as store:
            return [(await store.get_run(i)).lease_owner for i in ids]  # type: ignore[union-attr]

    assert anyio.run(leases) == [None] * 4


async def _status(store: Store, run_id: str, status: RunStatus) -> None:
    async def reached() -> bool:
        run = await store.get_run(run_id)
        return run is not None and run.status == status

    await eventually(f"run {run_id!r} {status.value}", reached, within=20)


async def test_pause_stops_a_run_at_a_step_boundary_until_resume(store: Store, side: Path) -> None:
    handle = await durable.start(worker_app.five_steps, 0.15, id="pz", store=store)
    idle = await durable.start(worker_app.five_steps, 0.0, id="pz-idle", store=store)
    await idle.pause()  # nobody executes it yet: paused at once
    assert await idle.status() == RunStatus.PAUSED
    worker = durable.Worker(store, [worker_app.five_steps])
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await eventually("the first step's end", lambda: _tagged(side, "done0"))
        await handle.pause()
        await _status(store, "pz", RunStatus.PAUSED)
        run = await store.get_run("pz")
        assert run is not None and run.lease_owner is None
        recorded = len(await handle.history())
        await anyio.sleep(0.5)  # paused: no worker takes it, nothing more is recorded
        assert len(await handle.history()) == recorded < 5
        assert await idle.status() == RunStatus.PAUSED
        await handle.resume()
        await idle.resume()
        await _all_finished(store, ["pz", "pz-idle"])
        worker.stop()
    assert await handle.result() == 10 and await idle.result() == 10
    done = [tag for run_id, tag, *_ in _lines(side) if run_id == "pz" and tag.startswith("done")]
    assert done == [f"done{i}" for i in range(5)]  # each step once, in order


def test_a_stalled_worker_that_lost_its_lease_writes_nothing(
    processes: Processes, sqlite_url: str, side: Path
) -> None:
    async def start() -> None:
        async with SQLStore(sqlite_url) as store:
            await durable.start(worker_app.stalls, 2.0, id="st", store=store)

    anyio.run(start)
    first = _spawn_worker(processes, sqlite_url, side, lease=1.0)
    eventually_sync("the slow activity's start", lambda: _has(side, "slow"), within=30)
    os.kill(first.pid, signal.SIGSTOP)  # stalls inside the activity, past its lease
    second = _spawn_worker(processes, sqlite_url, side, lease=1.0)

    async def wait() -> list[int]:
        async with SQLStore(sqlite_url) as store:
            await _all_finished(store, ["st"])
            return await durable.get_handle("st", store).result()

    try:
        result = anyio.run(wait)
        os.kill(first.pid, signal.SIGCONT)  # it wakes up, finishes its activity, is fenced
        eventually_sync(
            "the thawed worker's end of its activity",
            lambda: any(
                tag == "slow-done" and pid == str(first.pid) for _, tag, _k, pid, _t in _lines(side)
            ),
        )
        err_first = _stop(first)  # it lets its step end (writing nothing), then exits
        history = anyio.run(_history, sqlite_url, "st")
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            err_first = _stop(first)
        _stop(second)
    assert result == [second.pid, second.pid]  # every recorded step is the second worker's
    assert [s.result for s in history] == [second.pid, second.pid]
    assert "lost the lease on run 'st'" in err_first
    done_by_first = [t for r, tag, _k, pid, t in _lines(side) if pid == str(first.pid)]
    assert len(done_by_first) == 2  # its activity did finish (at-least-once) ...


async def _history(url: str, run_id: str) -> list[durable.Step]:
    async with SQLStore(url) as store:
        return await durable.get_handle(run_id, store).history()


def test_signals_are_consumed_once_under_two_workers(
    processes: Processes, sqlite_url: str, side: Path
) -> None:
    async def start() -> None:
        async with SQLStore(sqlite_url) as store:
            await durable.start(worker_app.waits_for_items, 20, id="sg", store=store)

    anyio.run(start)
    workers = [_spawn_worker(processes, sqlite_url, side, lease=2.0) for _ in range(2)]

    async def send_and_wait() -> list[object]:
        async with SQLStore(sqlite_url) as store:
            for i in range(20):
                await durable.signal("sg", "item", i, store=store)
                await anyio.sleep(0.01)
            await _all_finished(store, ["sg"])
            return await durable.get_handle("sg", store).result()

    try:
        assert anyio.run(send_and_wait) == list(range(20))
    finally:
        for proc in workers:
            _stop(proc)


async def test_a_worker_reports_runs_of_unknown_workflows_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await durable.start(worker_app.sleeper, 0.0, id="unknown-to-it", store=store)
    worker = durable.Worker(store, [worker_app.five_steps])
    with caplog.at_level("WARNING", logger="durable.worker"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await anyio.sleep(0.3)
            worker.stop()
    reports = [r for r in caplog.records if "unknown-to-it" in r.getMessage()]
    assert len(reports) == 1 and "app.sleeper" in reports[0].getMessage()
    assert await durable.get_handle("unknown-to-it", store).status() == RunStatus.PENDING


def test_signals_survive_a_sigkilled_worker(
    processes: Processes, sqlite_url: str, side: Path
) -> None:
    async def start_and_send(first: int) -> None:
        async with SQLStore(sqlite_url) as store:
            if first == 0:
                await durable.start(worker_app.collects, 20, id="kc", store=store)
            for i in range(first, first + 10):
                await durable.signal("kc", "item", i, store=store)

    anyio.run(start_and_send, 0)
    first = _spawn_worker(processes, sqlite_url, side, lease=1.0)
    # it is consuming signals and running activities
    eventually_sync("four activities", lambda: len(_lines(side)) >= 4, within=30)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    anyio.run(start_and_send, 10)
    second = _spawn_worker(processes, sqlite_url, side, lease=1.0)

    async def wait() -> list[object]:
        async with SQLStore(sqlite_url) as store:
            await _all_finished(store, ["kc"])
            return await durable.get_handle("kc", store).result()

    try:
        # every signal consumed exactly once, in the order sent, across the kill
        assert anyio.run(wait) == list(range(20))
    finally:
        _stop(second)
    tags = [tag for _, tag, *_ in _lines(side)]
    assert all(tags.count(f"got{i}") in (1, 2) for i in range(20))
    assert sum(tags.count(f"got{i}") for i in range(20)) <= 21  # only the one in flight twice
