"""durable against DBOS Transact and the raw database floor, side by side, in one invocation.

Usage: python benchmarks/suite.py [--repeat 5] [--steps 1000] [--workflows 200]
                                  [--replay 2000] [--json results.json] [--postgres URL]

Every measurement runs in a fresh process (`sdk_durable.py`, `sdk_dbos.py`) against a fresh
database (a new temporary directory; on Postgres a new database created and dropped here), so
nothing is cached across them. Prints one table, median of ``--repeat`` runs with min..max,
and the ratios DBOS / durable and durable / floor; writes the same figures as JSON.
Postgres rows use the local server (127.0.0.1:5432, database ``test`` to create databases
from) and are skipped with a visible line when none answers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
SERVER = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Row:
    """One line of the table: a scenario, what durable and DBOS run, and its floor."""

    label: str
    durable: str | None
    dbos: str | None
    floor: str | None
    size: str  # which --size argument
    higher_is_better: bool = False
    postgres: bool = False
    once: bool = False  # a memory figure, not a timing: one measurement is enough


ROWS = [
    Row(
        "µs/step, SQLite crash-safe (durable default)",
        "step-sqlite",
        "step-sqlite",
        "floor-sqlite",
        "steps",
    ),
    Row(
        "µs/step, SQLite power-safe (synchronous=FULL)",
        "step-sqlite-full",
        "step-sqlite",
        "floor-sqlite-full",
        "steps",
    ),
    Row(
        "µs/step, Postgres",
        "step-postgres",
        "step-postgres",
        "floor-postgres",
        "steps",
        postgres=True,
    ),
    Row(
        "workflows/s, 3 activities, sequential",
        "wf-seq",
        "wf-seq",
        None,
        "workflows",
        higher_is_better=True,
    ),
    Row(
        "workflows/s, 3 activities, 100 in flight",
        "wf-100",
        "wf-100",
        None,
        "workflows",
        higher_is_better=True,
    ),
    Row(
        "µs/recorded step, calling a completed id again",
        "replay-completed",
        "replay-completed",
        None,
        "replay",
    ),
    Row(
        "µs/recorded step, resuming after a crash", "replay-resume", "replay-resume", None, "replay"
    ),
    Row("ms, signal -> resumed in another process", "signal", "signal", None, "signals"),
    Row("ms late, timers due at one instant", "timers", "timers", None, "timers"),
    Row("bytes of worker memory per parked run", "parked", "parked", None, "parked", once=True),
]


def _postgres_answers(url: str) -> str | None:
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception as exc:
        return str(exc).strip() or type(exc).__name__
    return None


@contextmanager
def _fresh_database(server: str) -> Iterator[str]:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _one(sdk: str, scenario: str, size: int, server: str | None) -> dict[str, Any]:
    """Run one measurement in a fresh process on a fresh database."""
    script = HERE / ("sdk_durable.py" if sdk == "durable" else "sdk_dbos.py")
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, str(script), scenario, str(size), tmp]
        if scenario.endswith("postgres"):
            assert server is not None
            with _fresh_database(server) as url:
                done = subprocess.run([*args, url], capture_output=True, text=True, check=False)
        else:
            done = subprocess.run(args, capture_output=True, text=True, check=False, cwd=tmp)
    if done.returncode != 0:
        raise RuntimeError(f"{sdk} {scenario} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _summary(samples: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
    }


def _cell(figures: dict[str, Any], key: str) -> str:
    if key not in figures:
        return "-"
    s = figures[key]
    return f"{s['median']:.1f} ({s['min']:.0f}..{s['max']:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--replay", type=int, default=2000)
    parser.add_argument("--signals", type=int, default=20, help="signals sent, one at a time")
    parser.add_argument("--parked", type=int, default=10_000, help="runs parked at once")
    parser.add_argument("--timers", type=int, default=100, help="timers due at one instant")
    parser.add_argument("--postgres", default=SERVER, help="server to create databases on")
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument("--only", nargs="*", default=None, help="scenarios (durable names)")
    args = parser.parse_args()
    sizes = {
        "steps": args.steps,
        "workflows": args.workflows,
        "replay": args.replay,
        "signals": args.signals,
        "timers": args.timers,
        "parked": args.parked,
    }

    problem = _postgres_answers(args.postgres)
    server = None if problem else args.postgres
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "durable": metadata.version("durable-sdk"),
            "dbos": metadata.version("dbos"),
        },
        "repeat": args.repeat,
        "sizes": sizes,
        "rows": [],
    }
    lines = []
    measured: dict[tuple[str, str, int], list[dict[str, Any]]] = {}  # rows may share one
    header = (
        f"{'scenario':<50}{'durable':>22} {'DBOS':>22}{'floor':>12}"
        f"{'DBOS/durable':>14}{'durable/floor':>15}"
    )
    for row in ROWS:
        if args.only is not None and row.durable not in args.only:
            continue
        if row.postgres and server is None:
            lines.append(f"{row.label:<50}  skipped: no Postgres answers ({problem})")
            continue
        size = sizes[row.size]
        figures: dict[str, Any] = {"label": row.label, "size": size}
        for sdk, scenario in (("durable", row.durable), ("dbos", row.dbos), ("floor", row.floor)):
            if scenario is None:
                continue
            runner = "durable" if sdk == "floor" else sdk
            repeat = 1 if row.once else args.repeat
            key = (runner, scenario, size)
            if key not in measured:
                measured[key] = [_one(runner, scenario, size, server) for _ in range(repeat)]
            outputs = measured[key]
            samples = [float(out["value"]) for out in outputs]
            figures[sdk] = _summary(samples)
            if "threads" in outputs[0]:
                figures[sdk]["threads"] = max(int(out["threads"]) for out in outputs)
            print(f"  {row.label} / {sdk}: {statistics.median(samples):.1f}", file=sys.stderr)
        d, b = figures["durable"]["median"], figures.get("dbos", {}).get("median")
        f = figures.get("floor", {}).get("median")
        if b is not None:
            figures["dbos_over_durable"] = (d / b) if row.higher_is_better else (b / d)
        if f is not None:
            figures["durable_over_floor"] = d / f
        results["rows"].append(figures)

        ratio_b = figures.get("dbos_over_durable")
        ratio_f = figures.get("durable_over_floor")
        lines.append(
            f"{row.label:<50}{_cell(figures, 'durable'):>22} {_cell(figures, 'dbos'):>22}"
            f"{(f'{f:.1f}' if f is not None else '-'):>12}"
            f"{(f'{ratio_b:.1f}x' if ratio_b is not None else '-'):>14}"
            f"{(f'{ratio_f:.2f}x' if ratio_f is not None else '-'):>15}"
        )
    print(
        f"durable {results['machine']['durable']} vs DBOS {results['machine']['dbos']}, "
        f"Python {results['machine']['python']}, {results['machine']['cpus']} CPUs; "
        f"median of {args.repeat} fresh processes (min..max)"
    )
    print("DBOS/durable: how many times faster durable is than DBOS (> 1: durable is faster)")
    print(header)
    for line in lines:
        print(line)
    for row in results["rows"]:
        if "threads" in row.get("durable", {}):
            print(
                f"threads held by {row['size']} parked runs: durable "
                f"{row['durable']['threads']}, DBOS {row['dbos'].get('threads', '-')}"
            )
    results["finished_at"] = time.time()
    args.json.write_text(json.dumps(results, indent=1))
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
