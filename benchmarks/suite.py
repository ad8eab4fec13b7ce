"""durable against DBOS Transact and the raw database floor, side by side, in one invocation.

Usage: python benchmarks/suite.py [--group all|core|throughput] [--quick] [--repeat 5]
                                  [--steps 1000] [--workflows 200] [--replay 2000]
                                  [--in-flight-steps 10000] [--drain-runs 1000]
                                  [--json results.json] [--postgres URL] [--only SCENARIO ...]

Every measurement runs in a fresh process (`sdk_durable.py`, `sdk_dbos.py`) against a fresh
database (a new temporary directory; on Postgres a new database created and dropped here), so
nothing is cached across them. The measurements are taken in rounds: each round measures every
scenario once, so the machine's drift falls on all of them alike. Prints one table, median of
``--repeat`` rounds with min..max, and the ratios DBOS / durable and durable / floor; writes
the same figures as JSON. Postgres rows use the local server (127.0.0.1:5432, database
``test`` to create databases from) and are skipped with a visible line when none answers.

Groups: ``core`` is the per-step, per-workflow, replay, wake-up and memory rows;
``throughput`` (issue 18) is steps per second with 1, 10 and 100 runs in flight in one process,
a ``Worker(concurrency=100)`` draining runs against DBOS draining a queue with 100 at once, and
the raw single-row commit rate each is compared with; after the table it prints the ratios
the issue's targets are about (100 in flight / 1 in flight; one run's step against one raw
commit).
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
    durable: str
    dbos: str | None
    floor: str | None
    size: str  # which --size argument
    higher_is_better: bool = False
    postgres: bool = False
    once: bool = False  # a memory figure, not a timing: one measurement is enough
    field: str = "value"  # which figure of the scenario's output the row shows
    floor_size: str | None = None  # the floor's --size argument, if not ``size``
    group: str = "core"


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


def _throughput_rows() -> list[Row]:
    """Issue 18's rows: runs in flight in one process, a draining worker, on both databases."""
    rows = []
    for db, name in (("sqlite", "SQLite"), ("postgres", "Postgres")):
        floor, pg = f"commits-{db}", db == "postgres"
        for runs in (1, 10, 100):
            label = f"steps/s, {runs} run{'s' if runs > 1 else ''} in flight, {name}"
            rows.append(
                Row(
                    label,
                    f"inflight{runs}-{db}",
                    None,
                    floor,
                    "in_flight",
                    True,
                    pg,
                    floor_size="in_flight",
                    group="throughput",
                )
            )
        for unit, field, row_floor in (("steps/s", "value", floor), ("runs/s", "runs_per_s", None)):
            rows.append(
                Row(
                    f"{unit}, worker draining, 100 at once, {name}",
                    f"drain-{db}",
                    f"drain-{db}",
                    row_floor,
                    "drain",
                    True,
                    pg,
                    field=field,
                    floor_size="in_flight",
                    group="throughput",
                )
            )
    return rows


ROWS += _throughput_rows()

QUICK = {  # --quick: sizes small enough for a first look in about two minutes
    "repeat": 3,
    "steps": 200,
    "workflows": 50,
    "replay": 500,
    "signals": 5,
    "parked": 1000,
    "timers": 20,
    "in_flight_steps": 2000,
    "drain_runs": 200,
}


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


