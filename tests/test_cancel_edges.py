"""Cancellation when steps are awaited in another order than they were called."""

from __future__ import annotations

import anyio
import pytest

import durable
from durable.store import Store

ran: list[int] = []


@durable.activity
async def act(i: int) -> int:
    ran.append(i)
    return i


@durable.workflow(name="cancel_edges.out_of_order")
async def out_of_order() -> list[str]:
    first = act(1)  # numbered step 1 here
    second = act(2)  # step 2
    seen = []
    try:
        seen.append(str(await second))
    except durable.Cancelled:
        seen.append("2 cancelled")
    try:
        seen.append(str(await first))
    except durable.Cancelled:
        seen.append("1 cancelled")
    return seen


async def test_a_cancel_pending_at_the_start_with_steps_awaited_out_of_order(
    store: Store,
) -> None:
    """Step 1 takes the cancellation when called; step 2, awaited first, must not hang."""
    ran.clear()
    await durable.start(out_of_order, id="ooo", store=store)
    await durable.get_handle("ooo", store).cancel()
    with anyio.fail_after(10):
        result = await durable.execute(out_of_order, id="ooo", store=store)
    assert result == ["2", "1 cancelled"]
    assert ran == [2]
    run = await store.get_run("ooo")
    assert run is not None and run.cancelled_seq == 1
    # The same id again: the recorded outcome, nothing runs.
    with anyio.fail_after(10):
        assert await durable.execute(out_of_order, id="ooo", store=store) == ["2", "1 cancelled"]
    assert ran == [2]


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()
