"""Many worker processes on one Postgres database: every run completes, every activity runs
once (twice only if it was in flight in a worker that was SIGKILLed, then with the same
idempotency key), and a restart of the database server loses nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import anyio
import psycopg
import pytest
from support import PROGRAMS, Processes, durable_cli, eventually_sync, wait_for_log

import durable
from durable.backends import SQLStore

sys.path.insert(0, str(PROGRAMS))
import pg_orders

RUNS = 1000

# Worker processes and a thousand runs: slow on a busy machine; the waits below bound a hang.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def pg(fresh_postgres_url: str) -> str:
    """An empty schema with durable's tables (``durable db init``) and the side table."""
    init = durable_cli(PROGRAMS, "db", "init", fresh_postgres_url, timeout=120)
    assert init.returncode == 0, init.stderr
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
        conn.execute(pg_orders.SIDE_TABLE)
    return fresh_postgres_url


def _spawn(
    processes: Processes,
    url: str,
    logs: Path,
    count: int = 4,
    leases: Sequence[float] = (),
    step_seconds: float = 0.0,
) -> list[subprocess.Popen[bytes]]:
    """Start `count` worker processes together (logs go to files in ``logs``); return them
    once every one of them has claimed from the store, so runs started afterwards reach all
    of them. ``leases``: the lease of the first workers (the rest: 30 s)."""
    env = {**os.environ, "SIDE_URL": url, "STEP_SECONDS": str(step_seconds)}
    started = []
    for i in range(count):
        lease = leases[i] if i < len(leases) else 30.0
        options = ("--concurrency", "50", "--lease", str(lease), "--grace", "5")
        args = ["-m", "durable", "worker", "pg_orders", "--store", url, *options]
        log = logs / f"worker-{uuid.uuid4().hex[:8]}.log"
        started.append((processes.spawn(args, log, env), log))
    for proc, log in started:
        wait_for_log(proc, log, "durable worker: claiming runs of")
    return [proc for proc, _ in started]


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=60)


async def _start_runs(url: str, count: int) -> None:
    async with SQLStore(url) as store:
        for i in range(count):
            await durable.start(pg_orders.five, id=f"order-{i:04d}", store=store)


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT status, count(*) FROM durable_runs GROUP BY status")
        return {status: n for status, n in rows}


def _wait_until(url: str, done: int, timeout: float = 300) -> None:
    counts: dict[str, int] = {}

    def completed() -> bool:
        nonlocal counts
        try:
            counts = _counts(url)
        except psycopg.OperationalError:
            counts = {}  # the server is restarting
        return counts.get("completed", 0) >= done

    try:  # a query per look, so a look every 0.2 s
        eventually_sync(f"{done} completed runs", completed, within=timeout, every=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; runs still unfinished: {counts}") from None


def _executions(url: str) -> list[tuple[str, int, str, int]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute("SELECT run_id, step, key, pid FROM activity_log"))


def _by_activity(
    rows: list[tuple[str, int, str, int]],
) -> dict[tuple[str, int], list[tuple[str, int]]]:
    grouped: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for run_id, step, key, pid in rows:
        grouped.setdefault((run_id, step), []).append((key, pid))
    return grouped


def test_four_workers_complete_a_thousand_runs_running_each_activity_once(
    pg: str, processes: Processes, tmp_path: Path
) -> None:
    workers = _spawn(processes, pg, tmp_path)
    anyio.run(_start_runs, pg, RUNS)
    _wait_until(pg, RUNS)
    _stop_all(workers)
    assert [proc.returncode for proc in workers] == [0, 0, 0, 0]

    assert _counts(pg) == {"completed": RUNS}
    grouped = _by_activity(_executions(pg))
    assert len(grouped) == RUNS * 5
    assert {len(runs) for runs in grouped.values()} == {1}  # exactly once each
    pids = {pid for runs in grouped.values() for _, pid in runs}
    assert len(pids) == 4, "the four workers shared the load"


def test_a_sigkilled_workers_runs_are_finished_by_the_others(
    pg: str, processes: Processes, tmp_path: Path
) -> None:
    # The victim's short lease lets the others take its runs over soon after the kill; theirs
    # are long, so a survivor slowed down by a loaded machine never loses a lease it holds
    # (that would run its in-flight activity again too, which this test does not look at).
    workers = _spawn(processes, pg, tmp_path, leases=[2.0])
    anyio.run(_start_runs, pg, RUNS)
    _wait_until(pg, RUNS // 4)
    victim = workers[0]
    victim.kill()  # SIGKILL: no cleanup, its leases stay held until they expire
    victim.wait()
    _wait_until(pg, RUNS)
    _stop_all(workers[1:])
    assert [proc.returncode for proc in workers[1:]] == [0, 0, 0]

    assert _counts(pg) == {"completed": RUNS}
    grouped = _by_activity(_executions(pg))
    assert len(grouped) == RUNS * 5
    twice = {activity: runs for activity, runs in grouped.items() if len(runs) > 1}
    for (run_id, step), runs in twice.items():
        assert len(runs) == 2, (run_id, step, runs)
        assert victim.pid in {pid for _, pid in runs}, "only the killed worker's were in flight"
        assert len({key for key, _ in runs}) == 1, "the retry carried the same idempotency key"
    # at most one activity per run is in flight, and the victim ran at most 50 runs at once
    assert len({run_id for run_id, _ in twice}) == len(twice) <= 50


def _restart_postgres() -> None:
    clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not clusters or shutil.which("pg_ctlcluster") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must be able to restart the local Postgres with pg_ctlcluster")
        pytest.skip("no local Postgres cluster to restart (pg_ctlcluster)")
    # Immediate mode: the server stops at once, as in a crash, and recovers from its WAL on
    # start. (A "fast" stop waits up to authentication_timeout, 60 s, for a client caught
    # mid-handshake, which made this test time out on a busy machine.)
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", "--mode", "immediate"]
    done = subprocess.run(
        [*command, clusters[-1], "main", "restart"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.alone  # the restart breaks every connection to the server, other tests' too
def test_workers_ride_out_a_postgres_restart(pg: str, processes: Processes, tmp_path: Path) -> None:
    runs = 400
    workers = _spawn(processes, pg, tmp_path, step_seconds=0.3)  # ~3 s of work in all
    anyio.run(_start_runs, pg, runs)
    _wait_until(pg, runs // 4)
    _restart_postgres()
    _wait_until(pg, runs)
    _stop_all(workers)
    assert [proc.returncode for proc in workers] == [0, 0, 0, 0]

    assert _counts(pg) == {"completed": runs}
    grouped = _by_activity(_executions(pg))
    assert len(grouped) == runs * 5
    assert {len(r) for r in grouped.values()} == {1}, "a restart repeats no completed activity"
