"""Real crashes: a subprocess is SIGKILLed mid-activity and the same id is run again."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import PROGRAMS, Processes, eventually_sync, python

PROGRAM = PROGRAMS / "three_activities.py"


def _args(url: str, side: Path, run_id: str, delay: float, backend: str) -> list[str]:
    return [str(PROGRAM), url, str(side), run_id, str(delay), backend]


def _kill_at(
    processes: Processes, url: str, side: Path, run_id: str, delay: float, backend: str = "asyncio"
) -> subprocess.Popen[bytes]:
    """Start the program; return once it is running (its log beside the side file)."""
    log = side.with_suffix(".log")
    return processes.spawn(_args(url, side, run_id, delay, backend), log)


def _run(
    url: str, side: Path, run_id: str, backend: str = "asyncio"
) -> subprocess.CompletedProcess[str]:
    """Run the program to its end (its activities do not wait)."""
    return python(*_args(url, side, run_id, 0, backend), cwd=side.parent, timeout=60)


def _has_line(path: Path, prefix: str) -> bool:
    return path.exists() and any(line.startswith(prefix) for line in path.read_text().splitlines())


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigkill_during_the_second_activity_then_resume(
    processes: Processes, tmp_path: Path, backend: str
) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    side = tmp_path / "side.txt"
    proc = _kill_at(processes, url, side, "order-1", delay=60, backend=backend)
    eventually_sync("the second activity's start", lambda: _has_line(side, "second-start"))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    rerun = _run(url, side, "order-1", backend=backend)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == "order-1-2-3"
    lines = _lines(side)
    assert lines.count("first order-1/1") == 1
    assert lines.count("second-start order-1/2") == 2  # at-least-once: it was in flight
    assert lines.count("second-done order-1/2") == 1
    assert lines.count("third order-1/3") == 1

    again = _run(url, side, "order-1")  # finished: nothing executes
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "order-1-2-3" and _lines(side) == lines


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_sigkill_at_a_random_moment_then_resume(
    processes: Processes, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    side = tmp_path / "side.txt"
    proc = _kill_at(processes, url, side, "r", delay=0.1)
    # the run has started: kill it somewhere in its steps
    eventually_sync("the first activity", lambda: _has_line(side, "first"))
    time.sleep(rng.uniform(0.0, 0.15))  # the moment of the kill: random on purpose
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _lines(side)
    rerun = _run(url, side, "r")
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == "order-1-2-3"
    lines = _lines(side)
    # Every activity completed; one that finished before the kill never ran again; only the one
    # in flight at the kill may have run twice (with the same idempotency key).
    for name, key in (("first", "r/1"), ("second-done", "r/2"), ("third", "r/3")):
        assert lines.count(f"{name} {key}") in (1, 2)
    starts = [lines.count(x) for x in ("first r/1", "second-start r/2", "third r/3")]
    assert sum(starts) <= 4
    rerun_lines = lines[len(before) :]
    for earlier, later in (("first r/1", "second-start r/2"), ("second-done r/2", "third r/3")):
        if later in before:  # the next step had started, so this one was recorded: not again
            assert earlier not in rerun_lines
