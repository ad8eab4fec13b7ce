"""Workflows for benchmarks/wakeup.py, imported by the worker process it starts."""

from __future__ import annotations

import time

import durable


@durable.activity
async def stamp() -> float:
    return time.time()


@durable.workflow(name="bench.sleep_until")
async def sleep_until(due: float) -> float:
    """Sleeps until ``due`` (epoch seconds), then records when it woke."""
    now = durable.now().timestamp()
    await durable.sleep(max(due - now, 0.0))
    return await stamp()


@durable.workflow(name="bench.wait_signal")
async def wait_signal() -> float:
    """Waits for signal "go", then records when it resumed."""
    await durable.wait_signal("go")
    return await stamp()
