"""A workflow of three activities that append to a side-effect file; killed by tests/test_crash.py.

Usage: python three_activities.py <store url> <side-effect file> <run id> <delay> <backend>
Activity two announces that it is running (so the test can SIGKILL it mid-activity), then waits.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import anyio

import durable

SIDE = Path(sys.argv[2])


def _append(line: str) -> None:
    with SIDE.open("a") as f:
        f.write(line + "\n")
        f.flush()


@durable.activity
async def first(order: str) -> str:
    _append(f"first {durable.info().idempotency_key}")
    return f"{order}-1"


@durable.activity
def second(value: str) -> str:
    _append(f"second-start {durable.info().idempotency_key}")
    time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    _append(f"second-done {durable.info().idempotency_key}")
    return f"{value}-2"


@durable.activity
async def third(value: str) -> str:
    _append(f"third {durable.info().idempotency_key}")
    return f"{value}-3"


@durable.workflow(name="crash.three")
async def three(order: str) -> str:
    return await third(await second(await first(order)))


if __name__ == "__main__":
    if sys.argv[5] == "trio":
        run = functools.partial(durable.execute, three, "order", id=sys.argv[3], store=sys.argv[1])
        print(anyio.run(run, backend="trio"), flush=True)
    else:
        print(durable.run(three, "order", id=sys.argv[3], store=sys.argv[1]), flush=True)
