"""10,000 parked runs under one worker process: memory does not grow with their number, and
they all wake and complete when due (issue: parking at zero cost).

The runs are due an hour from now on the worker's clock, which the test moves a day forward
(SIGUSR1, tests/programs/parking_worker.py) once every run is parked and the worker measured: no
wall-clock deadline for the parking, so a slow machine only makes the test slower. The waits
below are hang guards."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from support import PROGRAMS, Processes, eventually, stop, wait_for_log

import durable
from durable import RunStatus
from durable.backends import SQLStore

sys.path.insert(0, str(PROGRAMS))
import parking_worker

BENCH = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_app  # noqa: E402

RUNS = 10_000
HANG = 900  # seconds: far more than a busy 2-core machine needs for either phase

pytestmark = pytest.mark.timeout(3 * HANG)


async def _count(store: SQLStore, status: RunStatus) -> int:
    return len(await store.list_runs(status=status, limit=RUNS + 1))


async def _until_all(store: SQLStore, status: RunStatus) -> None:
    async def all_there() -> bool:  # polls the store, as an operator's dashboard would
        return await _count(store, status) >= RUNS

    await eventually(f"{RUNS} runs {status.value}", all_there, within=HANG, every=0.5)


def _start_worker(processes: Processes, url: str, log: Path) -> subprocess.Popen[bytes]:
    """The worker process, returned once it is ready (SIGTERM then stops it cleanly)."""
    worker = processes.spawn([str(PROGRAMS / "parking_worker.py"), url], log)
    wait_for_log(worker, log, "ready", within=HANG)
    return worker


def test_ten_thousand_parked_runs(processes: Processes, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'many.db'}"
    log = tmp_path / "worker.log"
    worker = _start_worker(processes, url, log)

    async def scenario() -> tuple[int, int, float, list[float]]:
        async with SQLStore(url) as store:
            await anyio.sleep(1.0)
            idle = bench_app.rss_kib(worker.pid)
            due = time.time() + 3600  # the worker's clock passes it only when the test says
            for i in range(RUNS):
                await durable.start(parking_worker.sleep_until, due, id=f"r{i}", store=store)
            await _until_all(store, RunStatus.SLEEPING)
            parked = bench_app.rss_kib(worker.pid)
            running = [r for r in await store.list_runs(limit=RUNS + 1) if r.lease_owner]
            assert running == []  # parked runs hold no lease (and no task in the worker)
            assert await _count(store, RunStatus.COMPLETED) == 0  # none woke before it was due
            worker.send_signal(signal.SIGUSR1)  # a day passes for the worker: all are due
            await _until_all(store, RunStatus.COMPLETED)
            woke = [await durable.get_handle(f"r{i}", store).result() for i in range(RUNS)]
            return idle, parked, due, woke

    try:
        idle, parked, due, woke = anyio.run(scenario)
    finally:
        stop(worker, timeout=60)
    assert worker.returncode == 0, log.read_text()
    grown_mib = (parked - idle) / 1024
    # Generous: about 5 KiB per run would still pass; measured ~0.6 KiB (benchmarks/wakeup.py).
    assert grown_mib < 50, f"the worker grew by {grown_mib:.1f} MiB for {RUNS} parked runs"
    assert len(woke) == RUNS and min(woke) >= due  # all woke, none before it was due
