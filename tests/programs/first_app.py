"""Workflows executed by worker processes in tests/test_wait_first.py (the crash test).

``first_app.hold`` writes ``holding <attempt>`` to the file named by $SIDE_FILE; its first
attempt then waits for ever (the test kills the worker there), later ones return.
"""

from __future__ import annotations

import os

import anyio

import durable


def _note(line: str) -> None:
    with open(os.environ["SIDE_FILE"], "a") as f:
        f.write(f"{line}\n")


@durable.activity(name="first_app.hold")
async def hold() -> str:
    attempt = durable.info().attempt
    _note(f"holding {attempt}")
    if attempt == 1:
        await anyio.sleep_forever()
    return "released"


@durable.workflow(name="first_app.race")
async def race(seconds: float) -> list[object]:
    # the sleep comes first: once it has elapsed, a replay that raced the recorded steps
    # again would see it finish at once, before the signal that won
    index, value = await durable.wait_first(durable.sleep(seconds), durable.wait_signal("go"))
    await hold()
    return [index, value]
