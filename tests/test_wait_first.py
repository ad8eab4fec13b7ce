"""`durable.wait_first`: the first of several steps to finish wins, the winner is recorded, and
the losers are cancelled (their completed undos kept)."""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import PROGRAMS, Crash, Processes, eventually, eventually_sync

import durable
from durable import RunStatus, StepKind, StepStatus
from durable.backends import SQLStore
from durable.store import Store

sys.path.insert(0, str(PROGRAMS))
import first_app  # the crash test's worker processes import it too

log: list[str] = []
gates: dict[str, anyio.Event] = {}


@pytest.fixture(autouse=True)
def _clear() -> None:
    log.clear()
    gates.clear()


def _gate(name: str) -> anyio.Event:
    """An event an activity waits on (made on the event loop of the test that uses it)."""
    if name not in gates:
        gates[name] = anyio.Event()
    return gates[name]


def release(name: str) -> None:
    _gate(name).set()


@durable.activity
async def quick(text: str) -> str:
    log.append(f"quick {text}")
    return text


@durable.activity
async def held(text: str) -> str:
    """Waits until the test releases ``text`` (for ever, unless it is released)."""
    log.append(f"held {text} started")
    await _gate(text).wait()
    log.append(f"held {text} done")
    return text


async def undo_booking(text: str) -> None:
    log.append(f"undo {text}")


@durable.activity(compensate=undo_booking)
async def book(text: str) -> str:
    log.append(f"book {text} started")
    await _gate(text).wait()
    log.append(f"book {text} done")
    return text


@durable.activity
async def fails(text: str) -> str:
    raise ValueError(f"no {text}")


async def _history(store: Store, run_id: str) -> list[durable.Step]:
    return await durable.get_handle(run_id, store).history()


def _first_steps(history: list[durable.Step]) -> list[object]:
    return [s.result for s in history if s.kind == StepKind.FIRST]


async def _status(store: Store, run_id: str, status: RunStatus) -> None:
    async def reached() -> bool:
        run = await store.get_run(run_id)
        return run is not None and run.status == status

    await eventually(f"run {run_id!r} {status}", reached)


# -- winner by timing, for each kind of pair ------------------------------------------------


@durable.workflow
async def activity_or_sleep(seconds: float) -> tuple[int, Any]:
    return await durable.wait_first(quick("a"), durable.sleep(seconds))


async def test_an_activity_beats_a_long_sleep(store: Store) -> None:
    assert await durable.execute(activity_or_sleep, 3600.0, id="as1", store=store) == (0, "a")
    history = await _history(store, "as1")
    # the sleep's timer is recorded only if its branch began before the activity won
    assert [(s.kind, s.status) for s in history if s.kind != StepKind.TIMER] == [
        (StepKind.ACTIVITY, StepStatus.COMPLETED),
        (StepKind.FIRST, StepStatus.COMPLETED),
    ]
    assert _first_steps(history) == [0]
    run = await store.get_run("as1")
    assert run is not None and run.status == RunStatus.COMPLETED


@durable.workflow
async def held_or_sleep(seconds: float) -> tuple[int, Any]:
    index, value = await durable.wait_first(held("h"), durable.sleep(seconds))
    await quick("after")
    return index, value


async def test_a_short_sleep_beats_an_activity_whose_attempt_is_cancelled(store: Store) -> None:
    assert await durable.execute(held_or_sleep, 0.05, id="as2", store=store) == (1, None)
    # the activity's attempt (if its task began before the sleep won: almost always) was
    # cancelled: its side effect never completed, and its started row stays (the attempt is
    # counted); it is never run again
    assert "held h done" not in log and log[-1] == "quick after"
    history = await _history(store, "as2")
    assert [(s.kind, s.status) for s in history][-3:] == [
        (StepKind.TIMER, StepStatus.COMPLETED),
        (StepKind.FIRST, StepStatus.COMPLETED),
        (StepKind.ACTIVITY, StepStatus.COMPLETED),
    ]
    assert _first_steps(history) == [1]
    before = list(log)
    # the same id again replays: same winner, nothing runs again
    assert await durable.execute(held_or_sleep, 0.05, id="as2", store=store) == (1, None)
    assert log == before


