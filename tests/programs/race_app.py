"""Workflows executed by a worker process in tests/test_control_races.py.

Gates and side effects are files in the directory named by $RACE_DIR:
``<run>.<tag>`` gets one line per execution of that side effect (tags ``first``, ``second``,
``third``, ``undo-first``), and `first` waits for ``<run>.go`` before it returns, so the test
can cancel or pause the run while its first activity is in flight and let it finish afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio

import durable


def _dir() -> Path:
    return Path(os.environ["RACE_DIR"])


def mark(run_id: str, tag: str) -> None:
    """Record one execution of side effect ``tag`` of run ``run_id``."""
    with (_dir() / f"{run_id}.{tag}").open("a") as f:
        f.write(f"{os.getpid()}\n")


async def _undo_first(run_id: str) -> None:
    mark(run_id, "undo-first")


@durable.activity(compensate=_undo_first)
async def first(run_id: str) -> str:
    mark(run_id, "first")
    go = _dir() / f"{run_id}.go"
    with anyio.fail_after(60):  # the test lets it go once its cancel / pause returned
        for _ in range(1_000_000):
            if go.exists():
                break
            await anyio.sleep(0.005)
    return "one"


@durable.activity
async def second(run_id: str) -> str:
    mark(run_id, "second")
    return "two"


@durable.activity
async def third(run_id: str) -> str:
    mark(run_id, "third")
    return "three"


@durable.workflow(name="race.three_steps")
async def three_steps(run_id: str) -> list[str]:
    return [await first(run_id), await second(run_id), await third(run_id)]
