"""Workflows on queues, for tests/test_queues.py's worker processes.

Each activity appends one JSON line to the file ``$SIDE_LOG`` when it ends (its run, its tag,
when it started and ended, by the wall clock): one ``write`` to a file opened with
``O_APPEND`` is atomic, so the processes' lines never mix.
"""

from __future__ import annotations

import json
import os
import time

import anyio

import durable

LIMITED = durable.Queue("limited", concurrency=2)
PER_KEY = durable.Queue("per_key", per_key_concurrency=1)
RATED = durable.Queue("rated", rate_limit=(5, 1.0))
ORDERED = durable.Queue("ordered", concurrency=1)


def _log(record: dict[str, object]) -> None:
    fd = os.open(os.environ["SIDE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


@durable.activity
async def work(tag: str, seconds: float) -> str:
    started = time.time()
    await anyio.sleep(seconds)
    _log({"run": durable.info().run_id, "tag": tag, "start": started, "end": time.time()})
    return tag


def _read_fifo(path: str) -> str:
    with open(path, encoding="utf-8") as fifo:  # blocks until the test opens it to write
        return fifo.read()


@durable.activity
async def hold(path: str) -> str:
    """Hold the run's slot until the test writes to the named pipe ``path``."""
    _log({"run": durable.info().run_id, "tag": "hold", "start": time.time(), "end": None})
    return await anyio.to_thread.run_sync(_read_fifo, path)


@durable.workflow(name="queue_app.job")
async def job(tag: str, seconds: float = 0.0) -> str:
    return await work(tag, seconds)


@durable.workflow(name="queue_app.gate")
async def gate(path: str) -> str:
    return await hold(path)
