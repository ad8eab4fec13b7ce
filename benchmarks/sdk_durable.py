"""The benchmark scenarios on durable; run by `suite.py`, one scenario per fresh process.

Usage: python benchmarks/sdk_durable.py SCENARIO N WORKDIR [POSTGRES_URL]

Prints one JSON object: ``{"value": ..., "unit": ...}``. Scenarios:

* ``step-sqlite`` / ``step-sqlite-full`` / ``step-postgres``: µs per activity step of one
  workflow of N trivial activities (SQLite default durability / ``durability="power"`` /
  Postgres);
* ``wf-seq``: workflows per second, N workflows of three activities, one after another;
* ``wf-100``: workflows per second, N workflows of three activities, 100 in flight at once;
* ``replay-completed``: µs per recorded step to call a completed N-step id again;
* ``replay-resume``: µs per recorded step to resume a run that crashed after N steps (the
  crash is a separate process killed with ``os._exit`` in step N + 1);
* ``timers``: ms late, median, of N runs parked until one common due time 10 s ahead;
* ``signal``: ms from sending a signal to the resumed run's next activity, for N runs parked in
  a separate worker process (median); ``parked``: resident bytes and threads a worker process
  gains per parked run, for N runs;
* ``floor-sqlite`` / ``floor-sqlite-full`` / ``floor-postgres``: µs per raw INSERT + COMMIT
  (sqlite3 with WAL and synchronous NORMAL / FULL, durable's two modes; one
  single-statement Postgres commit).

Throughput (issue 18), each on SQLite (default durability) or Postgres:

* ``inflight1-sqlite``, ``inflight10-sqlite``, ``inflight100-sqlite`` (and ``-postgres``):
  steps per second of K runs executed at once in this process (``durable.execute`` in K
  tasks), N steps in all (N / K trivial activities each); ``cpu_share`` in the output is this
  process's CPU time over the wall time measured (on Postgres the server's CPU is not in it);
* ``drain-sqlite`` / ``drain-postgres``: steps per second of one in-process
  ``durable.Worker(concurrency=100)`` draining N runs of `DRAIN_STEPS` activities, all started
  (pending) before the worker is; ``runs_per_s`` in the output is the same as runs;
* ``commits-sqlite`` / ``commits-postgres``: raw single-row commits per second (the floors
  above, as a rate): the most a design with one commit per step can reach.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent))

import durable
from durable.backends import SQLStore


@durable.activity(name="bench.noop")
async def noop(i: int) -> int:
    return i


@durable.activity(name="bench.die")
async def die(at: int) -> None:
    if os.environ.get("BENCH_DIE") == "1":
        os._exit(9)  # a crash: nothing after the last recorded step is written


@durable.workflow(name="bench.steps")
async def steps(n: int) -> int:
    total = 0
    for i in range(n):
        total += await noop(i)
    await die(n)
    return total


@durable.workflow(name="bench.noops")
async def noops(n: int) -> int:
    """Exactly ``n`` trivial activities (the throughput scenarios count every step)."""
    total = 0
    for i in range(n):
        total += await noop(i)
    return total


DRAIN_STEPS = 10
"""Activities per run in the ``drain-*`` scenarios (`sdk_dbos.py` runs the same)."""

DRAIN_CONCURRENCY = 100
"""Runs the draining worker executes at once."""


@durable.workflow(name="bench.three")
async def three(i: int) -> int:
    return await noop(i) + await noop(i) + await noop(i)


def _store(scenario: str, workdir: Path, pg: str | None) -> SQLStore:
    if scenario.endswith("postgres"):
        assert pg is not None
        return SQLStore(pg)
    durability = "power" if scenario.endswith("full") else "process"
    return SQLStore(f"sqlite:///{workdir / 'durable.db'}", durability=durability)  # type: ignore[arg-type]


async def _step(scenario: str, n: int, workdir: Path, pg: str | None) -> float:
    async with _store(scenario, workdir, pg) as store:
        await durable.execute(steps, 3, id="warm-up", store=store)
        started = time.perf_counter()
        await durable.execute(steps, n, id="measured", store=store)
        return (time.perf_counter() - started) / (n + 1) * 1e6


async def _workflows(n: int, workdir: Path, concurrent: int) -> float:
    async with _store("sqlite", workdir, None) as store:
        await durable.execute(three, -1, id="warm-up", store=store)
        started = time.perf_counter()
        if concurrent == 1:
            for i in range(n):
                await durable.execute(three, i, id=f"w{i}", store=store)
        else:
            limit = anyio.Semaphore(concurrent)

            async def one(i: int) -> None:
                async with limit:
                    await durable.execute(three, i, id=f"w{i}", store=store)

            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i)
        return n / (time.perf_counter() - started)


async def _in_flight(scenario: str, n: int, workdir: Path, pg: str | None) -> dict[str, Any]:
    """K runs at once (K from the scenario's name), ``n`` steps in all."""
    runs = int(scenario.split("-")[0].removeprefix("inflight"))
    per_run = max(n // runs, 1)
    async with _store(scenario, workdir, pg) as store:
        await durable.execute(noops, 3, id="warm-up", store=store)
        started, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for r in range(runs):
                tg.start_soon(partial(durable.execute, noops, per_run, id=f"r{r}", store=store))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "value": runs * per_run / elapsed,
        "unit": "steps/s",
        "runs_per_s": runs / elapsed,
        "cpu_share": cpu / elapsed,
    }


async def _drain(scenario: str, n: int, workdir: Path, pg: str | None) -> dict[str, Any]:
    """One in-process worker drains ``n`` runs that were all started before it."""
    async with _store(scenario, workdir, pg) as store:
        await durable.execute(noops, 3, id="warm-up", store=store)
        for i in range(n):
            await durable.start(noops, DRAIN_STEPS, id=f"d{i:05d}", store=store)
        worker = durable.Worker(store, [noops], concurrency=DRAIN_CONCURRENCY)
        started, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            while worker.completed < n:  # noqa: ASYNC110 (the finish line, looked at every 5 ms)
                await anyio.sleep(0.005)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            worker.stop()
        for i in (0, n - 1):  # they ran to the end, not to a failure
            assert await durable.get_handle(f"d{i:05d}", store).result() == sum(range(DRAIN_STEPS))
    return {
        "value": n * DRAIN_STEPS / elapsed,
        "unit": "steps/s",
        "runs_per_s": n / elapsed,
        "cpu_share": cpu / elapsed,
    }


async def _replay_completed(n: int, workdir: Path) -> float:
    async with _store("sqlite", workdir, None) as store:
        await durable.execute(steps, n, id="done", store=store)
        started = time.perf_counter()
        await durable.execute(steps, n, id="done", store=store)
        return (time.perf_counter() - started) / n * 1e6


def _replay_resume(n: int, workdir: Path) -> float:
    """A child process records N steps and dies in step N + 1; this one resumes the run."""
    env = {**os.environ, "BENCH_DIE": "1"}
    code = (
        "import sys, anyio, durable; sys.path.insert(0, sys.argv[1]); import sdk_durable as b; "
        "from durable.backends import SQLStore; "
        "anyio.run(lambda: durable.execute(b.steps, int(sys.argv[2]), id='crashed', "
        "store=SQLStore(sys.argv[3])))"
    )
    url = f"sqlite:///{workdir / 'durable.db'}"
    died = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(n), url],
        env=env,
        check=False,
    )
    assert died.returncode == 9, died

    async def resume() -> float:
        async with SQLStore(url) as check:  # its own connection: the timed one starts cold
            recorded = await check.load_steps("crashed")  # n steps, and the one it died in
            assert sum(step.status == "completed" for step in recorded) == n
        async with SQLStore(url) as store:
            started = time.perf_counter()
            await durable.execute(steps, n, id="crashed", store=store)
            return (time.perf_counter() - started) / n * 1e6

    return anyio.run(resume)


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Threads for process {pid}")


