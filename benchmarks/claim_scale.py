"""Does claiming stay fast with a million finished runs in the table?

Usage: python benchmarks/claim_scale.py [--finished 1000000] [--repeat 200] [URL]

In a fresh schema of the Postgres server at URL (default: the local one), times the two
statements an idle worker runs (the claim, ``SELECT ... FOR UPDATE SKIP LOCKED``, which finds
nothing to claim, and the next-due query) with 100 unfinished runs in the table, then again
after adding ``--finished`` completed runs (and ``ANALYZE``), and prints the medians side by
side with the plan the server chose.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import anyio
import psycopg
import sqlalchemy as sa

from durable.backends import SQLStore
from durable.backends._statements import Statements
from durable.store import LeaseOwner, RunRecord, RunStatus

sys.path.insert(0, str(Path(__file__).parent))
import bench_app

SERVER = "postgresql://postgres@127.0.0.1:5432/test"
OWNER = LeaseOwner("bench", "host", 1)


async def _seed_unfinished(url: str) -> None:
    """100 runs a worker would not claim now: leased by someone, or parked for an hour."""
    now = time.time()
    async with SQLStore(url) as store:
        for i in range(100):
            await store.create_run(
                RunRecord(f"live-{i}", "bench.five", RunStatus.PENDING, b"", now, now)
            )
            await store.acquire_lease(f"live-{i}", OWNER, now=now, duration=3600)


def _time(conn: psycopg.Connection, sql: str, args: object, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        conn.execute(sql, args).fetchall()  # type: ignore[arg-type]
        conn.rollback()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", nargs="?", default=SERVER)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    with bench_app.postgres_schema(args.url) as url:
        anyio.run(_seed_unfinished, url)
        with psycopg.connect(url) as conn:
            statements = Statements(sa.create_engine("postgresql+psycopg://").dialect)
            claim = statements.claimable(("bench.five",))
            due = statements.due(("bench.five",))
            claim_args = claim.args({"now": time.time(), "lim": 50})
            due_args = due.args({})
            conn.execute("ANALYZE durable_runs")
            conn.commit()
            before = (
                _time(conn, claim.sql, claim_args, args.repeat),
                _time(conn, due.sql, due_args, args.repeat),
            )
            started = time.perf_counter()
            conn.execute(
                "INSERT INTO durable_runs (id, workflow, status, args, created_at, updated_at, "
                "lease_token, cancel_requested, rollback_requested, pause_requested) "
                "SELECT 'done-' || i, 'bench.five', 'completed', '\\x00', i, i, 1, false, "
                "false, false FROM generate_series(1, %s) AS i",
                (args.finished,),
            )
            conn.commit()
            conn.execute("ANALYZE durable_runs")
            conn.commit()
            filled = time.perf_counter() - started
            after = (
                _time(conn, claim.sql, claim_args, args.repeat),
                _time(conn, due.sql, due_args, args.repeat),
            )
            plan = conn.execute(f"EXPLAIN {claim.sql}", claim_args).fetchall()  # type: ignore[arg-type]
            conn.rollback()
    print(f"claim and due queries, median of {args.repeat}, µs (one connection, no contention)")
    print(f"{'':32}{'100 live runs':>16}{f'+ {args.finished:,} finished':>22}")
    print(f"{'claim (finds nothing)':32}{before[0]:16.0f}{after[0]:22.0f}")
    print(f"{'next due':32}{before[1]:16.0f}{after[1]:22.0f}")
    print(f"(adding the finished runs took {filled:.1f} s) claim plan:")
    for (line,) in plan:
        print(f"    {line}")


if __name__ == "__main__":
    main()
