"""The benchmark scenarios on DBOS Transact (PyPI ``dbos``), the same shapes as
`sdk_durable.py`; run by `suite.py`, one scenario per fresh process.

Usage: python benchmarks/sdk_dbos.py SCENARIO N WORKDIR [POSTGRES_URL]

Prints one JSON object: ``{"value": ..., "unit": ...}``. DBOS runs with its defaults: SQLite
in its default journal mode (``synchronous=FULL``: power-loss-safe), or Postgres; its admin
server is off. Scenarios: ``step-sqlite`` (= ``step-sqlite-full``, DBOS has one SQLite mode),
``step-postgres``, ``wf-seq``, ``wf-100``, ``replay-completed``, ``replay-resume``, ``signal``
and ``parked`` (see `sdk_durable.py`; the waiting workflows run in a second DBOS process, and
messages are sent with ``DBOSClient``).

``drain-sqlite`` / ``drain-postgres`` (issue 18): N workflows of `DRAIN_STEPS` steps enqueued on
a DBOS queue whose ``worker_concurrency`` is 0, so none starts; then it is set to
`DRAIN_CONCURRENCY` and the figure is steps per second until the last one succeeded (its
``runs_per_s`` the same as workflows). The queue polls every `DRAIN_POLL_SECONDS` (DBOS's
default is 1 s, which would make the drain mostly waiting for polls).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dbos import DBOS, SetWorkflowID


@DBOS.step()
def noop(i: int) -> int:
    return i


@DBOS.step()
def die(at: int) -> None:
    if os.environ.get("BENCH_DIE") == "1":
        os._exit(9)


@DBOS.workflow()
def steps(n: int) -> int:
    total = 0
    for i in range(n):
        total += noop(i)
    die(n)
    return total


@DBOS.workflow()
def three(i: int) -> int:
    return noop(i) + noop(i) + noop(i)


@DBOS.workflow()
def noops(n: int) -> int:
    total = 0
    for i in range(n):
        total += noop(i)
    return total


DRAIN_STEPS = 10  # as in sdk_durable.py
DRAIN_CONCURRENCY = 100
DRAIN_POLL_SECONDS = 0.05


@DBOS.step()
def stamp() -> float:
    return time.time()


@DBOS.workflow()
def waits_for_go() -> float:
    """Waits for message "go", then records when it resumed."""
    DBOS.recv("go", timeout_seconds=3600)
    return stamp()


@DBOS.workflow()
def sleeps_until(due: float) -> float:
    """Sleeps until ``due`` (epoch seconds), then records when it resumed."""
    DBOS.sleep(max(due - time.time(), 0.0))
    return stamp()


def serve(url: str, count: int, due: float | None = None) -> None:
    """The other process: start ``count`` workflows that wait for "go" (or, with ``due``,
    sleep until then), report resident memory and threads before and after, then keep
    executing until stdin closes."""
    launch(url, "server")
    before = _proc_status()
    for i in range(count):
        with SetWorkflowID(f"wait-{i}"):
            if due is None:
                DBOS.start_workflow(waits_for_go)
            else:
                DBOS.start_workflow(sleeps_until, due)
    time.sleep(2.0)  # every workflow is in its recv
    after = _proc_status()
    print(json.dumps({"before": before, "after": after}), flush=True)
    sys.stdin.read()
    os._exit(0)  # waiting workflows hold threads that a clean shutdown would wait for


def _proc_status() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            fields[key] = int(value.split()[0])
    return fields


def _waiting(
    url: str, count: int, due: float | None = None
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    extra = [] if due is None else [repr(due)]
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", str(count), ".", url, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None
    report = json.loads(server.stdout.readline())
    return server, report


def _signal_latency(url: str, count: int) -> float:
    from dbos import DBOSClient

    server, _ = _waiting(url, count)
    client = DBOSClient(system_database_url=url)
    latencies = []
    try:
        for i in range(count):
            sent = time.time()
            client.send(f"wait-{i}", None, "go")
            resumed = client.retrieve_workflow(f"wait-{i}").get_result()
            latencies.append((resumed - sent) * 1000)
    finally:
        client.destroy()
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=60)
    return sorted(latencies)[len(latencies) // 2]


def _timer_lateness(url: str, count: int) -> float:
    from dbos import DBOSClient

    due = time.time() + 10.0  # the server starts and parks them first
    server, _ = _waiting(url, count, due)
    client = DBOSClient(system_database_url=url)
    try:
        late = [
            (client.retrieve_workflow(f"wait-{i}").get_result() - due) * 1000 for i in range(count)
        ]
    finally:
        client.destroy()
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=60)
    return sorted(late)[len(late) // 2]


def _parked(url: str, count: int) -> dict[str, float]:
    server, report = _waiting(url, count)
    assert server.stdin is not None
    server.stdin.close()
    server.wait(timeout=120)
    before, after = report["before"], report["after"]
    return {
        "bytes_per_run": (after["VmRSS"] - before["VmRSS"]) * 1024 / count,
        "threads": after["Threads"] - before["Threads"],
    }


def _succeeded(url: str) -> int:
    """How many workflows of the drain succeeded (read straight from DBOS's tables)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30) as db:
            row = db.execute(
                "SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS' AND name LIKE ?",
                ("%noops",),
            ).fetchone()
    else:
        import psycopg

        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS' "
                "AND name LIKE %s",
                ("%noops",),
            ).fetchone()
    assert row is not None
    return int(row[0])


