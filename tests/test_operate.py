"""`WorkflowHandle.retry`, `fork` and `delete` on every store: what is kept, what runs again,
and what is refused."""

from __future__ import annotations

import re
from collections import Counter

import anyio
import pytest

import durable
from durable import ActionRefused, RetryPolicy, RunStatus, StepKind, StepStatus, WorkflowNotFound
from durable.store import Store

calls: Counter[str] = Counter()
broken: set[str] = set()
FAST = RetryPolicy(max_attempts=2, initial_interval=0.01, backoff=1.0)


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    broken.clear()


@durable.activity
async def step(name: str) -> str:
    calls[name] += 1
    return f"{name}-done"


@durable.activity(retry=FAST)
async def flaky(name: str) -> str:
    calls[name] += 1
    if name in broken:
        raise RuntimeError(f"{name} is broken")
    return f"{name}-done"


async def undo_charge(name: str) -> None:
    calls[f"undo {name}"] += 1
    if f"undo {name}" in broken:
        raise RuntimeError(f"undo {name} is broken")


@durable.activity(compensate=undo_charge, retry=FAST, compensate_retry=FAST)
async def charge(name: str) -> str:
    calls[name] += 1
    return f"{name}-charged"


@durable.workflow
async def pipeline(tag: str) -> list[str]:
    first = await step(f"{tag}:a")
    second = await flaky(f"{tag}:b")
    third = await step(f"{tag}:c")
    return [first, second, third]


@durable.workflow
async def booking(tag: str) -> str:
    await charge(f"{tag}:card")
    await charge(f"{tag}:points")
    return await flaky(f"{tag}:ship")


@durable.workflow
async def approval(tag: str) -> str:
    await step(f"{tag}:a")
    decision = await durable.wait_signal("decide")
    return f"{tag}:{decision}"


@durable.workflow
async def child_flow(tag: str) -> str:
    return await flaky(f"{tag}:child")


@durable.workflow
async def parent_flow(tag: str) -> str:
    await step(f"{tag}:before")
    return await child_flow(tag)


