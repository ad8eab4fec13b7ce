"""Parking: a long wait unwinds the run and releases it; whoever executes it resumes it later."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import pytest
from support import eventually

import durable
from durable import RunStatus
from durable.store import Store

log: list[str] = []


@pytest.fixture(autouse=True)
async def _quick_parking() -> AsyncIterator[None]:
    log.clear()
    with durable.executor_config(park_after=0.1, park_poll_seconds=0.05):
        yield


@durable.activity
async def note(text: str, seconds: float = 0.0) -> str:
    await anyio.sleep(seconds)
    log.append(f"{text}@{time.time():.3f}")
    return text


@durable.workflow
async def sleeps(seconds: float) -> str:
    await note("before")
    await durable.sleep(seconds)
    await note("after")
    return "rested"


async def _parked(store: Store, run_id: str, status: RunStatus) -> float:
    """Wait until the run is parked with ``status``; returns its wake_at (or 0.0)."""
    parked: list[float] = []

    async def check() -> bool:
        run = await store.get_run(run_id)
        if run is not None and run.status == status and run.lease_owner is None:
            parked.append(run.wake_at or 0.0)
        return bool(parked)

    await eventually(f"{run_id!r} parked as {status}", check)
    return parked[0]


async def test_a_long_sleep_parks_the_run_and_it_wakes_when_due(store: Store) -> None:
    results: list[str] = []

    async def execute() -> None:
        # 1.5 s: time enough to see it parked (after 0.1 s) on a busy machine, before it wakes
        results.append(await durable.execute(sleeps, 1.5, id="p1", store=store))

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        wake_at = await _parked(store, "p1", RunStatus.SLEEPING)
        assert wake_at > time.time()  # released, with its due time stored
    assert results == ["rested"]
    after = float(log[-1].split("@")[1])
    assert after >= wake_at  # not before it was due
    assert [entry.split("@")[0] for entry in log] == ["before", "after"]


@durable.workflow
async def sleeps_beside_an_activity() -> list[str]:
    return await durable.gather(note("slow", 0.4), _nap_then_note())


async def _nap_then_note() -> str:
    await durable.sleep(2.0)  # still long (> park_after) once the slow activity is recorded
    return await note("after nap")


async def test_a_run_parks_only_after_sibling_activities_are_recorded(store: Store) -> None:
    results: list[list[str]] = []

    async def execute() -> None:
        results.append(await durable.execute(sleeps_beside_an_activity, id="p2", store=store))

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        await _parked(store, "p2", RunStatus.SLEEPING)
        history = await durable.get_handle("p2", store).history()
        assert [s.name for s in history if s.kind == "activity"] == [f"{__name__}.note"]
    assert results == [["slow", "after nap"]]
    assert [entry.split("@")[0] for entry in log] == ["slow", "after nap"]


@durable.workflow
async def awaits_approval() -> object:
    await note("asked")
    return await durable.wait_signal("approval")


async def test_a_parked_waiting_run_is_woken_by_its_signal(store: Store) -> None:
    results: list[object] = []

    async def execute() -> None:
        results.append(await durable.execute(awaits_approval, id="p3", store=store))

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        assert await _parked(store, "p3", RunStatus.WAITING) == 0.0  # only a signal wakes it
        await durable.signal("p3", "approval", {"by": "ann"}, store=store)
    assert results == [{"by": "ann"}]
    assert [entry.split("@")[0] for entry in log] == ["asked"]


@durable.workflow
async def two_waits() -> list[object]:
    # the test looks at the parked run before the sleep ends: 1.5 s, ample on a busy machine
    return await durable.gather(durable.wait_signal("a", timeout=3.0), durable.sleep(1.5))


async def test_a_run_with_several_waits_wakes_at_the_earliest(store: Store) -> None:
    results: list[object] = []

    async def execute() -> None:
        try:
            await durable.execute(two_waits, id="p4", store=store)
        except durable.SignalTimeout as exc:
            results.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        wake_at = await _parked(store, "p4", RunStatus.WAITING)
        timer = [s for s in await durable.get_handle("p4", store).history() if s.kind == "timer"]
        assert wake_at == pytest.approx(timer[0].result)  # the sleep is due before the timeout
    assert len(results) == 1 and isinstance(results[0], durable.SignalTimeout)


@durable.workflow
async def napping_child(seconds: float) -> str:
    await durable.sleep(seconds)
    return await note("child woke")


@durable.workflow
async def parent_of_a_napper() -> str:
    await note("parent started")
    return await napping_child(1.5)


async def test_a_parent_awaiting_a_parked_child_is_parked_too(store: Store) -> None:
    await durable.start(parent_of_a_napper, id="pp", store=store)
    worker = durable.Worker(store, [parent_of_a_napper, napping_child], park_after=0.1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await _parked(store, "pp/2", RunStatus.SLEEPING)
        await _parked(store, "pp", RunStatus.WAITING)  # released too, woken by its child
        with anyio.fail_after(10):
            result = await durable.get_handle("pp", store).result()
        worker.stop()
    assert result == "child woke"
    assert [entry.split("@")[0] for entry in log] == ["parent started", "child woke"]


async def test_execute_waits_through_a_parked_child_without_a_worker(store: Store) -> None:
    with anyio.fail_after(10):
        assert await durable.execute(parent_of_a_napper, id="pe", store=store) == "child woke"
    assert await durable.get_handle("pe/2", store).status() == RunStatus.COMPLETED
