"""Continue-as-new keeps a long loop's replay and storage bounded: a loop of 10,000 iterations
(one activity each) that continues as new every 100, against the same loop without it.

Usage: python benchmarks/continue_as_new.py [--iterations 10000] [--every 100] [--repeat 3]
       [--json out.json]

Everything runs in this one process, on `SQLStore` over SQLite files (default durability) in
a fresh temporary directory. Each repetition runs each loop once under a new id; the run stops
after its last iteration as a killed process would (nothing recorded), and is then resumed:

* ``total s``: from the start to the stop, all iterations (and, for the continuing loop, its
  generations);
* ``replay ms``: the resumption, which replays the history the run has at that point (the
  last generation's steps, or all of them) and then finishes the run;
* ``max step rows``: the most step rows the run had stored at any moment (counted at each
  commit and continue; the final row count is checked with SQL).

Reported: the median of ``--repeat`` repetitions (min..max).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

import durable
from durable.backends import SQLStore
from durable.store import Interruption, Lease, RunRecord, RunUpdate, StepRecord


class Crash(BaseException):
    """Stops a run without recording anything, like a killed process."""


@durable.activity(name="bench.can.noop")
async def noop(i: int) -> int:
    return i


_crash_armed: list[bool] = []


@durable.activity(name="bench.can.crash_here")
async def crash_here() -> None:
    if _crash_armed:
        _crash_armed.clear()
        raise Crash


@durable.workflow(name="bench.can.plain")
async def plain(total: int) -> int:
    """``total`` iterations in one history."""
    for i in range(total):
        await noop(i)
    await crash_here()
    return total


@durable.workflow(name="bench.can.continuing")
async def continuing(start: int, total: int, every: int) -> int:
    """Iterations ``start`` to ``total - 1``, a new generation every ``every`` of them."""
    for i in range(start, total):
        await noop(i)
        if (i + 1) % every == 0 and i + 1 < total:
            durable.continue_as_new(i + 1, total, every)
    await crash_here()
    return total


class CountingStore(SQLStore):
    """`SQLStore` that counts the step rows of its (one) run as they are written and
    deleted, and remembers the most it had."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.rows = 0
        self.max_rows = 0

    async def commit(
        self,
        lease: Lease,
        steps: Sequence[StepRecord] = (),
        update: RunUpdate | None = None,
        *,
        now: float,
        outcomes: Sequence[StepRecord] = (),
        check_requests: bool = False,
        relaxed: bool = False,
    ) -> Interruption | None:
        stopped = await super().commit(
            lease,
            steps,
            update,
            now=now,
            outcomes=outcomes,
            check_requests=check_requests,
            relaxed=relaxed,
        )
        if stopped is None and steps:
            self.rows += len(steps)
            self.max_rows = max(self.max_rows, self.rows)
        return stopped

    async def continue_run(self, lease: Lease, args: bytes, *, now: float) -> RunRecord:
        run = await super().continue_run(lease, args, now=now)
        self.rows = 0
        return run


async def one_loop(path: Path, run_id: str, workflow: Any, *args: Any) -> dict[str, float]:
    """Run one loop to its stop and resume it; its figures."""
    async with CountingStore(f"sqlite:///{path}") as store:
        _crash_armed.append(True)
        start = time.perf_counter()
        try:
            await durable.execute(workflow, *args, id=run_id, store=store)
            raise AssertionError("the loop was not stopped at its end")
        except Crash:
            pass
        total = time.perf_counter() - start
        start = time.perf_counter()
        await durable.execute(workflow, *args, id=run_id, store=store)
        replay = time.perf_counter() - start
        run = await store.get_run(run_id)
        assert run is not None
        max_rows = store.max_rows
    with sqlite3.connect(path) as db:
        (final_rows,) = db.execute(
            "SELECT count(*) FROM durable_steps WHERE run_id = ?", (run_id,)
        ).fetchone()
    return {
        "total_s": total,
        "replay_ms": replay * 1e3,
        "max_rows": float(max_rows),
        "final_rows": float(final_rows),
        "generations": float(run.generation),
    }


def _summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


async def measure(
    iterations: int, every: int, repeat: int, workdir: Path
) -> dict[str, dict[str, dict[str, float]]]:
    """Both loops ``repeat`` times, alternating which goes first; loop -> figure -> summary."""
    samples: dict[str, dict[str, list[float]]] = {"plain": {}, "continuing": {}}
    for r in range(repeat):
        order = ["plain", "continuing"] if r % 2 == 0 else ["continuing", "plain"]
        for name in order:
            path = workdir / f"{name}-{r}.db"
            if name == "plain":
                figures = await one_loop(path, f"plain-{r}", plain, iterations)
            else:
                figures = await one_loop(path, f"can-{r}", continuing, 0, iterations, every)
            for key, value in figures.items():
                samples[name].setdefault(key, []).append(value)
    return {
        name: {key: _summary(values) for key, values in figures.items()}
        for name, figures in samples.items()
    }


def render(results: dict[str, dict[str, dict[str, float]]], iterations: int, every: int) -> str:
    """The results as a markdown table."""

    def cell(s: dict[str, float], digits: int) -> str:
        return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}..{s['max']:.{digits}f})"

    lines = [
        f"| loop ({iterations:,} iterations, one activity each, SQLite) | generations "
        "| total s | µs / iteration | replay of the last iteration, ms | max step rows |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    labels = {"plain": "one history", "continuing": f"continue as new every {every}"}
    for name, figures in results.items():
        per_iteration = {k: v / iterations * 1e6 for k, v in figures["total_s"].items()}
        lines.append(
            f"| {labels[name]} | {figures['generations']['median']:.0f} "
            f"| {cell(figures['total_s'], 2)} | {per_iteration['median']:.0f} "
            f"| {cell(figures['replay_ms'], 1)} | {figures['max_rows']['max']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = anyio.run(measure, args.iterations, args.every, args.repeat, Path(tmp))
    print(f"median of {args.repeat} (min..max)\n")
    print(render(results, args.iterations, args.every))
    if args.json:
        figures = {"iterations": args.iterations, "every": args.every, "results": results}
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