@durable.workflow
async def held_or_signal() -> tuple[int, Any]:
    return await durable.wait_first(held("h2"), durable.wait_signal("stop"))


async def test_an_activity_attempt_under_way_is_cancelled_when_it_loses(store: Store) -> None:
    results: list[tuple[int, Any]] = []

    async def execute() -> None:
        results.append(await durable.execute(held_or_signal, id="as3", store=store))

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        await eventually("the activity's attempt began", _logged("held h2 started"))
        await durable.signal("as3", "stop", "enough", store=store)
    assert results == [(1, "enough")]
    assert log == ["held h2 started"]  # cancelled: it never got past its wait
    history = await _history(store, "as3")
    assert [(s.kind, s.status, s.attempts) for s in history] == [
        (StepKind.ACTIVITY, StepStatus.STARTED, 1),
        (StepKind.SIGNAL, StepStatus.COMPLETED, 1),
        (StepKind.FIRST, StepStatus.COMPLETED, 1),
    ]
    release("h2")  # even if it could go on now, a replay never runs it again
    assert await durable.execute(held_or_signal, id="as3", store=store) == (1, "enough")
    assert log == ["held h2 started"]


@durable.workflow
async def signal_or_sleep(seconds: float) -> tuple[int, Any]:
    return await durable.wait_first(durable.wait_signal("approve"), durable.sleep(seconds))


async def test_a_signal_beats_a_long_sleep(store: Store) -> None:
    handle = await durable.start(signal_or_sleep, 3600.0, id="ss1", store=store)
    await handle.signal("approve", {"by": "ann"})
    assert await durable.execute(signal_or_sleep, 3600.0, id="ss1", store=store) == (
        0,
        {"by": "ann"},
    )
    assert _first_steps(await _history(store, "ss1")) == [0]


async def test_a_short_sleep_beats_a_signal_that_never_comes(store: Store) -> None:
    assert await durable.execute(signal_or_sleep, 0.05, id="ss2", store=store) == (1, None)
    history = await _history(store, "ss2")
    # the wait, if its task began before the sleep won (almost always), stays started: it
    # consumed nothing
    assert [(s.kind, s.status) for s in history if s.kind != StepKind.SIGNAL] == [
        (StepKind.TIMER, StepStatus.COMPLETED),
        (StepKind.FIRST, StepStatus.COMPLETED),
    ]
    assert all(s.status == StepStatus.STARTED for s in history if s.kind == StepKind.SIGNAL)


@durable.workflow
async def child_books(text: str) -> str:
    booked = await book(text)
    await quick(f"{text} confirmed")  # a cancel requested meanwhile is delivered here
    return booked


@durable.workflow
async def child_or_signal() -> tuple[int, Any]:
    return await durable.wait_first(child_books("c"), durable.wait_signal("stop"))


async def test_a_child_beats_a_signal(store: Store) -> None:
    release("c")
    assert await durable.execute(child_or_signal, id="cs1", store=store) == (0, "c")
    assert log == ["book c started", "book c done", "quick c confirmed"]
    child = await store.get_run("cs1/1")
    assert child is not None and child.status == RunStatus.COMPLETED


async def test_a_signal_beats_a_child_which_is_cancelled_and_compensates(store: Store) -> None:
    results: list[tuple[int, Any]] = []

    async def execute() -> None:
        results.append(await durable.execute(child_or_signal, id="cs2", store=store))

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        await eventually("the child's activity started", _logged("book c started"))
        await durable.signal("cs2", "stop", "now", store=store)
        # the child is asked to cancel; its activity in flight finishes (a cancel is delivered
        # at the next step boundary), then its undo runs
        await eventually("the child asked to cancel", _cancel_requested(store, "cs2/1"))
        release("c")
    assert results == [(1, "now")]
    child = await store.get_run("cs2/1")
    assert child is not None and child.status == RunStatus.CANCELLED
    assert log == ["book c started", "book c done", "undo c"]
    history = await _history(store, "cs2")
    assert [(s.kind, s.status) for s in history] == [
        (StepKind.CHILD, StepStatus.FAILED),
        (StepKind.SIGNAL, StepStatus.COMPLETED),
        (StepKind.FIRST, StepStatus.COMPLETED),
    ]
    assert isinstance(history[0].error, durable.Cancelled)


