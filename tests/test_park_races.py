"""A cancel or pause that arrives after a wait began but before the run is parked (the run is
still leased, so the store cannot apply it to an idle run) is not lost: the run is not parked
until its wake-up time with the request pending.

The request is injected at exactly that point: just before the parking commit."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import durable
from durable import RunStatus
from durable.store import RunUpdate, Store


@pytest.fixture(autouse=True)
async def _quick_parking() -> AsyncIterator[None]:
    with durable.executor_config(park_after=0.1):
        yield


class RequestBeforeParking:
    """Forwards to a store; just before the first commit that parks a run, sends a request."""

    def __init__(self, store: Store, request: str) -> None:
        self._store = store
        self._request = request
        self.injected = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def commit(
        self, lease: Any, steps: Any, update: RunUpdate | None = None, **kw: Any
    ) -> Any:
        parking = (
            update is not None
            and update.release
            and update.status in (RunStatus.SLEEPING, RunStatus.WAITING)
        )
        if parking and not self.injected:
            self.injected = True
            if self._request == "cancel":
                await self._store.request_cancel(lease.run_id, now=time.time())
            elif self._request == "signal":
                await durable.signal(lease.run_id, "go", None, store=self._store)
            else:
                await self._store.request_pause(lease.run_id, now=time.time())
        return await self._store.commit(lease, steps, update, **kw)


@durable.workflow
async def sleeps_an_hour() -> str:
    await durable.sleep(3600)
    return "woke"


@durable.workflow
async def waits_for_go() -> str:
    await durable.wait_signal("go")
    return "went"


@pytest.mark.parametrize("workflow", [sleeps_an_hour, waits_for_go], ids=["sleep", "signal"])
async def test_a_cancel_just_before_parking_is_delivered_at_once(
    store: Store, workflow: Any
) -> None:
    racing = RequestBeforeParking(store, "cancel")
    with anyio.fail_after(60):  # a hang guard: without the fix the run waits an hour
        with pytest.raises(durable.Cancelled):
            await durable.execute(workflow, id="c", store=racing)  # type: ignore[arg-type]
    assert racing.injected
    run = await store.get_run("c")
    assert run is not None and run.status == RunStatus.CANCELLED


@pytest.mark.parametrize("workflow", [sleeps_an_hour, waits_for_go], ids=["sleep", "signal"])
async def test_a_pause_just_before_parking_leaves_the_run_paused(
    store: Store, workflow: Any
) -> None:
    racing = RequestBeforeParking(store, "pause")
    handle = await durable.start(workflow, id="p", store=store)

    async def execute() -> None:
        # The cancel below may end it before the task group is cancelled: that is expected.
        with contextlib.suppress(durable.Cancelled):
            await durable.execute(workflow, id="p", store=racing)  # type: ignore[arg-type]

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        with anyio.fail_after(60):
            while (run := await store.get_run("p")) is None or run.status != RunStatus.PAUSED:
                await store.watch(["p"], within=1.0)
        assert racing.injected and run.lease_owner is None
        await handle.resume()
        if workflow is waits_for_go:
            await handle.signal("go", None)
        else:
            await handle.cancel()  # an hour is long: end it
        tg.cancel_scope.cancel()


async def test_a_signal_just_before_parking_is_received(store: Store) -> None:
    racing = RequestBeforeParking(store, "signal")
    with anyio.fail_after(2):  # a hang guard: the run waits for a signal it has
        await durable.execute(waits_for_go, id="s", store=racing)  # type: ignore[arg-type]
    assert racing.injected
