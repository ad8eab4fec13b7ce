"""A process really dies (SIGKILL) in the middle of undoing a saga; the rerun finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PROGRAM = Path(__file__).parent / "programs" / "saga_trip.py"


def _run(url: str, side: Path, hold: bool) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(PROGRAM), url, str(side), "trip-1", "1" if hold else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_between_two_undos_then_resume(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'saga.db'}"
    side = tmp_path / "side.txt"
    proc = _run(url, side, hold=True)
    deadline = time.monotonic() + 30
    while "hotel undo waiting" not in (side.read_text() if side.exists() else ""):
        assert time.monotonic() < deadline, "the hotel undo never started"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    lines = side.read_text().splitlines()
    assert lines == [
        "flight LH1",
        "hotel Rome",
        "car Rome",
        "undo car Rome car-Rome",
        "hotel undo waiting",
    ]

    rerun = _run(url, side, hold=False)
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert out.strip() == "failed: card declined"
    lines = side.read_text().splitlines()
    for effect in (
        "flight LH1",
        "hotel Rome",
        "car Rome",
        "undo car Rome car-Rome",
        "undo hotel Rome",
        "undo flight LH1",
    ):
        assert lines.count(effect) == 1, (effect, lines)
    assert lines.index("undo hotel Rome") < lines.index("undo flight LH1")
