"""What one durable step costs: µs per activity step, per replayed step, and the raw floor.

Usage: python benchmarks/step_cost.py [--steps 1000] [--repeat 5] [--json out.json]

Everything runs in this one process, in a fresh temporary directory, so the figures are
comparable with each other:

* ``memory``: a 1,000-activity workflow on `MemoryStore` (the engine's own cost);
* ``sqlite``: the same on `SQLStore` with the default durability (WAL, synchronous=NORMAL:
  survives a process crash), and ``sqlite-full`` (synchronous=FULL: survives power loss);
* ``memory-signed`` / ``sqlite-signed``: the same with a secret key (every payload signed with
  HMAC-SHA256 when written and verified when read; README "Security");
* ``replay``: resuming a run whose 1,000 steps are recorded (each returns its recorded result);
* ``floor``: raw ``sqlite3`` INSERT + COMMIT of a row of the same shape, in each mode.

Reported: the median of ``--repeat`` repetitions (min..max), and the ratios durable / floor.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio

import durable
from durable.backends import MemoryStore, SQLStore
from durable.store import Store

KEY = "benchmark-secret-key-0123456789"


class Crash(BaseException):
    """Stops a run without recording anything, like a killed process."""


@durable.activity
async def noop(i: int) -> int:
    return i


_crash_armed: list[bool] = []


@durable.activity
async def crash_here() -> None:
    if _crash_armed:
        _crash_armed.clear()
        raise Crash


@durable.workflow(name="bench.steps")
async def steps(n: int, crash: bool) -> int:
    total = 0
    for i in range(n):
        total += await noop(i)
    if crash:
        await crash_here()
    return total


async def _timed(fn: Callable[[], Coroutine[Any, Any, Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def per_step(make_store: Callable[[], Store], n: int, run_id: str) -> float:
    """µs per activity step of one n-step run."""
    async with make_store() as store:
        seconds = await _timed(lambda: durable.execute(steps, n, False, id=run_id, store=store))
    return seconds / n * 1e6


async def per_replayed_step(make_store: Callable[[], Store], n: int, run_id: str) -> float:
    """µs per recorded step when a run with n recorded steps resumes."""
    async with make_store() as store:
        _crash_armed.append(True)
        try:
            await durable.execute(steps, n, True, id=run_id, store=store)
        except Crash:
            pass
        seconds = await _timed(lambda: durable.execute(steps, n, True, id=run_id, store=store))
    return seconds / n * 1e6


def sqlite_floor(path: Path, synchronous: str, n: int) -> float:
    """µs per raw INSERT + COMMIT of a step-shaped row (WAL, the given synchronous mode)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute(
        "CREATE TABLE steps (run_id TEXT, seq INTEGER, kind TEXT, name TEXT, status TEXT,"
        " attempts INTEGER, started_at REAL, finished_at REAL, result BLOB,"
        " PRIMARY KEY (run_id, seq))"
    )
    payload = b"\xd1p" + os.urandom(16)
    start = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO steps VALUES (?, ?, 'activity', 'bench.noop', 'completed', 1, ?, ?, ?)",
            ("floor", i, time.time(), time.time(), payload),
        )
        db.execute("COMMIT")
    seconds = time.perf_counter() - start
    db.close()
    return seconds / n * 1e6


def _summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


async def measure(n: int, repeat: int, workdir: Path) -> dict[str, dict[str, float]]:
    """Every scenario ``repeat`` times; returns name -> {median, min, max} in µs."""
    samples: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    for r in range(repeat):

        def sqlite(mode: str, r: int = r, key: str | None = None) -> Callable[[], Store]:
            url = f"sqlite:///{workdir / f'{mode}-{r}-{key is not None}.db'}"
            keys = [] if key is None else [key]
            return lambda: SQLStore(url, durability=mode, secret_keys=keys)  # type: ignore[arg-type]

        def signed_memory() -> Store:
            return MemoryStore(secret_keys=KEY)

        add("memory", await per_step(MemoryStore, n, f"m{r}"))
        add("sqlite", await per_step(sqlite("process"), n, f"s{r}"))
        add("sqlite-full", await per_step(sqlite("power"), n, f"f{r}"))
        add("memory-signed", await per_step(signed_memory, n, f"ms{r}"))
        add("sqlite-signed", await per_step(sqlite("process", key=KEY), n, f"ss{r}"))
        add("replay-memory", await per_replayed_step(MemoryStore, n, f"rm{r}"))
        add("replay-sqlite", await per_replayed_step(sqlite("process"), n, f"rs{r}"))
        add("floor-sqlite", sqlite_floor(workdir / f"floor-normal-{r}.db", "NORMAL", n))
        add("floor-sqlite-full", sqlite_floor(workdir / f"floor-full-{r}.db", "FULL", n))
    return {name: _summary(values) for name, values in samples.items()}


def render(results: dict[str, dict[str, float]], n: int, repeat: int) -> str:
    """The results as a text table with ratios against the raw floor."""
    floors = {
        "sqlite": "floor-sqlite",
        "sqlite-signed": "floor-sqlite",
        "sqlite-full": "floor-sqlite-full",
    }
    lines = [
        f"durable step cost: {n} steps per run, median of {repeat} (min..max), µs per step",
        f"{'scenario':<20}{'µs/step':>10}{'min..max':>20}{'vs floor':>12}",
    ]
    for name, s in results.items():
        floor = floors.get(name)
        ratio = f"{s['median'] / results[floor]['median']:.2f}x" if floor else ""
        span = f"{s['min']:.1f}..{s['max']:.1f}"
        lines.append(f"{name:<20}{s['median']:>10.1f}{span:>20}{ratio:>12}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = anyio.run(measure, args.steps, args.repeat, Path(tmp))
    print(render(results, args.steps, args.repeat))
    if args.json:
        args.json.write_text(json.dumps({"steps": args.steps, "results": results}, indent=2))


if __name__ == "__main__":
    main()
