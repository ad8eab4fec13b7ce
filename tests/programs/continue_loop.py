"""A loop that continues as new, for the SIGKILL tests in tests/test_continue_as_new.py.

Executed by worker processes (``python -m durable worker continue_loop --store URL``) that the
test kills at random moments and starts again. Every execution of the loop's activity inserts
a row ``(generation, iteration, idempotency key, pid)`` into the table ``executions`` of the
SQLite file named by $SIDE_DB: the external system whose writes the test counts.
"""

from __future__ import annotations

import os
import sqlite3

import anyio

import durable

SIDE_TABLE = """
CREATE TABLE IF NOT EXISTS executions (
    generation INTEGER NOT NULL,
    iteration INTEGER NOT NULL,
    key TEXT NOT NULL,
    pid INTEGER NOT NULL
)
"""


def side_rows(path: str) -> list[tuple[int, int, str, int]]:
    """Every execution recorded so far."""
    with sqlite3.connect(path, timeout=30) as conn:
        conn.execute(SIDE_TABLE)
        return list(conn.execute("SELECT generation, iteration, key, pid FROM executions"))


@durable.activity(name="continue_loop.work")
def work(iteration: int) -> int:
    """One iteration's side effect (in a worker thread: a plain ``def``)."""
    info = durable.info()
    assert info.idempotency_key is not None
    with sqlite3.connect(os.environ["SIDE_DB"], timeout=30) as conn:
        conn.execute(SIDE_TABLE)
        conn.execute(
            "INSERT INTO executions VALUES (?, ?, ?, ?)",
            (info.generation, iteration, info.idempotency_key, os.getpid()),
        )
    return iteration


@durable.workflow(name="continue_loop.loop")
async def loop(start: int, total: int, every: int, pause: float) -> int:
    """Iterations ``start`` to ``total - 1``, one activity each; continues as new every
    ``every`` iterations. Returns how many iterations ran."""
    i = start
    while i < total:
        await work(i)
        await anyio.sleep(pause)  # workflow code between steps: a kill may land here too
        i += 1
        if i % every == 0 and i < total:
            durable.continue_as_new(i, total, every, pause)
    return i
