"""Workflows executed by worker processes in tests/test_worker.py.

Every activity appends ``<run id> <step> <pid> <time>`` to the file named by $SIDE_FILE.
"""

from __future__ import annotations

import os
import time

import anyio

import durable


def _record(tag: str) -> None:
    info = durable.info()
    with open(os.environ["SIDE_FILE"], "a") as f:
        f.write(f"{info.run_id} {tag} {info.idempotency_key} {os.getpid()} {time.time():.3f}\n")


@durable.activity
async def work(i: int, seconds: float) -> int:
    _record(f"start{i}")
    await anyio.sleep(seconds)
    _record(f"done{i}")
    return i


@durable.workflow(name="app.five_steps")
async def five_steps(seconds: float) -> int:
    total = 0
    for i in range(5):
        total += await work(i, seconds)
    return total


@durable.workflow(name="app.sleeper")
async def sleeper(seconds: float) -> str:
    await work(0, 0.0)
    await durable.sleep(seconds)
    await work(1, 0.0)
    return "woke"


@durable.activity
async def slow_pid(seconds: float) -> int:
    _record("slow")
    await anyio.sleep(seconds)
    _record("slow-done")
    return os.getpid()


@durable.workflow(name="app.stalls")
async def stalls(seconds: float) -> list[int]:
    first = await slow_pid(seconds)
    second = await slow_pid(0.0)
    return [first, second]


@durable.workflow(name="app.waits_for_items")
async def waits_for_items(n: int) -> list[object]:
    return [await durable.wait_signal("item") for _ in range(n)]


@durable.activity
async def got(item: object) -> None:
    _record(f"got{item}")
    await anyio.sleep(0.05)


@durable.workflow(name="app.collects")
async def collects(n: int) -> list[object]:
    items = []
    for _ in range(n):
        item = await durable.wait_signal("item")
        await got(item)
        items.append(item)
    return items
