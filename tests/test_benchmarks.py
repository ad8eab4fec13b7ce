"""The benchmark scripts run (tiny sizes) and print their table. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "benchmarks"


def test_step_cost_smoke(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "step_cost.py"),
            "--steps",
            "20",
            "--repeat",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("memory", "sqlite", "sqlite-full", "replay-sqlite", "floor-sqlite"):
        assert name in proc.stdout
    figures = json.loads(out.read_text())
    assert figures["steps"] == 20
    assert all(v["median"] > 0 for v in figures["results"].values())


def test_wakeup_smoke(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "wakeup.py"),
            "--timers",
            "3",
            "--signals",
            "2",
            "--parked",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    for line in ("timer lateness, ms", "signal -> resumed, ms", "20 parked runs"):
        assert line in proc.stdout
