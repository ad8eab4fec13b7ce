"""A booking loop with compensations, executed by worker processes in tests/test_deadlines.py.

Every activity and undo appends a line to the file named by $SIDE_FILE. With $HOLD_AT set to a
step, the booking of that step announces itself and then never ends, so the test can SIGKILL
the worker while it is in flight.
"""

from __future__ import annotations

import os

import anyio

import durable


def _append(line: str) -> None:
    with open(os.environ["SIDE_FILE"], "a") as f:
        f.write(line + "\n")


async def unbook(i: int) -> None:
    _append(f"undo {i}")


@durable.activity(compensate=unbook)
async def book(i: int) -> int:
    _append(f"start {i}")
    if os.environ.get("HOLD_AT") == str(i):
        await anyio.sleep_forever()  # in flight until the process is killed
    _append(f"done {i}")
    return i


@durable.workflow(name="deadline.trip")
async def trip(n: int) -> int:
    for i in range(n):
        await book(i)
    return n
