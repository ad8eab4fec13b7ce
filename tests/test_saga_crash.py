"""A process really dies (SIGKILL) in the middle of undoing a saga; the rerun finishes it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from support import PROGRAMS, Processes, eventually_sync, python

PROGRAM = PROGRAMS / "saga_trip.py"


def _args(url: str, side: Path, hold: bool) -> list[str]:
    return [str(PROGRAM), url, str(side), "trip-1", "1" if hold else "0"]


def test_sigkill_between_two_undos_then_resume(processes: Processes, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'saga.db'}"
    side = tmp_path / "side.txt"
    proc = processes.spawn(_args(url, side, hold=True), tmp_path / "held.log")
    eventually_sync(
        "the start of the hotel undo",
        lambda: "hotel undo waiting" in (side.read_text() if side.exists() else ""),
        within=30,
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = side.read_text().splitlines()
    assert lines == [
        "flight LH1",
        "hotel Rome",
        "car Rome",
        "undo car Rome car-Rome",
        "hotel undo waiting",
    ]

    rerun = python(*_args(url, side, hold=False), cwd=tmp_path, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == "failed: card declined"
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
