"""Workflows for benchmarks/wakeup.py and pg_workers.py (imported by the worker processes they
start), and the helpers they share with tests/test_parking_scale.py: start that worker, read its
memory.

With ``BENCH_STORE_TIMINGS`` set to a folder, a process that imports this module times every
call of `SQLStore`'s public coroutine methods and writes what it measured to
``FOLDER/PID.json`` when it exits (`pg_workers.py` reads it: where a worker's time goes).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio

import durable
from durable.store import Store


def start_worker(
    url: str, concurrency: int = 200, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A ``durable worker bench_app`` process on ``url`` (park after 0.2 s, ``concurrency``
    runs at once, ``env`` added to this process's environment), returned once it is ready,
    i.e. once SIGTERM stops it cleanly.

    Its log goes to an unnamed temporary file, not a pipe: nobody reads a pipe once the worker
    is ready, and a worker logging a line per run would block on a full one (and stop
    executing runs) after a few hundred runs.
    """
    log = tempfile.TemporaryFile()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "durable",
            "worker",
            "bench_app",
            "--store",
            url,
            "--park-after",
            "0.2",
            "--concurrency",
            str(concurrency),
        ],
        cwd=Path(__file__).parent,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    with log:  # the worker holds its own descriptor of the file
        while True:
            exited = worker.poll() is not None
            text = os.pread(log.fileno(), 1 << 20, 0)
            if b"durable worker: ready" in text:
                return worker
            if exited:
                tail = text.decode(errors="replace")[-3000:]
                raise RuntimeError(
                    f"the worker exited before it was ready ({worker.returncode}):\n{tail}"
                )
            time.sleep(0.01)


@contextlib.contextmanager
def postgres_schema(server_url: str) -> Iterator[str]:
    """A store URL on a new schema of the Postgres server at ``server_url``, dropped after."""
    import psycopg

    schema = f"durable_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in server_url else "?"
    try:
        yield f"{server_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def until(store: Store, ids: list[str], statuses: set[durable.RunStatus]) -> None:
    """Wait until every run in ``ids`` has one of ``statuses`` and no executor holds it."""
    pending = set(ids)
    while pending:
        for run_id in list(pending):
            run = await store.get_run(run_id)
            if run is not None and run.status in statuses and run.lease_owner is None:
                pending.discard(run_id)
        if pending:
            await anyio.sleep(0.02)


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@durable.activity
async def stamp() -> float:
    return time.time()


@durable.workflow(name="bench.sleep_until")
async def sleep_until(due: float) -> float:
    """Sleeps until ``due`` (epoch seconds), then records when it woke."""
    now = durable.now().timestamp()
    await durable.sleep(max(due - now, 0.0))
    return await stamp()


@durable.workflow(name="bench.stamp_once")
async def stamp_once() -> float:
    """Records when its only activity ran."""
    return await stamp()


@durable.workflow(name="bench.wait_signal")
async def wait_signal() -> float:
    """Waits for signal "go", then records when it resumed."""
    await durable.wait_signal("go")
    return await stamp()


@durable.activity(name="bench.step")
async def step(n: int) -> int:
    return n


@durable.workflow(name="bench.five")
async def five() -> int:
    """Five trivial activities: what a worker pays per run, with nothing else to do."""
    total = 0
    for n in range(1, 6):
        total += await step(n)
    return total


def _time_store_calls(folder: str) -> None:
    """Wrap `SQLStore`'s public coroutine methods to record each call's duration (and, for
    ``claim``, how many runs it leased); write them to ``folder/PID.json`` at exit."""
    from durable.backends import SQLStore

    durations: dict[str, list[float]] = {}
    claimed: list[int] = []

    def timed(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        seen = durations.setdefault(name, [])

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = await method(*args, **kwargs)
            finally:
                seen.append(time.perf_counter() - started)
            if name == "claim":
                claimed.append(len(result))
            return result

        return call

    for name, method in list(vars(SQLStore).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(method):
            setattr(SQLStore, name, timed(name, method))
    try:  # waiting for a pooled Postgres connection (an internal: timed only where it exists)
        from durable.backends._pg_conn import PgPool
    except ImportError:
        pass
    else:
        if inspect.iscoroutinefunction(getattr(PgPool, "take", None)):
            PgPool.take = timed("(connection from the pool)", PgPool.take)  # type: ignore[method-assign]

    def write() -> None:
        report = {"durations": durations, "claimed": claimed, "cpu": os.times()[:2]}
        Path(folder, f"{os.getpid()}.json").write_text(json.dumps(report))

    atexit.register(write)


if os.environ.get("BENCH_STORE_TIMINGS"):
    _time_store_calls(os.environ["BENCH_STORE_TIMINGS"])
