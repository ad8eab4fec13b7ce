"""A step that is called but never started (its task cancelled before it ran) must not keep
the run from parking: the engine counts steps in flight, and such a step leaves the count."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest
from support import eventually

import durable
from durable import RunStatus
from durable.store import Store


@pytest.fixture(autouse=True)
async def _quick_parking() -> AsyncIterator[None]:
    with durable.executor_config(park_after=0.1, park_poll_seconds=0.05):
        yield


class Refused(Exception):
    pass


@durable.activity
async def fails_at_once() -> None:
    raise Refused("no")


@durable.activity
async def other() -> str:
    await anyio.lowlevel.checkpoint()
    return "other"


@durable.workflow
async def gathers_then_sleeps() -> str:
    try:
        await durable.gather(fails_at_once(), other())
    except Refused:
        pass
    await durable.sleep(3600)
    return "woke"


@durable.workflow
async def drops_a_call_then_sleeps() -> str:
    dropped = other()  # called (numbered) but never awaited: it never starts
    del dropped
    await durable.sleep(3600)
    return "woke"


async def _parked(store: Store, run_id: str) -> bool:
    run = await store.get_run(run_id)
    return run is not None and run.status == RunStatus.SLEEPING and run.lease_owner is None


async def _parks(store: Store, run_id: str) -> None:
    await eventually(f"the parking of run {run_id!r}", lambda: _parked(store, run_id))
    run = await store.get_run(run_id)
    assert run is not None and run.wake_at is not None


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
async def test_a_step_called_but_never_awaited_does_not_stop_the_run_from_parking(
    store: Store,
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: durable.execute(drops_a_call_then_sleeps, id="drop", store=store))
        await _parks(store, "drop")
        tg.cancel_scope.cancel()


async def test_a_step_cancelled_before_it_started_does_not_stop_the_run_from_parking(
    store: Store,
) -> None:
    async def execute() -> None:
        await durable.execute(gathers_then_sleeps, id="leak", store=store)

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        await _parks(store, "leak")
        tg.cancel_scope.cancel()
