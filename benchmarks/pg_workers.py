"""Many workers on one Postgres database: runs per second with 1 and with 4 worker processes,
and how fast an idle worker in another process reacts (``LISTEN``/``NOTIFY``).

Usage: python benchmarks/pg_workers.py [--runs 1000] [--workers 1 4] [--pings 30] [URL]

Each measurement gets a fresh schema on the server at URL (default: the local Postgres,
database ``test``) and fresh ``durable worker bench_app`` processes (``--concurrency 50``):

* runs/s: the workers are started and idle; this process then starts ``--runs`` runs of
  ``bench.five`` (five trivial activities) as fast as it can; runs/s = runs / (time from the
  first start until the last run completed);
* start -> claimed: with one idle worker, a run is started and this process waits for it to
  complete; the figure is when its first activity ran minus when the start was committed
  (the worker's idle wait is 1 s, so anything well under it came by notification).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import anyio

import durable
from durable.backends import SQLStore

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import bench_app  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def _count_completed(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM durable_runs WHERE status = 'completed'")
        return int(row.fetchone()[0])  # type: ignore[index]


async def _completed(url: str, count: int) -> None:
    """Wait until ``count`` runs completed (a cheap count every 50 ms)."""
    while True:
        if _count_completed(url) >= count:
            return
        await anyio.sleep(0.05)


async def throughput(url: str, runs: int) -> float:
    async with SQLStore(url) as store:
        started = time.perf_counter()
        for i in range(runs):
            await durable.start(bench_app.five, id=f"r{i}", store=store)
        await _completed(url, runs)
        return runs / (time.perf_counter() - started)


async def pings(url: str, count: int) -> list[float]:
    latencies = []
    async with SQLStore(url) as store:
        for i in range(count):
            await anyio.sleep(0.3)  # the worker is idle in its wait again
            sent = time.time()
            handle = await durable.start(bench_app.stamp_once, id=f"p{i}", store=store)
            latencies.append(await handle.result() - sent)
    return latencies


def _with_workers(server: str, workers: int, fn: object, *args: object) -> object:
    with bench_app.postgres_schema(server) as url:
        anyio.run(SQLStore(url).close)  # create the schema before the workers race to
        procs = [bench_app.start_worker(url, concurrency=50) for _ in range(workers)]
        try:
            return anyio.run(fn, url, *args)  # type: ignore[arg-type]
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.communicate(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", nargs="?", default=SERVER)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--pings", type=int, default=30)
    args = parser.parse_args()
    print(f"durable on Postgres, {os.cpu_count()} CPUs, {args.runs} runs of 5 activities")
    for workers in args.workers:
        rate = _with_workers(args.url, workers, throughput, args.runs)
        print(f"{workers} worker process(es): {rate:8.0f} runs/s ({rate * 5:.0f} activities/s)")
    if args.pings:
        ms = [x * 1000 for x in _with_workers(args.url, 1, pings, args.pings)]  # type: ignore[union-attr]
        print(
            f"start -> first activity in an idle worker: median {statistics.median(ms):.1f} ms, "
            f"max {max(ms):.1f} ms (n={len(ms)})"
        )


if __name__ == "__main__":
    main()
