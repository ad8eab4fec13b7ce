"""`durable.start(..., delay=, start_at=)`: a run that workers take up from a given time, on
every store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest
from support import eventually

import durable
from durable import RunStatus
from durable.store import Store

started: list[str] = []


@durable.activity
async def mark(tag: str) -> str:
    started.append(tag)
    return tag


@durable.workflow
async def later(tag: str) -> str:
    return await mark(tag)


@durable.workflow
async def wait_forever(tag: str) -> str:
    await mark(tag)
    return str(await durable.wait_signal("never"))


async def _status(store: Store, run_id: str) -> RunStatus:
    return await durable.get_handle(run_id, store=store).status()


async def test_a_worker_takes_a_delayed_run_up_only_from_its_start_time(store: Store) -> None:
    handle = await durable.start(later, "d", id="d", delay=timedelta(seconds=0.5), store=store)
    info = await handle.describe()
    assert info.status == RunStatus.PENDING and info.wake_at is not None
    assert (info.wake_at - info.created_at).total_seconds() == pytest.approx(0.5)
    worker = durable.Worker(store, [later])
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        assert await handle.result(timeout=60) == "d"
        worker.stop()
    (step,) = await handle.history()
    assert step.started_at >= info.wake_at  # the store's own times: not taken up early


async def test_a_start_time_in_the_past_starts_at_once(store: Store) -> None:
    past = datetime.now(UTC) - timedelta(hours=1)
    handle = await durable.start(later, "p", id="p", start_at=past, store=store)
    worker = durable.Worker(store, [later])
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        assert await handle.result(timeout=60) == "p"
        worker.stop()


async def test_cancelling_a_delayed_run_ends_it_without_waiting_for_its_start(
    store: Store,
) -> None:
    handle = await durable.start(wait_forever, "c", id="c", delay=3600, store=store)
    worker = durable.Worker(store, [wait_forever])
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await handle.cancel()
        await eventually("the delayed run cancelled", lambda: _is(store, "c", "cancelled"))
        worker.stop()
    assert "c" not in started  # it was cancelled before its first step


async def _is(store: Store, run_id: str, status: str) -> bool:
    return await _status(store, run_id) == status


async def test_execute_of_the_id_starts_a_delayed_run_at_once(store: Store) -> None:
    await durable.start(later, "x", id="x", delay=3600, store=store)
    assert await durable.execute(later, "x", id="x", store=store) == "x"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"delay": -1}, "finite number of seconds >= 0"),
        ({"delay": float("inf")}, "finite number"),
        ({"delay": True}, "seconds or a timedelta"),
        ({"delay": "5"}, "seconds or a timedelta"),
        ({"start_at": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"delay": 1, "start_at": datetime.now(UTC)}, "not both"),
    ],
)
async def test_bad_start_times_are_refused(options: dict[str, object], words: str) -> None:
    store = durable.backends.MemoryStore()
    with pytest.raises(ValueError, match=words):
        await durable.start(later, "b", id="b", store=store, **options)  # type: ignore[arg-type]
    assert await store.get_run("b") is None