def _cancel_requested(store: Store, run_id: str) -> Any:
    async def check() -> bool:
        run = await store.get_run(run_id)
        return run is not None and run.cancel_requested

    return check


def _logged(entry: str) -> Any:
    async def check() -> bool:
        return entry in log

    return check


@durable.workflow
async def named_child_or_signal() -> tuple[int, Any]:
    child = durable.execute(child_books, "n", id="named-child")
    return await durable.wait_first(child, durable.wait_signal("stop"))


async def test_a_losing_child_under_its_own_id_is_cancelled(store: Store) -> None:
    results: list[tuple[int, Any]] = []

    async def execute() -> None:
        results.append(await durable.execute(named_child_or_signal, id="nc", store=store))

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        await eventually("the child's activity started", _logged("book n started"))
        await durable.signal("nc", "stop", "now", store=store)
        await eventually("the child asked to cancel", _cancel_requested(store, "named-child"))
        release("n")
    assert results == [(1, "now")]
    child = await store.get_run("named-child")
    assert child is not None and child.status == RunStatus.CANCELLED
    assert log == ["book n started", "book n done", "undo n"]


@durable.workflow
async def waits_for_ever() -> tuple[int, Any]:
    return await durable.wait_first(durable.wait_signal("never"), durable.sleep(3600))


async def test_a_run_cancelled_while_it_waits_raises_cancelled(store: Store) -> None:
    handle = await durable.start(waits_for_ever, id="cx", store=store)
    errors: list[BaseException] = []

    async def execute() -> None:
        try:
            await durable.execute(waits_for_ever, id="cx", store=store)
        except durable.Cancelled as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        await _status(store, "cx", RunStatus.WAITING)
        await handle.cancel()
    assert len(errors) == 1
    assert await handle.status() == RunStatus.CANCELLED
    assert _first_steps(await handle.history()) == []  # no winner: the cancel was delivered
    with pytest.raises(durable.Cancelled):  # and replays the same
        await durable.execute(waits_for_ever, id="cx", store=store)


async def test_a_run_whose_deadline_passes_while_it_waits_times_out(store: Store) -> None:
    with pytest.raises(durable.WorkflowTimeout):
        await durable.execute(waits_for_ever, id="dl", store=store, timeout=0.2)
    handle = durable.get_handle("dl", store)
    assert await handle.status() == RunStatus.TIMED_OUT
    assert _first_steps(await handle.history()) == []


async def test_an_exported_history_replays_with_its_winner() -> None:
    from durable.testing import replay

    store = durable.backends.MemoryStore()
    assert await durable.execute(held_or_sleep, 0.01, id="hx", store=store) == (1, None)
    history = await durable.get_handle("hx", store).export_history()
    log.clear()
    await replay(held_or_sleep, history)
    assert log == []  # nothing executed: the recorded winner, the loser never run


# -- errors -----------------------------------------------------------------------------------


@durable.workflow
async def failure_first() -> tuple[int, Any]:
    return await durable.wait_first(durable.sleep(3600), fails("luck"))


async def test_the_first_to_finish_raised_so_wait_first_raises_it(store: Store) -> None:
    with pytest.raises(ValueError, match="no luck"):
        await durable.execute(failure_first, id="e1", store=store)
    assert _first_steps(await _history(store, "e1")) == [1]
    with pytest.raises(ValueError, match="no luck"):  # replayed
        await durable.execute(failure_first, id="e1", store=store)


