"""durable against durable: two installed versions, interleaved, to measure what a change costs.

Usage: python benchmarks/ab_versions.py BEFORE_PYTHON AFTER_PYTHON [--rounds 5] [--steps 1000]
           [--workflows 200] [--replay 2000] [--only step-sqlite ...] [--postgres URL] [--json F]

BEFORE_PYTHON and AFTER_PYTHON are interpreters of two virtual environments, each with its own
durable installed (not editable: the child runs in a temporary directory and must import the
version installed in its environment; the table's header shows which file each one imported).
Each round runs every scenario once with each interpreter, one right after the other (which
goes first alternates by round), with `sdk_durable.py` of this directory, in a fresh process on
a fresh database, as `suite.py` does; so the machine's drift falls on both alike. Prints the
median (min..max) of each side and the median of the per-round ratios after/before.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from suite import SERVER, _fresh_database, _summary

HERE = Path(__file__).parent


def _one(python: str, scenario: str, size: int, server: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        args = [python, str(HERE / "sdk_durable.py"), scenario, str(size), tmp]
        if scenario.endswith("postgres"):
            with _fresh_database(server) as url:
                done = subprocess.run(
                    [*args, url], capture_output=True, text=True, cwd=tmp, check=False
                )
        else:
            done = subprocess.run(args, capture_output=True, text=True, cwd=tmp, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{python} {scenario} failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["value"])


def _origin(python: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        code = "import durable; print(durable.__file__)"
        return subprocess.run(
            [python, "-c", code], capture_output=True, text=True, cwd=tmp, check=True
        ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--replay", type=int, default=2000)
    parser.add_argument("--postgres", default=SERVER, help="server to create databases on")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--only", nargs="*", default=["step-sqlite", "step-sqlite-full", "step-postgres", "wf-100"]
    )
    args = parser.parse_args()
    sides = {"before": args.before, "after": args.after}
    samples: dict[str, dict[str, list[float]]] = {s: {"before": [], "after": []} for s in args.only}
    for r in range(args.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for scenario in args.only:
            size = {"wf": args.workflows, "replay": args.replay}.get(
                scenario.split("-")[0], args.steps
            )
            for side in order:
                value = _one(sides[side], scenario, size, args.postgres)
                samples[scenario][side].append(value)
                print(f"  round {r + 1} {scenario} {side}: {value:.1f}", file=sys.stderr)

    results: dict[str, Any] = {"rounds": args.rounds, "sides": {}, "scenarios": {}}
    for side, python in sides.items():
        results["sides"][side] = {"python": python, "durable": _origin(python)}
        print(f"{side}: {python} -> {results['sides'][side]['durable']}")
    print(f"{'scenario':<18}{'before':>24}{'after':>24}{'after/before':>14}{'(per round)':>16}")
    for scenario, by_side in samples.items():
        ratios = [a / b for a, b in zip(by_side["after"], by_side["before"], strict=True)]
        row = {side: _summary(values) for side, values in by_side.items()}
        row["ratio"] = _summary(ratios)
        results["scenarios"][scenario] = row
        cells = [
            f"{row[s]['median']:.1f} ({row[s]['min']:.0f}..{row[s]['max']:.0f})"
            for s in ("before", "after")
        ]
        print(
            f"{scenario:<18}{cells[0]:>24}{cells[1]:>24}{row['ratio']['median']:>13.2f}x"
            f"{row['ratio']['min']:>9.2f}..{row['ratio']['max']:.2f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
