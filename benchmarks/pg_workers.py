"""Many workers on one Postgres database: runs per second with 1, 2 and 4 worker processes
draining the same runs, where their time goes, and how fast an idle worker in another process
reacts (``LISTEN``/``NOTIFY``).

Usage: python benchmarks/pg_workers.py [--runs 2000] [--workers 1 2 4] [--repeat 3]
                                       [--concurrency 50] [--pings 30] [--quick] [URL]

Each measurement gets a fresh database on the server at URL (default: the local Postgres; its
database ``test`` is where the new ones are created from) and fresh ``durable worker bench_app``
processes (``--concurrency 50`` runs at once each):

* runs/s: the workers are started and idle; this process starts ``--runs`` runs of
  ``bench.five`` (five trivial activities), all due at one instant a little later (a delayed
  start, long enough for every start to be committed before it), and waits for the last to
  complete: runs/s = runs / (last completion - that instant). Every worker count drains the
  same runs; the counts are measured in rounds (1, 2, 4, 1, 2, 4, ...) so the machine's drift
  falls on all of them, and the median of ``--repeat`` rounds is shown with min..max;
* where the time goes, per worker count (the median round's figures): the database's commits
  (``pg_stat_database``, per run and per second) and its statements' time
  (``active_time``: on average how many server backends were executing a statement); what the
  active backends waited for, sampled from ``pg_stat_activity`` every 20 ms; CPU seconds of the
  worker processes and of their server backends (``/proc``) against what the machine's cores
  offer in the same time; and from inside the workers (``bench_app``'s ``BENCH_STORE_TIMINGS``)
  how long each store call took on average, and how many runs a claim leased;
* start -> first activity: with one idle worker, a run is started and this process waits for
  it to complete; the figure is when its first activity ran minus when the start was committed
  (the worker's idle wait is 1 s, so anything well under it came by notification).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import psycopg

import durable
from durable.backends import SQLStore

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import bench_app  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432/test"
STEPS = 5  # activities of bench.five
TICK = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1


@contextlib.contextmanager
def fresh_database(server: str) -> Iterator[tuple[str, str]]:
    """A new database on ``server`` (its URL and name), dropped after."""
    name = f"bench_workers_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}", name
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / TICK, sum(values) / TICK


class Sampler:
    """Samples ``pg_stat_activity`` of one database every 20 ms on a thread: what its active
    backends wait for, and which statements they run."""

    def __init__(self, url: str, exclude: set[int]) -> None:
        self._conn = psycopg.connect(url, autocommit=True)
        self._exclude = exclude | {self._conn.info.backend_pid}
        self._stop = threading.Event()
        self.samples = 0
        self.active = 0  # backend-samples executing a statement
        self.waits: collections.Counter[str] = collections.Counter()
        self.statements: collections.Counter[str] = collections.Counter()
        self.lock_waits: collections.Counter[str] = collections.Counter()  # by statement
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()

    def backends(self) -> list[int]:
        """The pids of the database's other backends (the workers' connections)."""
        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
        return [pid for (pid,) in rows if pid not in self._exclude]

    def _run(self) -> None:
        sql = (
            "SELECT pid, wait_event_type, wait_event, query FROM pg_stat_activity "
            "WHERE datname = current_database() AND state = 'active'"
        )
        while not self._stop.wait(0.02):
            rows = self._conn.execute(sql).fetchall()
            self.samples += 1
            for pid, kind, event, query in rows:
                if pid in self._exclude:
                    continue
                self.active += 1
                self.waits["running (CPU)" if kind is None else f"{kind}:{event}"] += 1
                statement = " ".join(query.split())[:60]
                self.statements[statement] += 1
                if kind == "Lock":
                    self.lock_waits[f"{event}: {statement}"] += 1


def _database_stats(server: str, name: str) -> dict[str, float]:
    with psycopg.connect(server, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, active_time "
            "FROM pg_stat_database WHERE datname = %s",
            (name,),
        ).fetchone()
    assert row is not None
    keys = ("commits", "rollbacks", "inserted", "updated", "active_ms")
    return {key: float(value or 0) for key, value in zip(keys, row, strict=True)}


async def _start_gated(url: str, runs: int) -> tuple[float, float]:
    """Start ``runs`` runs of ``bench.five``, all due at one instant far enough ahead for every
    start to be committed first; that instant, and when the last start was committed."""
    async with SQLStore(url) as store:
        far = datetime.fromtimestamp(time.time() + 86_400, UTC)
        started = time.perf_counter()
        for i in range(20):  # how long a start takes here: never due, never claimed
            await durable.start(bench_app.five, id=f"calibrate-{i}", store=store, start_at=far)
        per_start = (time.perf_counter() - started) / 20
        gate = time.time() + 0.5 + 2.0 * per_start * runs
        at = datetime.fromtimestamp(gate, UTC)
        for i in range(runs):
            await durable.start(bench_app.five, id=f"r{i:05d}", store=store, start_at=at)
        return gate, time.time()


def _completed(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM durable_runs WHERE status = 'completed'").fetchone()
    return int(row[0])  # type: ignore[index]


def _wait_completed(conn: psycopg.Connection[Any], runs: int, stalled: float = 120.0) -> None:
    """Wait until ``runs`` runs completed; fail, saying where the runs are, if none completes
    for ``stalled`` seconds."""
    seen, since = -1, time.monotonic()
    while (count := _completed(conn)) < runs:
        if count != seen:
            seen, since = count, time.monotonic()
        elif time.monotonic() - since > stalled:
            statuses = conn.execute(
                "SELECT status, count(*) FROM durable_runs GROUP BY status"
            ).fetchall()
            raise RuntimeError(f"no run completed for {stalled:g} s; runs by status: {statuses}")
        time.sleep(0.02)


def _store_calls(folder: Path) -> tuple[dict[str, list[float]], list[int], float]:
    """The workers' store-call durations by method, runs per claim, and their CPU seconds."""
    durations: dict[str, list[float]] = collections.defaultdict(list)
    claimed: list[int] = []
    cpu = 0.0
    for path in folder.glob("*.json"):
        report = json.loads(path.read_text())
        for name, values in report["durations"].items():
            durations[name] += values
        claimed += report["claimed"]
        cpu += sum(report["cpu"])
    return durations, claimed, cpu