async def _fails(store: Store, wf: object, tag: str, run_id: str) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011  (the workflow's own error)
        await durable.execute(wf, tag, id=run_id, store=store)  # type: ignore[arg-type]


async def test_retry_keeps_completed_steps_and_reattempts_the_failed_one(store: Store) -> None:
    broken.add("t:b")
    await _fails(store, pipeline, "t", "r1")
    handle = durable.get_handle("r1", store=store)
    assert await handle.status() == RunStatus.FAILED
    assert calls == Counter({"t:a": 1, "t:b": 2})

    broken.clear()  # the bug is fixed and deployed
    await handle.retry()
    info = await handle.describe()
    assert info.status == RunStatus.PENDING and info.error is None
    assert [s.seq for s in await handle.history()] == [1]  # the failed step is gone

    assert await durable.execute(pipeline, "t", id="r1", store=store) == [
        "t:a-done", "t:b-done", "t:c-done",
    ]  # fmt: skip
    assert calls == Counter({"t:a": 1, "t:b": 3, "t:c": 1})  # a is not done again
    history = await handle.history()
    assert [(s.seq, s.status, s.attempts) for s in history] == [
        (1, StepStatus.COMPLETED, 1),
        (2, StepStatus.COMPLETED, 1),
        (3, StepStatus.COMPLETED, 1),
    ]  # fmt: skip  (the retried step has a fresh attempt budget)


async def test_retry_refuses_runs_that_did_not_stop_and_missing_runs(store: Store) -> None:
    await durable.execute(pipeline, "ok", id="done", store=store)
    with pytest.raises(ActionRefused, match=r"cannot retry run 'done' \(completed\)") as caught:
        await durable.get_handle("done", store=store).retry()
    assert caught.value.status == RunStatus.COMPLETED and caught.value.action == "retry"
    await durable.start(approval, "p", id="pending", store=store)
    with pytest.raises(ActionRefused, match="wait until it stops"):
        await durable.get_handle("pending", store=store).retry()
    with pytest.raises(WorkflowNotFound):
        await durable.get_handle("nope", store=store).retry()
    assert await durable.get_handle("done", store=store).status() == RunStatus.COMPLETED


async def test_retry_refuses_a_compensated_failure_unless_asked_to_start_over(
    store: Store,
) -> None:
    broken.add("s:ship")
    await _fails(store, booking, "s", "trip")
    handle = durable.get_handle("trip", store=store)
    assert await handle.status() == RunStatus.FAILED
    assert calls["undo s:card"] == 1 and calls["undo s:points"] == 1
    with pytest.raises(ActionRefused, match="compensations already ran") as caught:
        await handle.retry()
    assert "after_compensation=True" in str(caught.value)
    assert await handle.status() == RunStatus.FAILED  # nothing changed

    broken.clear()
    await handle.retry(after_compensation=True)
    assert await handle.history() == []
    assert await durable.execute(booking, "s", id="trip", store=store) == "s:ship-done"
    assert calls["s:card"] == 2 and calls["s:points"] == 2  # the whole body ran again
    assert calls["undo s:card"] == 1  # and nothing was undone twice


async def test_retry_of_compensation_failed_reattempts_only_the_failed_undo(
    store: Store,
) -> None:
    broken.update({"c:ship", "undo c:card"})
    await _fails(store, booking, "c", "trip")
    handle = durable.get_handle("trip", store=store)
    assert await handle.status() == RunStatus.COMPENSATION_FAILED
    assert calls["undo c:points"] == 1 and calls["undo c:card"] == 2

    broken.discard("undo c:card")  # the undo is fixed; the shipment still fails
    await handle.retry()
    with pytest.raises(RuntimeError, match="c:ship is broken"):
        await durable.execute(booking, "c", id="trip", store=store)
    assert await handle.status() == RunStatus.FAILED  # compensated now, the original error
    assert calls["undo c:points"] == 1  # the undo that had succeeded is not repeated
    assert calls["undo c:card"] == 3 and calls["c:ship"] == 2  # the failure is kept
    undos = [s for s in await handle.history() if s.kind == StepKind.COMPENSATION]
    assert [s.status for s in undos] == [StepStatus.COMPLETED, StepStatus.COMPLETED]


async def test_retry_of_a_cancelled_run_continues_from_where_the_cancel_was_delivered(
    store: Store,
) -> None:
    handle = await durable.start(approval, "w", id="ask", store=store)
    await handle.cancel()
    with pytest.raises(durable.Cancelled):
        await durable.execute(approval, "w", id="ask", store=store)
    assert await handle.status() == RunStatus.CANCELLED
    await handle.retry()
    await handle.signal("decide", "yes")
    assert await durable.execute(approval, "w", id="ask", store=store) == "w:yes"
    assert calls["w:a"] == 1


async def test_retry_of_a_parent_retries_its_failed_child_first(store: Store) -> None:
    broken.add("k:child")
    await _fails(store, parent_flow, "k", "parent")
    child = durable.get_handle("parent/2", store=store)
    assert await child.status() == RunStatus.FAILED
    broken.clear()
    await durable.get_handle("parent", store=store).retry()
    assert await child.status() == RunStatus.PENDING
    assert await durable.execute(parent_flow, "k", id="parent", store=store) == "k:child-done"
    assert await child.status() == RunStatus.COMPLETED
    assert calls["k:before"] == 1


async def test_fork_copies_the_steps_before_and_executes_from_the_step(store: Store) -> None:
    await durable.execute(pipeline, "f", id="orig", store=store)
    forked = await durable.get_handle("orig", store=store).fork(3)
    assert re.fullmatch(r"orig-fork3-[0-9a-f]{8}", forked.id)
    assert (await forked.describe()).status == RunStatus.PENDING
    assert [s.seq for s in await forked.history()] == [1, 2]
    assert await durable.execute(pipeline, "f", id=forked.id, store=store) == [
        "f:a-done", "f:b-done", "f:c-done",
    ]  # fmt: skip
    assert calls == Counter({"f:a": 1, "f:b": 1, "f:c": 2})
    assert await durable.get_handle("orig", store=store).status() == RunStatus.COMPLETED


async def test_fork_with_new_arguments_and_id(store: Store) -> None:
    await durable.execute(pipeline, "g", id="orig", store=store)
    forked = await durable.get_handle("orig", store=store).fork(1, id="again", args=["h"])
    assert forked.id == "again"
    assert await durable.execute(pipeline, "h", id="again", store=store) == [
        "h:a-done", "h:b-done", "h:c-done",
    ]  # fmt: skip


async def test_fork_refuses_bad_steps_and_taken_ids(store: Store) -> None:
    await durable.execute(pipeline, "x", id="orig", store=store)
    handle = durable.get_handle("orig", store=store)
    with pytest.raises(ActionRefused, match="3 recorded step"):
        await handle.fork(5)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="from_step"):
            await handle.fork(bad)  # type: ignore[arg-type]
    with pytest.raises(ActionRefused, match="'orig' is taken"):
        await handle.fork(2, id="orig")
    with pytest.raises(WorkflowNotFound):
        await durable.get_handle("nope", store=store).fork(1)
    page = await durable.list_runs(store=store)
    assert [r.id for r in page.runs] == ["orig"]


async def test_delete_removes_a_finished_run_and_refuses_the_rest(store: Store) -> None:
    await durable.execute(pipeline, "d", id="done", store=store)
    await durable.get_handle("done", store=store).delete()
    with pytest.raises(WorkflowNotFound):
        await durable.get_handle("done", store=store).status()
    assert await store.load_steps("done") == []
    with pytest.raises(WorkflowNotFound):
        await durable.get_handle("done", store=store).delete()

    await durable.start(approval, "p", id="open", store=store)
    with pytest.raises(ActionRefused, match="has not finished"):
        await durable.get_handle("open", store=store).delete()
    assert await durable.get_handle("open", store=store).status() == RunStatus.PENDING


async def test_a_waiting_worker_takes_up_a_retried_run(store: Store) -> None:
    """The reset wakes a worker that waits for work (the store's notification), which then
    finishes the run; `result()` in the caller wakes on the outcome."""
    broken.add("w:b")
    handle = await durable.start(pipeline, "w", id="r", store=store)
    worker = durable.Worker(store, [pipeline], concurrency=2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with pytest.raises(RuntimeError, match="w:b is broken"):
            await handle.result(timeout=60)
        broken.clear()
        await handle.retry()
        assert await handle.result(timeout=60) == ["w:a-done", "w:b-done", "w:c-done"]
        worker.stop()
    assert calls == Counter({"w:a": 1, "w:b": 3, "w:c": 1})
