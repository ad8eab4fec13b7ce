"""A scheduled workflow for the schedule process tests (tests/test_schedules.py): each run's
activity appends ``"<run id> <pid>"`` to the file named by $SCHED_LOG (one short ``O_APPEND``
write, so lines of several processes never mix)."""

from __future__ import annotations

import os

import durable


@durable.activity
def record(run_id: str) -> None:
    line = f"{run_id} {os.getpid()}\n".encode()
    fd = os.open(os.environ["SCHED_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@durable.workflow
async def tick(note: str) -> str:
    await record(durable.info().run_id)
    return note
