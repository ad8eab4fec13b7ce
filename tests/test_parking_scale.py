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

import durable
from durable import RunStatus
from durable.backends import SQLStore

PROGRAMS = Path(__file__).parent / "programs"
sys.path.insert(0, str(PROGRAMS))
import parking_worker  # noqa: E402

BENCH = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_app  # noqa: E402

RUNS = 10_000
HANG = 900  # seconds: far more than a busy 2-core machine needs for either phase

pytestmark = pytest.mark.timeout(3 * HANG)


async def _count(store: SQLStore, status: RunStatus) -> int:
    return len(await store.list_runs(status=status, limit=RUNS + 1))


async def _until_all(store: SQLStore, status: RunStatus) -> None:
    with anyio.fail_after(HANG):
        for _ in range(100_000):  # polls the store, as an operator's dashboard would
            if await _count(store, status) >= RUNS:
                return
            await anyio.sleep(0.5)


def _start_worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    """The worker process, returned once it is ready (SIGTERM then stops it cleanly)."""
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, str(PROGRAMS / "parking_worker.py"), url],
            cwd=PROGRAMS,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    deadline = time.monotonic() + HANG
    while b"ready" not in log.read_bytes():
        assert worker.poll() is None, f"the worker exited: {log.read_text()}"
        assert time.monotonic() < deadline, f"the worker never got ready: {log.read_text()}"
        time.sleep(0.05)
    return worker


def test_ten_thousand_parked_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'many.db'}"
    log = tmp_path / "worker.log"
    worker = _start_worker(url, log)

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
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, log.read_text()
    grown_mib = (parked - idle) / 1024
    # Generous: about 5 KiB per run would still pass; measured ~0.6 KiB (benchmarks/wakeup.py).
    assert grown_mib < 50, f"the worker grew by {grown_mib:.1f} MiB for {RUNS} parked runs"
    assert len(woke) == RUNS and min(woke) >= due  # all woke, none before it was due