def drain(server: str, workers: int, runs: int, concurrency: int) -> dict[str, Any]:
    """One measurement: ``workers`` fresh worker processes drain ``runs`` runs."""
    with fresh_database(server) as (url, name), tempfile.TemporaryDirectory() as timings:
        anyio.run(SQLStore(url).close)  # create the schema before the workers race to
        env = {"BENCH_STORE_TIMINGS": timings}
        procs = [bench_app.start_worker(url, concurrency, env) for _ in range(workers)]
        try:
            gate, last_start = anyio.run(_start_gated, url, runs)
            with psycopg.connect(url, autocommit=True) as counter:
                with Sampler(url, {counter.info.backend_pid}) as sampler:
                    time.sleep(max(gate - time.time() - 0.05, 0.0))
                    backends = sampler.backends()
                    before = _database_stats(server, name)
                    cpu_before = {pid: _cpu_seconds(pid) for pid in backends}
                    workers_before = sum(_cpu_seconds(p.pid) for p in procs)
                    machine_before = _machine_busy()
                    _wait_completed(counter, runs)
                    done = time.time()
                    machine_after = _machine_busy()
                    workers_cpu = sum(_cpu_seconds(p.pid) for p in procs) - workers_before
                    backends = sorted(set(backends) | set(sampler.backends()))
                    backends_cpu = sum(_cpu_seconds(p) - cpu_before.get(p, 0.0) for p in backends)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.communicate(timeout=60)
        time.sleep(0.2)  # the workers' backends have exited and reported their statistics
        after = _database_stats(server, name)
        durations, claimed, _ = _store_calls(Path(timings))
    elapsed = done - gate
    busy = machine_after[0] - machine_before[0]
    return {
        "workers": workers,
        "runs_per_s": runs / elapsed,
        "elapsed": elapsed,
        "late_start": max(last_start - gate, 0.0),
        "db": {key: after[key] - before[key] for key in after},
        "cpu": {
            "workers": workers_cpu,
            "backends": backends_cpu,
            "machine": busy,
            "offered": elapsed * CPUS,
        },
        "active_per_sample": sampler.active / max(sampler.samples, 1),
        "waits": dict(sampler.waits.most_common()),
        "statements": dict(sampler.statements.most_common(8)),
        "lock_waits": dict(sampler.lock_waits.most_common(3)),
        "calls": {
            name: {"count": len(values), "mean_ms": statistics.fmean(values) * 1000}
            for name, values in durations.items()
            if values
        },
        "runs_per_claim": statistics.fmean([c for c in claimed if c]) if any(claimed) else 0.0,
        "empty_claims": sum(1 for c in claimed if not c),
    }


async def pings(url: str, count: int) -> list[float]:
    latencies = []
    async with SQLStore(url) as store:
        for i in range(count):
            await anyio.sleep(0.3)  # the worker is idle in its wait again
            sent = time.time()
            handle = await durable.start(bench_app.stamp_once, id=f"p{i}", store=store)
            latencies.append(await handle.result() - sent)
    return latencies