def _targets(rows: list[dict[str, Any]]) -> list[str]:
    """The ratios issue 18's targets are about, from the throughput rows measured: the ratio
    of the medians, and the median (min..max) of the ratios taken within each round."""
    by_scenario = {row["scenario"]: row for row in rows if row.get("field") == "value"}
    lines = []

    def ratio(top: dict[str, Any], bottom: dict[str, Any]) -> str:
        rounds = [a / b for a, b in zip(top["samples"], bottom["samples"], strict=False)]
        return (
            f"{top['median'] / bottom['median']:.2f}x (per round {statistics.median(rounds):.2f}x,"
            f" {min(rounds):.2f}..{max(rounds):.2f})"
        )

    for db, name, target in (("sqlite", "SQLite", 10.0), ("postgres", "Postgres", 5.0)):
        one, hundred = by_scenario.get(f"inflight1-{db}"), by_scenario.get(f"inflight100-{db}")
        if one is None or hundred is None:
            continue
        holds = hundred["durable"]["median"] / one["durable"]["median"] >= target
        lines.append(
            f"{name}: 100 in flight / 1 in flight = {ratio(hundred['durable'], one['durable'])}; "
            f"target >= {target:g}x: {'holds' if holds else 'does not hold'}"
        )
        if "floor" in one:
            holds = one["floor"]["median"] / one["durable"]["median"] <= 2.0
            lines.append(
                f"{name}: one run's step costs {ratio(one['floor'], one['durable'])} a raw "
                f"commit; target <= 2x: {'holds' if holds else 'does not hold'}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--group", choices=("all", "core", "throughput"), default="all")
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 rounds")
    parser.add_argument(
        "--repeat", type=int, default=None, help="rounds (default 5; --group throughput: 3)"
    )
    parser.add_argument("--steps", type=int, default=None, help="default 1000")
    parser.add_argument("--workflows", type=int, default=None, help="default 200")
    parser.add_argument("--replay", type=int, default=None, help="default 2000")
    parser.add_argument("--signals", type=int, default=None, help="signals sent, one at a time")
    parser.add_argument("--parked", type=int, default=None, help="runs parked at once")
    parser.add_argument("--timers", type=int, default=None, help="timers due at one instant")
    parser.add_argument(
        "--in-flight-steps", type=int, default=None, help="steps in all, per in-flight row"
    )
    parser.add_argument("--drain-runs", type=int, default=None, help="runs the worker drains")
    parser.add_argument("--postgres", default=SERVER, help="server to create databases on")
    parser.add_argument("--json", type=Path, default=None, help="default: results.json")
    parser.add_argument("--only", nargs="*", default=None, help="scenarios (durable names)")
    args = parser.parse_args()
    defaults = {
        "repeat": 5,
        "steps": 1000,
        "workflows": 200,
        "replay": 2000,
        "signals": 20,
        "parked": 10_000,
        "timers": 100,
        "in_flight_steps": 10_000,
        "drain_runs": 1000,
    }
    if args.group == "throughput":
        defaults["repeat"] = 3  # its DBOS drains take a minute each: ten minutes in all
    if args.quick:
        defaults.update(QUICK)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.json is None:
        args.json = HERE / ("results.json" if args.group == "all" else f"results-{args.group}.json")
    sizes = {
        "steps": args.steps,
        "workflows": args.workflows,
        "replay": args.replay,
        "signals": args.signals,
        "timers": args.timers,
        "parked": args.parked,
        "in_flight": args.in_flight_steps,
        "drain": args.drain_runs,
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
        "group": args.group,
        "sizes": sizes,
        "rows": [],
        "started_at": time.time(),
    }
    rows = [
        row
        for row in ROWS
        if (args.group == "all" or row.group == args.group)
        and (args.only is None or row.durable in args.only)
    ]
    skipped = [row for row in rows if row.postgres and server is None]
    rows = [row for row in rows if row not in skipped]

    # What to measure: (runner, scenario, size) -> how many times. Rows may share one.
    wanted: dict[tuple[str, str, int], int] = {}
    for row in rows:
        for sdk, scenario in (("durable", row.durable), ("dbos", row.dbos), ("floor", row.floor)):
            if scenario is None:
                continue
            runner = "durable" if sdk == "floor" else sdk
            size = sizes[row.floor_size or row.size] if sdk == "floor" else sizes[row.size]
            repeat = 1 if row.once else args.repeat
            wanted[(runner, scenario, size)] = max(wanted.get((runner, scenario, size), 0), repeat)
    measured: dict[tuple[str, str, int], list[dict[str, Any]]] = {key: [] for key in wanted}
    for round_ in range(args.repeat):  # every scenario once per round: drift falls on all
        for key, times in wanted.items():
            if round_ < times:
                runner, scenario, size = key
                out = _one(runner, scenario, size, server)
                measured[key].append(out)
                print(
                    f"  round {round_ + 1}: {runner} {scenario} {size}: {out['value']:.1f}",
                    file=sys.stderr,
                )

    lines = [f"{row.label:<50}  skipped: no Postgres answers ({problem})" for row in skipped]
    header = (
        f"{'scenario':<50}{'durable':>22} {'DBOS':>22}{'floor':>12}"
        f"{'DBOS/durable':>14}{'durable/floor':>15}"
    )
    for row in rows:
        figures: dict[str, Any] = {
            "label": row.label,
            "scenario": row.durable,
            "field": row.field,
            "size": sizes[row.size],
        }
        for sdk, scenario in (("durable", row.durable), ("dbos", row.dbos), ("floor", row.floor)):
            if scenario is None:
                continue
            runner = "durable" if sdk == "floor" else sdk
            size = sizes[row.floor_size or row.size] if sdk == "floor" else sizes[row.size]
            outputs = measured[(runner, scenario, size)]
            field = "value" if sdk == "floor" else row.field
            figures[sdk] = _summary([float(out[field]) for out in outputs])
            if "threads" in outputs[0]:
                figures[sdk]["threads"] = max(int(out["threads"]) for out in outputs)
            if "cpu_share" in outputs[0]:
                figures[sdk]["cpu_share"] = statistics.median(out["cpu_share"] for out in outputs)
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
        f"median of {args.repeat} rounds, each measurement a fresh process (min..max)"
    )
    print("DBOS/durable: how many times faster durable is than DBOS (> 1: durable is faster)")
    if any(row.group == "throughput" for row in rows):
        print(
            f"throughput rows: {args.in_flight_steps} steps in all per in-flight row (split "
            f"over the runs); the worker drains {args.drain_runs} runs of 10 steps; floor: raw "
            "single-row commits/s of the same database"
        )
    print(header)
    for line in lines:
        print(line)
    for row in results["rows"]:
        if "threads" in row.get("durable", {}):
            print(
                f"threads held by {row['size']} parked runs: durable "
                f"{row['durable']['threads']}, DBOS {row['dbos'].get('threads', '-')}"
            )
    shares = [
        f"{row['scenario']} {row['durable']['cpu_share']:.0%}"
        + (f" (DBOS {row['dbos']['cpu_share']:.0%})" if "cpu_share" in row.get("dbos", {}) else "")
        for row in results["rows"]
        if "cpu_share" in row["durable"] and row["field"] == "value"
    ]
    if shares:
        print("the measuring process's CPU time / wall time (median): " + ", ".join(shares))
    targets = _targets(results["rows"])
    for line in targets:
        print(line)
    results["targets"] = targets
    results["finished_at"] = time.time()
    args.json.write_text(json.dumps(results, indent=1))
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
