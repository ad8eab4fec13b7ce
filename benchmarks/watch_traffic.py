"""What waiting costs the store, and how fast a signal resumes a run that waits in memory.

Usage: python benchmarks/watch_traffic.py [--runs 100] [--window 10] [--signals 20]
       [--postgres [URL]] [--json out.json]

One process: a `durable.Worker` (``concurrency`` = ``--runs``, ``park_after`` one hour, so
every run waits *in memory*, holding its lease) on a fresh SQLite file (or a fresh schema of
the local Postgres server with ``--postgres``). ``--runs`` runs each wait for a signal.

* statements/s: every statement or transaction the store sends to the database for the worker
  and its runs, over ``--window`` seconds once all runs wait; split by the store method that
  sent it (``watch`` on SQLite reads the data version), next to the lease renewals it must
  make (one per run per third of the lease, 30 s by default: ``runs / 10`` per second);
* signal -> resumed: ``--signals`` runs, one at a time: time from `durable.signal` returning
  to the activity after the wait running (same process, same clock).

Run it on the version before and after a change (same machine, same minute) to compare.
"""

from __future__ import annotations

import argparse
import collections
import contextvars
import inspect
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

import durable
from durable.backends import SQLStore

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
_resumed: dict[str, anyio.Event] = {}
_resumed_at: dict[str, float] = {}


@durable.activity
async def resumed(run_id: str) -> None:
    _resumed_at[run_id] = time.perf_counter()
    event = _resumed.get(run_id)
    if event is not None:
        event.set()


@durable.workflow(name="bench.waits_for_go")
async def waits_for_go(run_id: str) -> None:
    await durable.wait_signal("go")
    await resumed(run_id)


_method: contextvars.ContextVar[str] = contextvars.ContextVar("method", default="?")


class Counting:
    """Forwards to a `SQLStore` and counts the statements (or transactions) it sends to the
    database, by the store method that sent them: every one goes through the store's
    ``_calls.call``. Waiting on the Postgres listening connection is not a statement and is
    not counted."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: collections.Counter[str] = collections.Counter()
        self.counting = False
        send = store._calls.call

        async def counted_call(*args: Any, **kwargs: Any) -> Any:
            if self.counting:
                self.calls[_method.get()] += 1
            return await send(*args, **kwargs)

        store._calls.call = counted_call

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr

        async def named(*args: Any, **kwargs: Any) -> Any:
            token = _method.set(name)
            try:
                return await attr(*args, **kwargs)
            finally:
                _method.reset(token)

        return named


async def _until(predicate: Callable[[], Any], what: str, limit: float = 120.0) -> None:
    with anyio.fail_after(limit):
        while not await predicate():  # noqa: ASYNC110 (the setup only; not measured)
            await anyio.sleep(0.05)
    del what


async def measure(url: str, runs: int, window: float, signals: int) -> dict[str, Any]:
    async with SQLStore(url) as raw:
        store = Counting(raw)
        worker = durable.Worker(store, [waits_for_go], concurrency=runs, park_after=3600.0)  # type: ignore[arg-type]
        ids = [f"w{i}" for i in range(runs)]
        out: dict[str, Any] = {"runs": runs, "window_s": window}
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            for run_id in ids:
                await durable.start(waits_for_go, run_id, id=run_id, store=raw)

            async def all_waiting() -> bool:
                states = [await raw.get_run(i) for i in ids]
                return all(s is not None and str(s.status) == "waiting" for s in states)

            await _until(all_waiting, "all runs wait")
            await anyio.sleep(1.0)  # settled
            store.counting = True
            await anyio.sleep(window)
            store.counting = False
            total = sum(store.calls.values())
            out["statements_per_s"] = total / window
            out["by_method_per_s"] = {k: v / window for k, v in store.calls.most_common()}
            out["lease_renewals_needed_per_s"] = runs / 10.0

            latencies = []
            for run_id in ids[:signals]:
                _resumed[run_id] = anyio.Event()
                start = time.perf_counter()
                await durable.signal(run_id, "go", None, store=raw)
                sent = time.perf_counter()
                with anyio.fail_after(60):
                    await _resumed[run_id].wait()
                latencies.append((_resumed_at[run_id] - sent) * 1000)
                del start
            out["signal_to_resumed_ms"] = {
                "median": statistics.median(latencies),
                "min": min(latencies),
                "max": max(latencies),
            }
            worker.stop()
            tg.cancel_scope.cancel()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--signals", type=int, default=20)
    parser.add_argument("--postgres", nargs="?", const=SERVER, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.postgres:
        import sqlalchemy as sa

        schema = f"bench_watch_{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(args.postgres.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        url = f"{args.postgres}?options=-csearch_path%3D{schema}"
        try:
            result = anyio.run(measure, url, args.runs, args.window, args.signals)
        finally:
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            engine.dispose()
        result["store"] = "postgres"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'watch.db'}"
            result = anyio.run(measure, url, args.runs, args.window, args.signals)
        result["store"] = "sqlite"
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
