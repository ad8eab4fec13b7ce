"""A five-activity workflow for the scale-out tests (tests/test_scale_out.py) and the Postgres
worker benchmark: every activity execution records ``(run id, step, idempotency key, pid)`` in
the side table ``activity_log`` of the Postgres schema named by $SIDE_URL. Each activity then
sleeps $STEP_SECONDS (default 0).

The side write is what a careful user's activity does with an external system: each execution
has an id, and when the connection breaks during the insert (a server restart), it reconnects
and checks whether its row arrived before inserting again, so every execution is one row.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from typing import Any

import durable

SIDE_TABLE = """
CREATE TABLE IF NOT EXISTS activity_log (
    execution TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    key TEXT NOT NULL,
    pid INTEGER NOT NULL
)
"""

_idle: queue.SimpleQueue[Any] = queue.SimpleQueue()  # connections for the side writes
_slots = threading.BoundedSemaphore(4)  # at most four per process


def _connect() -> Any:
    import psycopg

    # A connect that stalls (it did, during a server shutdown) must give up and be retried:
    # a half-open connection keeps the server from shutting down for authentication_timeout.
    return psycopg.connect(os.environ["SIDE_URL"], autocommit=True, connect_timeout=5)


def _record(run_id: str, step: int, key: str) -> None:
    import psycopg

    execution = uuid.uuid4().hex
    row = (execution, run_id, step, key, os.getpid())
    deadline = time.monotonic() + 90
    with _slots:
        try:
            conn = _idle.get_nowait()
        except queue.Empty:
            conn = None
        while True:
            try:
                if conn is None or conn.closed:
                    conn = _connect()
                _insert_once(conn, execution, row)
                _idle.put(conn)
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                conn = None
                time.sleep(0.2)


def _insert_once(conn: Any, execution: str, row: tuple[Any, ...]) -> None:
    """Insert the row unless an earlier try (whose reply was lost) already did."""
    found = conn.execute("SELECT 1 FROM activity_log WHERE execution = %s", (execution,))
    if found.fetchone() is None:
        conn.execute(
            "INSERT INTO activity_log (execution, run_id, step, key, pid) "
            "VALUES (%s, %s, %s, %s, %s)",
            row,
        )


STEP_SECONDS = float(os.environ.get("STEP_SECONDS", "0"))


@durable.activity(name="orders.step")
def step(n: int) -> int:
    """A plain ``def`` activity: it runs in a worker thread, so its blocking database calls
    never stall the worker's event loop (and the lease renewals on it)."""
    info = durable.info()
    _record(info.run_id, n, info.idempotency_key)
    if STEP_SECONDS:
        time.sleep(STEP_SECONDS)
    return n


@durable.workflow(name="orders.five")
async def five() -> int:
    total = 0
    for n in range(1, 6):
        total += await step(n)  # type: ignore[misc]  # a plain def activity is awaited
    return total