def _with_worker(workdir: Path, fn: Any, n: int) -> Any:
    """Run ``fn(url, worker_pid, n)`` while a `durable worker bench_app` process serves."""
    import bench_app

    url = f"sqlite:///{workdir / 'durable.db'}"
    anyio.run(SQLStore(url).close)
    worker = bench_app.start_worker(url)
    try:
        return anyio.run(fn, url, worker.pid, n)
    finally:
        worker.terminate()
        worker.communicate(timeout=60)


async def _signal(url: str, pid: int, n: int) -> float:
    import bench_app

    latencies = []
    async with SQLStore(url) as store:
        ids = [f"s{i}" for i in range(n)]
        for run_id in ids:
            await durable.start(bench_app.wait_signal, id=run_id, store=store)
        await bench_app.until(store, ids, {durable.RunStatus.WAITING})
        for run_id in ids:
            sent = time.time()
            await durable.signal(run_id, "go", store=store)
            resumed = await durable.get_handle(run_id, store).result()
            latencies.append((resumed - sent) * 1000)
    return sorted(latencies)[len(latencies) // 2]


async def _timers(url: str, pid: int, n: int) -> float:
    import bench_app

    due = time.time() + 10.0  # all are started and parked well before
    async with SQLStore(url) as store:
        ids = [f"t{i}" for i in range(n)]
        for run_id in ids:
            await durable.start(bench_app.sleep_until, due, id=run_id, store=store)
        await bench_app.until(store, ids, {durable.RunStatus.COMPLETED})
        late = [(await durable.get_handle(i, store).result() - due) * 1000 for i in ids]
    return sorted(late)[len(late) // 2]


async def _parked(url: str, pid: int, n: int) -> dict[str, float]:
    import bench_app

    await anyio.sleep(1.0)  # the worker is up and idle
    rss, threads = bench_app.rss_kib(pid), _threads(pid)
    async with SQLStore(url) as store:
        ids = [f"p{i}" for i in range(n)]
        for run_id in ids:
            await durable.start(bench_app.sleep_until, time.time() + 3600, id=run_id, store=store)
        await bench_app.until(store, ids, {durable.RunStatus.SLEEPING})
    await anyio.sleep(1.0)
    return {
        "bytes_per_run": (bench_app.rss_kib(pid) - rss) * 1024 / n,
        "threads": _threads(pid) - threads,
    }


def _floor_sqlite(n: int, workdir: Path, full: bool) -> float:
    db = sqlite3.connect(workdir / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")  # durable's journal, in both modes
    db.execute("PRAGMA synchronous = " + ("FULL" if full else "NORMAL"))
    db.execute(
        "CREATE TABLE steps (run_id TEXT, seq INTEGER, result BLOB, PRIMARY KEY (run_id, seq))"
    )
    payload = b"\x80" * 24
    started = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO steps VALUES (?, ?, ?)", ("run", i, payload))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed / n * 1e6


def _floor_postgres(n: int, pg: str) -> float:
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE floor_steps (run_id TEXT, seq INTEGER, result BYTEA, "
            "PRIMARY KEY (run_id, seq))"
        )
        payload = b"\x80" * 24
        started = time.perf_counter()
        for i in range(n):
            conn.execute("INSERT INTO floor_steps VALUES (%s, %s, %s)", ("run", i, payload))
        return (time.perf_counter() - started) / n * 1e6


def measure(scenario: str, n: int, workdir: Path, pg: str | None) -> dict[str, Any]:
    if scenario.startswith("step-"):
        return {"value": anyio.run(_step, scenario, n, workdir, pg), "unit": "us/step"}
    if scenario == "wf-seq":
        return {"value": anyio.run(_workflows, n, workdir, 1), "unit": "workflows/s"}
    if scenario == "wf-100":
        return {"value": anyio.run(_workflows, n, workdir, 100), "unit": "workflows/s"}
    if scenario == "replay-completed":
        return {"value": anyio.run(_replay_completed, n, workdir), "unit": "us/step"}
    if scenario == "replay-resume":
        return {"value": _replay_resume(n, workdir), "unit": "us/step"}
    if scenario == "signal":
        return {"value": _with_worker(workdir, _signal, n), "unit": "ms"}
    if scenario == "timers":
        return {"value": _with_worker(workdir, _timers, n), "unit": "ms"}
    if scenario == "parked":
        parked = _with_worker(workdir, _parked, n)
        return {"value": parked["bytes_per_run"], "unit": "bytes/run", "threads": parked["threads"]}
    if scenario in ("floor-sqlite", "floor-sqlite-full"):
        return {"value": _floor_sqlite(n, workdir, scenario.endswith("full")), "unit": "us/step"}
    if scenario == "floor-postgres":
        assert pg is not None
        return {"value": _floor_postgres(n, pg), "unit": "us/step"}
    if scenario.startswith("inflight"):
        return anyio.run(_in_flight, scenario, n, workdir, pg)
    if scenario.startswith("drain-"):
        return anyio.run(_drain, scenario, n, workdir, pg)
    if scenario == "commits-sqlite":
        return {"value": 1e6 / _floor_sqlite(n, workdir, False), "unit": "commits/s"}
    if scenario == "commits-postgres":
        assert pg is not None
        return {"value": 1e6 / _floor_postgres(n, pg), "unit": "commits/s"}
    raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    name, count, directory = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    print(json.dumps(measure(name, count, directory, sys.argv[4] if len(sys.argv) > 4 else None)))
