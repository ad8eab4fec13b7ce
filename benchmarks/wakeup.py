"""Parked runs: how late timers fire, how fast a signal resumes a run in another process, and
what 10,000 parked runs cost a worker.

Usage: python benchmarks/wakeup.py [--timers 200] [--signals 20] [--parked 10000] [--postgres]

One worker process (``durable worker bench_app --park-after 0.2``) on a fresh SQLite file (or,
with ``--postgres [URL]``, a fresh schema of the local Postgres server, where wake-ups cross
processes by ``LISTEN``/``NOTIFY``); this process starts runs and sends signals:

* timer lateness: runs that sleep until a common due time (parked meanwhile); lateness =
  when the activity after the sleep ran, minus the due time;
* signal -> resumed: a parked run waiting for a signal; latency = when the activity after
  the wait ran, minus when this process sent the signal (the two processes share a clock);
* parked memory: the worker's resident memory (VmRSS) with no run, then with ``--parked``
  runs parked (all released: no task or lease held), then after they all woke and completed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

import durable
from durable import RunStatus
from durable.backends import SQLStore

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import bench_app  # noqa: E402


async def measure(url: str, worker_pid: int, timers: int, signals: int, parked: int) -> dict:
    out: dict[str, object] = {}
    async with SQLStore(url) as store:
        await anyio.sleep(1.0)  # the worker is up
        out["rss_idle_kib"] = bench_app.rss_kib(worker_pid)

        due = time.time() + 3.0
        ids = [f"t{i}" for i in range(timers)]
        for run_id in ids:
            await durable.start(bench_app.sleep_until, due, id=run_id, store=store)
        await bench_app.until(store, ids, {RunStatus.COMPLETED})
        late = [await durable.get_handle(i, store).result() - due for i in ids]
        out["timer_late_ms"] = [x * 1000 for x in late]

        latencies = []
        for i in range(signals):
            run_id = f"s{i}"
            await durable.start(bench_app.wait_signal, id=run_id, store=store)
            await bench_app.until(store, [run_id], {RunStatus.WAITING})
            sent = time.time()
            await durable.signal(run_id, "go", store=store)
            await bench_app.until(store, [run_id], {RunStatus.COMPLETED})
            latencies.append(await durable.get_handle(run_id, store).result() - sent)
        out["signal_ms"] = [x * 1000 for x in latencies]

        far = time.time() + 3600
        ids = [f"p{i}" for i in range(parked)]
        for run_id in ids:
            await durable.start(bench_app.sleep_until, far, id=run_id, store=store)
        started = time.time()
        await bench_app.until(store, ids, {RunStatus.SLEEPING})
        out["park_seconds"] = time.time() - started
        out["rss_parked_kib"] = bench_app.rss_kib(worker_pid)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--timers", type=int, default=200)
    parser.add_argument("--signals", type=int, default=20)
    parser.add_argument("--parked", type=int, default=10_000)
    parser.add_argument(
        "--postgres",
        nargs="?",
        const="postgresql://postgres@127.0.0.1:5432/test",
        default=None,
        help="run on this Postgres server (default: the local one) instead of SQLite",
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.postgres:
            url = stack.enter_context(bench_app.postgres_schema(args.postgres))
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            url = f"sqlite:///{Path(tmp) / 'wakeup.db'}"
        worker = bench_app.start_worker(url)
        try:
            res = anyio.run(measure, url, worker.pid, args.timers, args.signals, args.parked)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=60)

    def line(name: str, values: list[float]) -> str:
        return (
            f"{name:<28}median {statistics.median(values):8.1f}   "
            f"max {max(values):8.1f}   (n={len(values)})"
        )

    kind = "Postgres (LISTEN/NOTIFY)" if args.postgres else "SQLite"
    print(f"durable wake-ups, {kind}, one worker process, {os.cpu_count()} CPUs")
    print(line("timer lateness, ms", res["timer_late_ms"]))  # type: ignore[arg-type]
    print(line("signal -> resumed, ms", res["signal_ms"]))  # type: ignore[arg-type]
    idle, parked = res["rss_idle_kib"], res["rss_parked_kib"]
    assert isinstance(idle, int) and isinstance(parked, int)
    per_run = (parked - idle) * 1024 / max(args.parked, 1)
    print(
        f"{args.parked} parked runs: worker RSS {idle / 1024:.1f} MiB idle -> "
        f"{parked / 1024:.1f} MiB parked ({per_run:.0f} bytes per parked run); "
        f"parking them took {res['park_seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