def _drain(url: str, n: int) -> dict[str, float]:
    """DBOS with ``DRAIN_CONCURRENCY`` workflows at once on a queue draining ``n`` enqueued ones."""
    launch(url)
    try:
        queue = DBOS.register_queue(
            "bench-drain", worker_concurrency=0, polling_interval_sec=DRAIN_POLL_SECONDS
        )
        for i in range(n):
            with SetWorkflowID(f"d{i:05d}"):
                queue.enqueue(noops, DRAIN_STEPS)
        # DBOS starts a queue's polling thread within a second of its registration.
        deadline = time.monotonic() + 30
        while not any(t.name == "queue-worker-bench-drain" for t in threading.enumerate()):
            assert time.monotonic() < deadline, "DBOS started no thread for the queue"
            time.sleep(0.01)
        started, cpu = time.perf_counter(), time.process_time()
        queue.set_worker_concurrency(DRAIN_CONCURRENCY)
        while _succeeded(url) < n:
            time.sleep(0.02)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert DBOS.retrieve_workflow(f"d{n - 1:05d}").get_result() == sum(range(DRAIN_STEPS))
    finally:
        DBOS.destroy()
    return {
        "value": n * DRAIN_STEPS / elapsed,
        "unit": "steps/s",
        "runs_per_s": n / elapsed,
        "cpu_share": cpu / elapsed,
    }


def launch(url: str, executor: str = "local") -> None:
    DBOS(
        config={
            "name": "bench",
            "system_database_url": url,
            "run_admin_server": False,
            "executor_id": executor,
        }
    )
    DBOS.launch()


def _run(workflow: Any, workflow_id: str, *args: Any) -> Any:
    with SetWorkflowID(workflow_id):
        return workflow(*args)


def measure(scenario: str, n: int, workdir: Path, pg: str | None) -> dict[str, Any]:
    url = pg if scenario.endswith("postgres") else f"sqlite:///{workdir / 'dbos.sqlite'}"
    assert url is not None
    if scenario == "replay-resume":
        return {"value": _replay_resume(n, url), "unit": "us/step"}
    if scenario == "signal":
        return {"value": _signal_latency(url, n), "unit": "ms"}
    if scenario == "timers":
        return {"value": _timer_lateness(url, n), "unit": "ms"}
    if scenario.startswith("drain-"):
        return _drain(url, n)
    if scenario == "parked":
        parked = _parked(url, n)
        return {"value": parked["bytes_per_run"], "unit": "bytes/run", "threads": parked["threads"]}
    launch(url)
    try:
        if scenario.startswith("step-"):
            _run(steps, "warm-up", 3)
            started = time.perf_counter()
            _run(steps, "measured", n)
            return {"value": (time.perf_counter() - started) / (n + 1) * 1e6, "unit": "us/step"}
        if scenario in ("wf-seq", "wf-100"):
            _run(three, "warm-up", -1)
            started = time.perf_counter()
            if scenario == "wf-seq":
                for i in range(n):
                    _run(three, f"w{i}", i)
            else:
                with ThreadPoolExecutor(100) as pool:
                    list(pool.map(lambda i: _run(three, f"w{i}", i), range(n)))
            return {"value": n / (time.perf_counter() - started), "unit": "workflows/s"}
        if scenario == "replay-completed":
            _run(steps, "done", n)
            started = time.perf_counter()
            _run(steps, "done", n)
            return {"value": (time.perf_counter() - started) / n * 1e6, "unit": "us/step"}
        raise SystemExit(f"unknown scenario {scenario!r}")
    finally:
        DBOS.destroy()


def _replay_resume(n: int, url: str) -> float:
    """A child process records N steps and dies in step N + 1; this one runs the same id
    again, which replays the N recorded steps (each a read of its checkpoint). The dead
    process had another executor id, so DBOS's recovery at launch leaves the run to the
    recovery call timed here."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import sdk_dbos as b; "
        "b.launch(sys.argv[3], 'crashed-process'); b._run(b.steps, 'crashed', int(sys.argv[2]))"
    )
    died = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(n), url],
        env={**os.environ, "BENCH_DIE": "1"},
        capture_output=True,
        check=False,
    )
    assert died.returncode == 9, died.stderr
    launch(url)
    try:
        started = time.perf_counter()
        # DBOS's recovery of a dead executor's workflows (what its launch does for its own
        # executor id): the workflow runs again from its checkpoints.
        (handle,) = DBOS._recover_pending_workflows(["crashed-process"])
        # Its default polls once a second, which would be most of what is timed here.
        handle.get_result(polling_interval_sec=0.01)
        return (time.perf_counter() - started) / n * 1e6
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[4], int(sys.argv[2]), float(sys.argv[5]) if len(sys.argv) > 5 else None)
        raise SystemExit(0)
    name, count, directory = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    print(json.dumps(measure(name, count, directory, sys.argv[4] if len(sys.argv) > 4 else None)))
