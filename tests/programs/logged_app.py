"""Workflows whose lifecycle tests/test_logging.py reads in a worker's JSON log."""

from __future__ import annotations

import durable


@durable.activity(name="logs.step")
async def step(i: int) -> int:
    return i


@durable.workflow(name="logs.naps")
async def naps(seconds: float) -> int:
    """Parks (the worker runs with a short --park-after), wakes when due, completes."""
    first = await step(1)
    await durable.sleep(seconds)
    return first + await step(2)


@durable.activity(name="logs.explode")
async def explode() -> None:
    raise ValueError("the boiler exploded")


@durable.workflow(name="logs.fails")
async def fails() -> None:
    """Fails on its first step: the worker logs the traceback at ERROR."""
    await explode()
