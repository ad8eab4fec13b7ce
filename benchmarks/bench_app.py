"""Workflows for benchmarks/wakeup.py (imported by the worker process it starts), and the
helpers it shares with tests/test_parking_scale.py: start that worker, read its memory."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import durable


def start_worker(url: str) -> subprocess.Popen[str]:
    """A ``durable worker bench_app`` process on ``url`` (park after 0.2 s, 200 runs at once),
    returned once it is ready, i.e. once SIGTERM stops it cleanly."""
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "durable",
            "worker",
            "bench_app",
            "--store",
            url,
            "--park-after",
            "0.2",
            "--concurrency",
            "200",
        ],
        cwd=Path(__file__).parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    for line in worker.stderr:
        if "durable worker: ready" in line:
            return worker
    worker.communicate()
    raise RuntimeError(f"the worker exited before it was ready ({worker.returncode})")


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@durable.activity
async def stamp() -> float:
    return time.time()


@durable.workflow(name="bench.sleep_until")
async def sleep_until(due: float) -> float:
    """Sleeps until ``due`` (epoch seconds), then records when it woke."""
    now = durable.now().timestamp()
    await durable.sleep(max(due - now, 0.0))
    return await stamp()


@durable.workflow(name="bench.wait_signal")
async def wait_signal() -> float:
    """Waits for signal "go", then records when it resumed."""
    await durable.wait_signal("go")
    return await stamp()
