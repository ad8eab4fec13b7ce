"""Many short workflows for tests/test_group_commit.py, which SIGKILLs the worker executing
them while their commits are grouped.

After each step returns, the workflow appends ``<run id> <step>`` to the file named by
$RETURNED_FILE: a line there is a step the workflow saw as recorded.
"""

from __future__ import annotations

import os

import durable


@durable.activity(name="group_app.step")
async def step(i: int) -> int:
    return i


def _returned() -> None:
    info = durable.info()
    with open(os.environ["RETURNED_FILE"], "a") as f:
        f.write(f"{info.run_id} {info.step}\n")


@durable.workflow(name="group_app.logged")
async def logged(n: int) -> int:
    total = 0
    for i in range(n):
        total += await step(i)
        _returned()  # written (flushed to the OS) before the next step: survives a SIGKILL
    return total
