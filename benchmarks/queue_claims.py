"""What do queue limits cost a worker? Runs drained per second with and without them.

Usage: python benchmarks/queue_claims.py [--runs 2000] [--postgres URL]

For SQLite (a file in a temporary folder) and Postgres (a fresh schema on the server at URL,
default: the local one), starts ``--runs`` runs of a one-activity workflow, then times one
in-process ``durable.Worker(concurrency=100)`` draining them, in four setups, each on a new
store:

* ``no queue``: plain ``durable.start`` (the floor the others are compared with);
* ``queue, no limits``: ``durable.Queue("q")``: the per-queue claim path with nothing to count;
* ``queue, concurrency=100``: the limit equals the worker's slots, so it never binds, but every
  claim locks the queue's row and counts its executing runs;
* ``queue, concurrency=100, per-key=5, rate``: 50 keys and a rate limit far above what is
  reached: every limit is counted on every claim, none binds.

Prints runs/s for each and the ratio to ``no queue`` (a markdown table).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import sqlalchemy as sa

import durable
from durable.backends import SQLStore

SERVER = "postgresql://postgres@127.0.0.1:5432/test"


@durable.activity
async def step(i: int) -> int:
    return i + 1


@durable.workflow(name="bench.queued")
async def queued(i: int) -> int:
    return await step(i)


SETUPS: list[tuple[str, durable.Queue | None, bool]] = [
    ("no queue", None, False),
    ("queue, no limits", durable.Queue("bench-open"), False),
    ("queue, concurrency=100", durable.Queue("bench-100", concurrency=100), False),
    (
        "queue, concurrency=100, per-key=5, rate",
        durable.Queue(
            "bench-all", concurrency=100, per_key_concurrency=5, rate_limit=(1_000_000, 60)
        ),
        True,
    ),
]


async def _drain(url: str, runs: int, queue: durable.Queue | None, keyed: bool) -> float:
    """Runs per second one worker drains ``runs`` runs started on ``queue`` (or none)."""
    async with SQLStore(url) as store:
        for i in range(runs):
            run_id = f"r-{i:05d}"
            if queue is None:
                await durable.start(queued, i, id=run_id, store=store)
            else:
                key = f"k{i % 50}" if keyed else None
                await queue.start(queued, i, id=run_id, key=key, store=store)
        worker = durable.Worker(store, [queued], concurrency=100)
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            while worker.completed < runs:  # noqa: ASYNC110 (the finish line, looked at every 5 ms)
                await anyio.sleep(0.005)
            elapsed = time.perf_counter() - started
            worker.stop()
    return runs / elapsed


def _postgres_schema(server: str) -> tuple[str, sa.Engine, str]:
    engine = sa.create_engine(server.replace("postgresql://", "postgresql+psycopg://"))
    schema = f"bench_queues_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in server else "?"
    return f"{server}{separator}options=-csearch_path%3D{schema}", engine, schema


async def _main(runs: int, server: str | None) -> None:
    rows: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        for name, queue, keyed in SETUPS:
            url = f"sqlite:///{Path(folder) / (uuid.uuid4().hex + '.db')}"
            rows.append(("SQLite", name, await _drain(url, runs, queue, keyed)))
    if server is not None:
        for name, queue, keyed in SETUPS:
            url, engine, schema = _postgres_schema(server)
            try:
                rows.append(("Postgres", name, await _drain(url, runs, queue, keyed)))
            finally:
                with engine.begin() as conn:
                    conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
                engine.dispose()
    print(f"{runs} runs of one activity, one worker with 100 slots, drained from the store\n")
    print("| store | setup | runs/s | vs no queue |")
    print("|---|---|---:|---:|")
    floor: dict[str, float] = {}
    for store, name, rate in rows:
        floor.setdefault(store, rate)
        print(f"| {store} | {name} | {rate:,.0f} | {rate / floor[store]:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--postgres", default=SERVER, help="server URL, or 'none' to skip")
    args = parser.parse_args()
    server = None if args.postgres == "none" else args.postgres
    anyio.run(_main, args.runs, server)


if __name__ == "__main__":
    sys.exit(main())