@durable.workflow
async def misuse(how: str) -> object:
    if how == "none":
        return await durable.wait_first()
    if how == "plain":
        return await durable.wait_first(durable.sleep(1), anyio.sleep(1))
    if how == "twice":
        timer = durable.sleep(1)
        return await durable.wait_first(timer, timer)
    if how == "awaited":
        step = quick("x")
        await step
        return await durable.wait_first(durable.sleep(1), step)
    if how == "number":
        return await durable.wait_first(durable.sleep(1), 42)  # type: ignore[arg-type]
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "error", "match"),
    [
        ("none", ValueError, "needs at least one awaitable"),
        ("plain", TypeError, r"argument 1 \(.*\) is not the awaitable of an activity call"),
        ("twice", ValueError, "arguments 0 and 1 are the same awaitable"),
        ("awaited", ValueError, r"argument 1 \(activity step 1\) was already awaited"),
        ("number", TypeError, r"argument 1 \(42\) is not the awaitable"),
    ],
)
async def test_bad_arguments_are_named(how: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        await durable.execute(misuse, how, id=f"m-{how}", store=durable.backends.MemoryStore())


def test_outside_a_workflow_it_refuses_and_closes_what_it_was_given() -> None:
    step = quick("plain")  # outside a run: the plain coroutine
    with pytest.raises(durable.NotInWorkflowError, match="wait_first"):
        durable.wait_first(step)
    assert step.cr_frame is None  # closed: it never runs and never warns


# -- the losers' undos ------------------------------------------------------------------------


@durable.workflow
async def two_bookings_then_failure() -> tuple[int, Any]:
    index, value = await durable.wait_first(book("x"), book("y"))
    await fails("payment")  # the run fails: the undos of what completed run
    return index, value


async def test_a_completed_losers_undo_is_kept_and_runs_when_the_workflow_fails(
    store: Store,
) -> None:
    release("x")  # both can finish at once: the first to report wins, the other completes
    release("y")  # before its cancellation could reach it (no store yields after a commit)
    with pytest.raises(ValueError, match="no payment"):
        await durable.execute(two_bookings_then_failure, id="u1", store=store)
    history = await _history(store, "u1")
    completed = {s.result for s in history if s.kind == StepKind.ACTIVITY and s.result}
    # every booking recorded as completed is undone, the winner and a completed loser alike
    assert {e for e in log if e.startswith("undo")} == {f"undo {c}" for c in completed}
    assert _first_steps(history) in ([0], [1])


@durable.workflow
async def booking_or_sleep_then_failure() -> tuple[int, Any]:
    index, value = await durable.wait_first(book("z"), durable.sleep(0.05))
    await fails("payment")
    return index, value


async def test_a_cancelled_losers_undo_does_not_run(store: Store) -> None:
    with pytest.raises(ValueError, match="no payment"):
        await durable.execute(booking_or_sleep_then_failure, id="u2", store=store)
    assert log == ["book z started"]  # never completed, so nothing to undo


# -- parking ----------------------------------------------------------------------------------


@durable.workflow
async def approve_or_expire() -> tuple[int, Any]:
    return await durable.wait_first(
        durable.wait_signal("approve"), durable.sleep(timedelta(days=3))
    )


async def test_a_signal_or_a_long_sleep_parks_the_run_and_the_signal_wins(store: Store) -> None:
    worker = durable.Worker(store, [approve_or_expire], park_after=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        handle = await durable.start(approve_or_expire, id="pk1", store=store)
        parked: list[float] = []

        async def is_parked() -> bool:
            run = await store.get_run("pk1")
            if run is not None and run.status == RunStatus.WAITING and run.lease_owner is None:
                parked.append(run.wake_at or 0.0)
            return bool(parked)

        await eventually("the run parked, waiting", is_parked)
        history = await handle.history()
        timer = next(s for s in history if s.kind == StepKind.TIMER)
        assert parked[0] == timer.result  # due at the timer, woken early by the signal
        await handle.signal("approve", "yes")
        with anyio.fail_after(30):
            assert await handle.result() == (0, "yes")
        worker.stop()
    assert _first_steps(await handle.history()) == [0]


# -- on the test environment's virtual clock ----------------------------------------------------


@durable.workflow
async def reminder_or_answer(days: int) -> str:
    index, value = await durable.wait_first(
        durable.wait_signal("answer"), durable.sleep(timedelta(days=days))
    )
    return f"answered {value}" if index == 0 else "expired"


async def test_the_environment_runs_wait_first_on_its_virtual_clock() -> None:
    from durable.testing import WorkflowEnvironment

    workflows = [reminder_or_answer, child_or_signal, child_books]
    async with WorkflowEnvironment(workflows=workflows) as env:
        assert await env.execute(reminder_or_answer, 7, id="v1") == "expired"  # a week: instant
        handle = await env.start(reminder_or_answer, 7, id="v2")
        await env.signal("v2", "answer", 42)
        assert await handle.result() == "answered 42"
        release("c")
        assert await env.execute(child_or_signal, id="v4") == (0, "c")
    assert log == [
        "book c started",
        "book c done",
        "quick c confirmed",
    ]


class _CrashesAtFirstRecord(durable.backends.MemoryStore):
    """Dies (as a killed process would) at the first commit of a ``first`` step."""

    crashed = False

    async def commit(self, lease: Any, steps: Any = (), update: Any = None, **kw: Any) -> Any:
        if not self.crashed and any(s.kind == StepKind.FIRST for s in steps):
            self.crashed = True
            raise Crash
        return await super().commit(lease, steps, update, **kw)


@durable.workflow
async def sleep_or_signal(seconds: float) -> tuple[int, Any]:
    return await durable.wait_first(durable.sleep(seconds), durable.wait_signal("go"))


async def test_a_crash_before_the_winner_is_recorded_keeps_the_step_that_finished_first() -> None:
    store = _CrashesAtFirstRecord()
    handle = await durable.start(sleep_or_signal, 0.2, id="cw", store=store)
    await handle.signal("go", "signalled")  # buffered: the wait wins as soon as it starts
    with pytest.raises(Crash):
        await durable.execute(sleep_or_signal, 0.2, id="cw", store=store)
    history = await handle.history()
    assert _first_steps(history) == []  # the signal's step is recorded, the winner is not
    timer = [s for s in history if s.kind == StepKind.TIMER]
    due = timer[0].result if timer else 0.0
    await eventually("the sleep is due too", _past(float(due)))
    # the sleep comes first and is due now, but the signal finished first by the history
    assert await durable.execute(sleep_or_signal, 0.2, id="cw", store=store) == (1, "signalled")
    assert _first_steps(await handle.history()) == [1]


def _past(when: float) -> Any:
    async def check() -> bool:
        return time.time() > when

    return check


# -- a real crash -------------------------------------------------------------------------------


def test_the_recorded_winner_is_replayed_after_a_sigkill(
    processes: Processes, tmp_path: Path
) -> None:
    """A worker process is killed after the signal won and was recorded, before the workflow
    finished; by the time the next worker replays the run the sleep has elapsed too, and the
    replay must still return the signal."""
    url = f"sqlite:///{tmp_path / 'first.db'}"
    side = tmp_path / "side.txt"
    env = {**os.environ, "SIDE_FILE": str(side)}

    async def start_and_signal() -> float:
        async with SQLStore(url) as store:
            handle = await durable.start(first_app.race, 1.0, id="crash1", store=store)
            await handle.signal("go", "signalled")
            run = await store.get_run("crash1")
            assert run is not None
            return run.created_at

    created = anyio.run(start_and_signal)
    first = processes.spawn_worker("first_app", url, tmp_path / "w1.log", env=env)
    eventually_sync("the first attempt of hold", lambda: _side(side) == ["holding 1"])
    os.kill(first.pid, signal.SIGKILL)
    first.wait()

    async def recorded() -> list[durable.Step]:
        async with SQLStore(url) as store:
            return await durable.get_handle("crash1", store).history()

    history = anyio.run(recorded)
    assert _first_steps(history) == [1]  # the signal won before the kill
    eventually_sync("the sleep elapsed", lambda: time.time() > created + 1.5, every=0.05)
    second = processes.spawn_worker("first_app", url, tmp_path / "w2.log", env=env)

    async def result() -> object:
        async with SQLStore(url) as store:
            with anyio.fail_after(60):
                return await durable.get_handle("crash1", store).result()

    try:
        assert anyio.run(result) == [1, "signalled"]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert _side(side) == ["holding 1", "holding 2"]
    history = anyio.run(recorded)
    assert [(s.kind, s.status) for s in history] == [
        (StepKind.TIMER, StepStatus.COMPLETED),
        (StepKind.SIGNAL, StepStatus.COMPLETED),
        (StepKind.FIRST, StepStatus.COMPLETED),
        (StepKind.ACTIVITY, StepStatus.COMPLETED),
    ]


def _side(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
