"""Signals: buffered in order, each consumed by exactly one wait, durable deadlines."""

from __future__ import annotations

import contextlib
import time
from datetime import timedelta

import anyio
import pytest
from support import Crash, eventually

import durable
from durable import RunStatus, StepKind, StepStatus
from durable.store import Store

log: list[str] = []


crash_next: list[bool] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    log.clear()
    crash_next.clear()


@durable.activity
async def note(text: str) -> str:
    if crash_next:
        crash_next.clear()
        raise Crash
    log.append(text)
    return text


@durable.workflow
async def approval(order: str) -> str:
    await note(f"requested {order}")
    decision = await durable.wait_signal("decision", timeout=timedelta(seconds=30))
    await note(f"decided {decision}")
    return str(decision)


async def _wait_status(store: Store, run_id: str, status: RunStatus) -> None:
    async def reached() -> bool:  # polls the store, as another process would
        run = await store.get_run(run_id)
        return run is not None and run.status == status

    await eventually(f"run {run_id!r} {status}", reached, within=10)


async def test_a_waiting_run_gets_the_signal_sent_meanwhile(store: Store) -> None:
    results: list[str] = []

    async def execute() -> None:
        results.append(await durable.execute(approval, "o1", id="a1", store=store))

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        await _wait_status(store, "a1", RunStatus.WAITING)
        await durable.signal("a1", "decision", "approved", store=store)
    assert results == ["approved"]
    history = await durable.get_handle("a1", store).history()
    assert [(s.kind, s.name, s.status, s.result) for s in history[1:2]] == [
        (StepKind.SIGNAL, "decision", StepStatus.COMPLETED, "approved")
    ]


@durable.workflow
async def collects(n: int) -> list[object]:
    return [await durable.wait_signal("item") for _ in range(n)]


async def test_signals_sent_before_the_wait_are_buffered_in_order(store: Store) -> None:
    handle = await durable.start(collects, 3, id="b1", store=store)
    for item in ("one", {"two": 2}, 3):
        await handle.signal("item", item)
    await handle.signal("other", "ignored by this workflow")
    assert await durable.execute(collects, 3, id="b1", store=store) == ["one", {"two": 2}, 3]


async def test_each_signal_is_consumed_by_exactly_one_wait(store: Store) -> None:
    handle = await durable.start(collects, 2, id="c1", store=store)
    await handle.signal("item", "first")
    results: list[list[object]] = []

    async def execute() -> None:
        results.append(await durable.execute(collects, 2, id="c1", store=store))

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        await _wait_status(store, "c1", RunStatus.WAITING)
        await handle.signal("item", "second")
        # Nobody waits for a third: it stays buffered, or, once the run has finished with the
        # first two (it may already have), it is refused. Either way no wait takes it.
        with contextlib.suppress(durable.WorkflowFinished):
            await handle.signal("item", "third")
    assert results == [["first", "second"]]
    # Replaying the finished run from history gives the same values (recorded, not re-read).
    history = await handle.history()
    assert [s.result for s in history] == ["first", "second"]


@durable.workflow
async def short_wait() -> str:
    try:
        await durable.wait_signal("never", timeout=0.3)
    except durable.SignalTimeout as exc:
        await note("timed out")
        return f"timeout after {exc.timeout:g}s"
    return "signalled"


async def test_a_wait_times_out_with_signal_timeout(store: Store) -> None:
    assert await durable.execute(short_wait, id="t1", store=store) == "timeout after 0.3s"
    (wait, _) = await durable.get_handle("t1", store).history()
    assert isinstance(wait.error, durable.SignalTimeout) and isinstance(wait.error, TimeoutError)


@durable.workflow
async def waits_then_notes() -> str:
    try:
        await durable.wait_signal("go", timeout=1.0)
    except durable.SignalTimeout:
        return "timed out"
    return "went"


async def test_the_deadline_survives_a_restart(store: Store) -> None:
    started = time.monotonic()

    async def execute() -> None:
        await durable.execute(waits_then_notes, id="d1", store=store)

    async def waiting() -> bool:
        return await store.get_run("d1") is not None and bool(await store.load_steps("d1"))

    async with anyio.create_task_group() as tg:  # the executor goes away during the wait
        tg.start_soon(execute)
        await eventually("the wait's start", waiting)
        tg.cancel_scope.cancel()
    run = await store.get_run("d1")
    assert run is not None and run.status == RunStatus.PENDING
    (intent,) = await durable.get_handle("d1", store).history()
    assert intent.status == StepStatus.STARTED
    assert await durable.execute(waits_then_notes, id="d1", store=store) == "timed out"
    assert time.monotonic() - started >= 0.9  # it did not time out early ...
    (wait,) = await durable.get_handle("d1", store).history()
    assert wait.started_at == intent.started_at  # ... and the second executor kept the wait
    assert isinstance(wait.error, durable.SignalTimeout)
    assert wait.error.timeout == pytest.approx(1.0)  # measured from the first start


async def test_signalling_unknown_or_finished_runs_is_refused(store: Store) -> None:
    with pytest.raises(durable.WorkflowNotFound, match="'nobody'"):
        await durable.signal("nobody", "decision", True, store=store)
    assert await durable.execute(short_wait, id="f1", store=store) == "timeout after 0.3s"
    with pytest.raises(durable.WorkflowFinished, match=r"'decision'.*'f1'.*completed"):
        await durable.signal("f1", "decision", True, store=store)


@durable.workflow
async def waits_then_crashes() -> str:
    first = await durable.wait_signal("item")
    await note(f"got {first}")
    second = await durable.wait_signal("item")
    return f"{first}+{second}"


async def test_a_consumed_signal_is_not_lost_or_reused_after_a_crash(store: Store) -> None:
    handle = await durable.start(waits_then_crashes, id="e1", store=store)
    await handle.signal("item", "a")
    await handle.signal("item", "b")
    crash_next.append(True)
    with pytest.raises(Crash):
        await durable.execute(waits_then_crashes, id="e1", store=store)
    assert await durable.execute(waits_then_crashes, id="e1", store=store) == "a+b"
    assert log == ["got a"]


async def test_wait_signal_outside_a_run_and_bad_arguments() -> None:
    with pytest.raises(durable.NotInWorkflowError, match=r"durable\.wait_signal\(\)"):
        await durable.wait_signal("x")
    with pytest.raises(ValueError, match="signal name"):
        await durable.wait_signal("")
    with pytest.raises(ValueError, match=">= 0"):
        await durable.wait_signal("x", timeout=-1)
