"""Real crashes: a subprocess is SIGKILLed mid-activity and the same id is run again."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROGRAM = Path(__file__).parent / "programs" / "three_activities.py"


def _spawn(
    url: str, side: Path, run_id: str, delay: float, backend: str = "asyncio"
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(PROGRAM), url, str(side), run_id, str(delay), backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_line(path: Path, prefix: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and any(line.startswith(prefix) for line in path.read_text().splitlines()):
            return
        time.sleep(0.005)
    raise AssertionError(f"{prefix!r} never appeared in {path}")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigkill_during_the_second_activity_then_resume(tmp_path: Path, backend: str) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    side = tmp_path / "side.txt"
    proc = _spawn(url, side, "order-1", delay=60, backend=backend)
    _wait_for_line(side, "second-start")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    rerun = _spawn(url, side, "order-1", delay=0, backend=backend)
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert out.strip() == "order-1-2-3"
    lines = _lines(side)
    assert lines.count("first order-1/1") == 1
    assert lines.count("second-start order-1/2") == 2  # at-least-once: it was in flight
    assert lines.count("second-done order-1/2") == 1
    assert lines.count("third order-1/3") == 1

    again = _spawn(url, side, "order-1", delay=0)  # finished: nothing executes
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert out.strip() == "order-1-2-3" and _lines(side) == lines


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_sigkill_at_a_random_moment_then_resume(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    side = tmp_path / "side.txt"
    proc = _spawn(url, side, "r", delay=0.1)
    _wait_for_line(side, "first")  # the run has started: kill it somewhere in its steps
    time.sleep(rng.uniform(0.0, 0.15))
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    before = _lines(side)
    rerun = _spawn(url, side, "r", delay=0)
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert out.strip() == "order-1-2-3"
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