def _ping(server: str, count: int) -> list[float]:
    with fresh_database(server) as (url, _):
        anyio.run(SQLStore(url).close)
        proc = bench_app.start_worker(url, concurrency=50)
        try:
            return anyio.run(pings, url, count)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def report(measured: dict[int, list[dict[str, Any]]], runs: int) -> None:
    """Print the runs/s table and, for each worker count, where its median round's time went."""
    first = min(measured)
    base = statistics.median(m["runs_per_s"] for m in measured[first])
    print(f"| worker processes | runs/s | activities/s | vs {first} | commits/s | commits/run |")
    print("|---|---:|---:|---:|---:|---:|")
    medians = {}
    for workers, rounds in measured.items():
        rates = [m["runs_per_s"] for m in rounds]
        median = statistics.median(rates)
        medians[workers] = min(rounds, key=lambda m: abs(m["runs_per_s"] - median))
        m = medians[workers]
        print(
            f"| {workers} | {median:.0f} ({min(rates):.0f}..{max(rates):.0f}) | "
            f"{median * STEPS:.0f} | {median / base:.2f}x | "
            f"{m['db']['commits'] / m['elapsed']:.0f} | {m['db']['commits'] / runs:.1f} |"
        )
    print()
    print("Where the time went (the round closest to each median):")
    for workers, m in medians.items():
        cpu, elapsed = m["cpu"], m["elapsed"]
        offered = cpu["offered"]
        print(f"\n{workers} worker process(es): {runs} runs in {elapsed:.2f} s")
        if m["late_start"] > 0:
            print(f"  (the last start was committed {m['late_start']:.2f} s after the due time)")
        print(
            f"  CPU over the drain, of {CPUS} cores x {elapsed:.2f} s = {offered:.1f} s: "
            f"whole machine busy {cpu['machine']:.1f} s ({_percent(cpu['machine'], offered)}), "
            f"worker processes {cpu['workers']:.1f} s ({_percent(cpu['workers'], offered)}), "
            f"their server backends {cpu['backends']:.1f} s ({_percent(cpu['backends'], offered)})"
        )
        print(
            f"  server: statements executing {m['db']['active_ms'] / 1000 / elapsed:.2f} backends "
            f"on average (pg_stat_database active_time); {m['db']['rollbacks']:.0f} rollbacks"
        )
        waits = m["waits"]
        total = sum(waits.values())
        shown = ", ".join(f"{k} {_percent(v, total)}" for k, v in list(waits.items())[:6])
        print(f"  active backends sampled ({m['active_per_sample']:.2f} at a time): {shown}")
        if m["lock_waits"]:
            shown = "; ".join(f"{k} ({v})" for k, v in m["lock_waits"].items())
            print(f"  waiting for a lock, by statement (samples): {shown}")
        calls = sorted(
            ((k, c) for k, c in m["calls"].items() if not k.startswith("wait")),  # idle waits
            key=lambda kv: -kv[1]["count"] * kv[1]["mean_ms"],
        )
        shown = ", ".join(
            f"{name} {c['count'] / runs:.2f}/run x {c['mean_ms']:.2f} ms" for name, c in calls[:7]
        )
        print(f"  store calls in the workers (per run x mean): {shown}")
        print(
            f"  a claim leased {m['runs_per_claim']:.1f} runs on average; "
            f"{m['empty_claims']} claims found none"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", nargs="?", default=SERVER)
    parser.add_argument("--runs", type=int, default=None, help="default 2000")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 3)")
    parser.add_argument("--concurrency", type=int, default=50, help="runs at once per worker")
    parser.add_argument("--pings", type=int, default=None, help="default 30")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="400 runs, 2 rounds, 10 pings")
    args = parser.parse_args()
    quick = {"runs": 400, "repeat": 2, "pings": 10}
    for key, value in {"runs": 2000, "repeat": 3, "pings": 30}.items():
        if getattr(args, key) is None:
            setattr(args, key, quick[key] if args.quick else value)
    print(
        f"durable on Postgres, {CPUS} CPUs, {args.runs} runs of {STEPS} activities, "
        f"workers of --concurrency {args.concurrency}, median of {args.repeat} rounds"
    )
    measured: dict[int, list[dict[str, Any]]] = {w: [] for w in args.workers}
    for round_ in range(args.repeat):
        for workers in args.workers:
            m = drain(args.url, workers, args.runs, args.concurrency)
            measured[workers].append(m)
            print(
                f"  round {round_ + 1}: {workers} worker(s) {m['runs_per_s']:.0f} runs/s",
                file=sys.stderr,
            )
    report(measured, args.runs)
    if args.pings:
        ms = [x * 1000 for x in _ping(args.url, args.pings)]
        print(
            f"\nstart -> first activity in an idle worker: median {statistics.median(ms):.1f} ms, "
            f"max {max(ms):.1f} ms (n={len(ms)})"
        )
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "measured": measured}, indent=1))


if __name__ == "__main__":
    main()
