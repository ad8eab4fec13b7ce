"""Sagas: undos run newest-first when a workflow or a saga block fails, durably."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from support import Crash, eventually

import durable
from durable import RetryPolicy, RunStatus, StepKind, StepStatus
from durable.store import Store

log: list[str] = []
crash_in: set[str] = set()
fail_always: set[str] = set()

FAST = RetryPolicy(max_attempts=3, initial_interval=0.001, max_interval=0.001)


class Declined(Exception):
    pass


@pytest.fixture(autouse=True)
def _clear() -> None:
    log.clear()
    crash_in.clear()
    fail_always.clear()


def _effect(name: str) -> None:
    if name in crash_in:
        crash_in.discard(name)
        raise Crash
    if name in fail_always:
        raise OSError(f"{name} is down")
    log.append(name)


async def cancel_flight(flight: str, seat: str, *, result: str) -> None:
    _effect(f"undo flight {flight} {seat} {result}")


def cancel_hotel(city: str, nights: int = 1) -> None:  # a plain def undo: runs in a thread
    _effect(f"undo hotel {city} {nights}")


@durable.activity(name="saga.release_car")
async def release_car(city: str) -> None:
    _effect(f"undo car {city}")


@durable.activity(compensate=cancel_flight, compensate_retry=FAST)
async def book_flight(flight: str, seat: str) -> str:
    _effect(f"flight {flight}")
    return f"PNR-{flight}"


@durable.activity(compensate=cancel_hotel, compensate_retry=FAST)
def book_hotel(city: str, nights: int = 1) -> str:
    _effect(f"hotel {city}")
    return f"H-{city}"


@durable.activity(compensate=release_car, compensate_retry=FAST)
async def book_car(city: str) -> str:
    _effect(f"car {city}")
    return f"C-{city}"


@durable.activity
async def charge(cents: int) -> str:
    if cents > 1000:
        raise Declined(f"{cents} cents declined")
    _effect(f"charge {cents}")
    return "paid"


@durable.workflow
async def trip(cents: int) -> str:
    await book_flight("LH1", seat="4A")
    await book_hotel("Rome")
    await book_car("Rome")
    return await charge(cents)


async def test_a_failure_undoes_completed_activities_newest_first(store: Store) -> None:
    with pytest.raises(Declined, match="5000 cents declined"):
        await durable.execute(trip, 5000, id="t1", store=store)
    assert log == [
        "flight LH1",
        "hotel Rome",
        "car Rome",
        "undo car Rome",
        "undo hotel Rome 1",
        "undo flight LH1 4A PNR-LH1",
    ]
    handle = durable.get_handle("t1", store)
    assert await handle.status() == RunStatus.FAILED
    history = await handle.history()
    assert [(s.kind, s.name) for s in history[4:]] == [
        (StepKind.COMPENSATION, "saga.release_car"),
        (StepKind.COMPENSATION, f"{__name__}.cancel_hotel"),
        (StepKind.COMPENSATION, f"{__name__}.cancel_flight"),
    ]
    with pytest.raises(Declined):  # the recorded outcome: nothing runs again
        await durable.execute(trip, 5000, id="t1", store=store)
    with pytest.raises(Declined):
        await handle.result()
    assert len(log) == 6


async def test_a_successful_run_compensates_nothing(store: Store) -> None:
    assert await durable.execute(trip, 100, id="t2", store=store) == "paid"
    assert not any(entry.startswith("undo") for entry in log)


async def test_a_crash_during_compensation_resumes_without_repeating_undos(
    store: Store,
) -> None:
    crash_in.add("undo hotel Rome 1")
    with pytest.raises(Crash):
        await durable.execute(trip, 5000, id="t3", store=store)
    assert log[-1] == "undo car Rome"
    with pytest.raises(Declined):
        await durable.execute(trip, 5000, id="t3", store=store)
    undos = [entry for entry in log if entry.startswith("undo")]
    assert undos == ["undo car Rome", "undo hotel Rome 1", "undo flight LH1 4A PNR-LH1"]
    assert [entry for entry in log if not entry.startswith("undo")] == [
        "flight LH1",
        "hotel Rome",
        "car Rome",
    ]


flaky_left: dict[str, int] = {}


async def flaky_undo(city: str) -> None:
    if flaky_left.get(city, 0) > 0:
        flaky_left[city] -= 1
        raise ConnectionError("try again")
    log.append(f"undo {city}")


@durable.activity(compensate=flaky_undo, compensate_retry=FAST)
async def reserve(city: str) -> None:
    log.append(f"reserve {city}")


@durable.workflow
async def reserves_then_fails() -> None:
    await reserve("A")
    await reserve("B")
    raise Declined("no")


async def test_undos_are_retried(store: Store) -> None:
    flaky_left["A"] = 2
    with pytest.raises(Declined):
        await durable.execute(reserves_then_fails, id="r1", store=store)
    assert log == ["reserve A", "reserve B", "undo B", "undo A"]
    attempts = [s.attempts for s in await durable.get_handle("r1", store).history()]
    assert attempts[2:] == [1, 3]


async def test_a_failing_undo_does_not_stop_the_others(store: Store) -> None:
    fail_always.add("undo hotel Rome 1")
    with pytest.raises(durable.CompensationFailed) as info:
        await durable.execute(trip, 5000, id="t4", store=store)
    error = info.value
    assert isinstance(error.error, Declined)
    assert [type(e) for e in error.undo_errors] == [OSError]
    assert "'t4'" in str(error) and "hotel Rome 1 is down" in str(error)
    assert log[-2:] == ["undo car Rome", "undo flight LH1 4A PNR-LH1"]
    assert await durable.get_handle("t4", store).status() == RunStatus.COMPENSATION_FAILED
    found = await store.list_runs(status=RunStatus.COMPENSATION_FAILED)
    assert [run.id for run in found] == ["t4"]
    history = await durable.get_handle("t4", store).history()
    failed = [s for s in history if s.status == StepStatus.FAILED]
    assert [(s.name, s.attempts) for s in failed] == [
        (f"{__name__}.charge", 1),
        (f"{__name__}.cancel_hotel", 3),
    ]
    with pytest.raises(durable.CompensationFailed):  # recorded
        await durable.get_handle("t4", store).result()


def test_an_incompatible_undo_fails_at_decoration() -> None:
    def wrong(city: str, extra: str) -> None: ...

    with pytest.raises(TypeError) as info:

        @durable.activity(compensate=wrong)
        async def book(city: str) -> None: ...

    message = str(info.value)
    assert "wrong" in message and "book" in message and "extra" in message

    def positional_result(city: str, result: str) -> None: ...

    with pytest.raises(TypeError, match="keyword-only"):

        @durable.activity(compensate=positional_result)
        async def book2(city: str) -> None: ...

    def takes_everything(*args: Any, **kwargs: Any) -> None: ...

    @durable.activity(compensate=takes_everything)
    async def book3(city: str, *more: str, when: int = 0, **extra: Any) -> None: ...

    with pytest.raises(TypeError, match=r"final=True.*compensate"):
        durable.activity(final=True, compensate=takes_everything)
    with pytest.raises(ValueError, match="idempotent"):
        durable.activity(idempotent=True)


@durable.workflow
async def scoped(fail_inner: bool, fail_outer: bool) -> list[str]:
    await book_flight("OUT", seat="1A")
    notes = []
    try:
        async with durable.saga():
            await book_hotel("Inner")
            async with durable.saga():
                await book_car("Nested")
            if fail_inner:
                raise Declined("inner block fails")
    except Declined as exc:
        notes.append(f"caught {exc}")
    await book_car("After")
    if fail_outer:
        raise Declined("outer fails")
    return notes


async def test_a_failing_saga_block_undoes_only_its_own_work(store: Store) -> None:
    assert await durable.execute(scoped, True, False, id="s1", store=store) == [
        "caught inner block fails"
    ]
    assert [e for e in log if e.startswith("undo")] == [
        "undo car Nested",
        "undo hotel Inner 1",
    ]
    assert await durable.get_handle("s1", store).status() == RunStatus.COMPLETED


async def test_a_successful_block_hands_its_undos_to_the_workflow(store: Store) -> None:
    with pytest.raises(Declined, match="outer fails"):
        await durable.execute(scoped, False, True, id="s2", store=store)
    assert [e for e in log if e.startswith("undo")] == [
        "undo car After",
        "undo car Nested",
        "undo hotel Inner 1",
        "undo flight OUT 1A PNR-OUT",
    ]


async def test_a_crash_inside_a_block_unwind_resumes(store: Store) -> None:
    crash_in.add("undo hotel Inner 1")
    with pytest.raises(Crash):
        await durable.execute(scoped, True, False, id="s3", store=store)
    assert await durable.execute(scoped, True, False, id="s3", store=store) == [
        "caught inner block fails"
    ]
    assert [e for e in log if e.startswith("undo")] == [
        "undo car Nested",
        "undo hotel Inner 1",
    ]
    assert log.count("car After") == 1


async def slow_undo(tag: str, delay: float) -> None:
    log.append(f"undo {tag}")


@durable.activity(compensate=slow_undo)
async def timed(tag: str, delay: float) -> str:
    await anyio.sleep(delay)
    log.append(tag)
    return tag


@durable.workflow
async def concurrent_then_fail() -> None:
    await durable.gather(timed("slow", 0.15), timed("fast", 0.0), timed("mid", 0.07))
    raise Declined("after the branches")


async def test_concurrent_branches_are_undone_in_reverse_completion_order(store: Store) -> None:
    with pytest.raises(Declined):
        await durable.execute(concurrent_then_fail, id="c1", store=store)
    assert log == ["fast", "mid", "slow", "undo slow", "undo mid", "undo fast"]


@durable.activity
async def long_task(seconds: float) -> str:
    log.append("long started")
    await anyio.sleep(seconds)
    log.append("long finished")
    return "done"


async def _long_task_started() -> None:
    """Until `long_task` runs (a cancel sent then meets it; a fixed delay raced it)."""

    async def started() -> bool:
        return "long started" in log

    await eventually("long_task's start", started)


@durable.workflow
async def cancellable() -> str:
    await book_flight("CX", seat="9C")
    await long_task(0.5)
    await book_car("never")
    return "unreachable"


async def test_cancelling_a_running_run_compensates_and_ends_cancelled(store: Store) -> None:
    async def cancel_soon() -> None:
        await _long_task_started()
        await durable.get_handle("x1", store).cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_soon)
        with pytest.raises(durable.Cancelled, match="'x1'"):
            await durable.execute(cancellable, id="x1", store=store)
    assert log == ["flight CX", "long started", "long finished", "undo flight CX 9C PNR-CX"]
    handle = durable.get_handle("x1", store)
    assert await handle.status() == RunStatus.CANCELLED
    with pytest.raises(durable.Cancelled):
        await handle.result()
    await handle.cancel()  # finished: nothing happens
    assert await handle.status() == RunStatus.CANCELLED


@durable.workflow
async def sleeper() -> str:
    await book_flight("ZZ", seat="1Z")
    await durable.sleep(3600)
    return "woke"


async def test_cancelling_a_sleeping_run_takes_effect_at_once(store: Store) -> None:
    async def sleeping() -> bool:
        run = await store.get_run("x2")
        return run is not None and run.status == RunStatus.SLEEPING

    async def cancel_soon() -> None:
        await eventually("the sleep", sleeping)
        # At once: a cancel that comes between the sleep's record and the parking is applied
        # when the run parks (tests/test_park_races.py).
        await durable.get_handle("x2", store).cancel()

    started = time.monotonic()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_soon)
            with pytest.raises(durable.Cancelled):
                await durable.execute(sleeper, id="x2", store=store)
    assert time.monotonic() - started < 3600
    assert log == ["flight ZZ", "undo flight ZZ 1Z PNR-ZZ"]
    assert await durable.get_handle("x2", store).status() == RunStatus.CANCELLED


async def test_a_cancel_recorded_while_nobody_runs_it_applies_when_it_runs(store: Store) -> None:
    handle = await durable.start(trip, 100, id="x3", store=store)
    await handle.cancel()
    assert await handle.status() == RunStatus.PENDING
    with pytest.raises(durable.Cancelled):
        await durable.execute(trip, 100, id="x3", store=store)
    assert log == []
    assert await handle.status() == RunStatus.CANCELLED


@durable.workflow
async def catches_cancel() -> str:
    await book_flight("CC", seat="2B")
    try:
        await long_task(0.4)
        await long_task(0.0)
    except durable.Cancelled:
        log.append("cleanup")
    return "finished anyway"


async def test_a_workflow_may_catch_cancellation_and_replay_agrees(store: Store) -> None:
    async def cancel_soon() -> None:
        await _long_task_started()
        await durable.get_handle("x4", store).cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_soon)
        assert await durable.execute(catches_cancel, id="x4", store=store) == "finished anyway"
    assert log == ["flight CC", "long started", "long finished", "cleanup"]
    run = await store.get_run("x4")
    assert run is not None and run.cancelled_seq == 3 and run.status == RunStatus.COMPLETED


async def test_rollback_undoes_a_completed_run_once(store: Store) -> None:
    assert await durable.execute(trip, 100, id="rb", store=store) == "paid"
    handle = durable.get_handle("rb", store)
    await handle.rollback()
    assert await handle.status() == RunStatus.COMPENSATED
    assert [e for e in log if e.startswith("undo")] == [
        "undo car Rome",
        "undo hotel Rome 1",
        "undo flight LH1 4A PNR-LH1",
    ]
    await handle.rollback()  # a no-op
    assert len([e for e in log if e.startswith("undo")]) == 3
    assert await durable.execute(trip, 100, id="rb", store=store) == "paid"  # still its result


async def test_an_interrupted_rollback_resumes(store: Store) -> None:
    assert await durable.execute(trip, 100, id="rb2", store=store) == "paid"
    crash_in.add("undo hotel Rome 1")
    handle = durable.get_handle("rb2", store)
    with pytest.raises(Crash):
        await handle.rollback()
    await handle.rollback()
    assert [e for e in log if e.startswith("undo")] == [
        "undo car Rome",
        "undo hotel Rome 1",
        "undo flight LH1 4A PNR-LH1",
    ]
    assert await handle.status() == RunStatus.COMPENSATED


async def test_only_completed_runs_roll_back(store: Store) -> None:
    with pytest.raises(Declined):
        await durable.execute(trip, 5000, id="rb3", store=store)
    with pytest.raises(durable.DurableError, match=r"'rb3' is failed"):
        await durable.get_handle("rb3", store).rollback()
    with pytest.raises(durable.WorkflowNotFound):
        await durable.get_handle("nobody", store).rollback()


@durable.activity(final=True)
async def send_email(to: str) -> str:
    key = durable.info().idempotency_key
    _effect(f"email {to} {key}")
    return f"sent {to}"


@durable.activity(final=True, idempotent=True)
async def ship(parcel: str) -> str:
    key = durable.info().idempotency_key
    _effect(f"ship {parcel} {key}")
    return f"shipped {parcel}"


@durable.workflow
async def notifies() -> list[str]:
    out = []
    try:
        out.append(await send_email("ann"))
    except durable.OutcomeUnknown as exc:
        out.append(f"unknown {exc.idempotency_key}")
    out.append(await ship("p1"))
    return out


async def test_a_final_activity_interrupted_is_not_run_again(store: Store) -> None:
    crash_in.add("email ann fe/1")
    with pytest.raises(Crash):
        await durable.execute(notifies, id="fe", store=store)
    (intent,) = await durable.get_handle("fe", store).history()
    assert intent.status == StepStatus.STARTED and intent.result is None
    assert await durable.execute(notifies, id="fe", store=store) == ["unknown fe/1", "shipped p1"]
    assert log == ["ship p1 fe/2"]  # the e-mail was not sent again
    history = await durable.get_handle("fe", store).history()
    assert history[0].status == StepStatus.FAILED
    assert isinstance(history[0].error, durable.OutcomeUnknown)
    assert await durable.execute(notifies, id="fe", store=store) == ["unknown fe/1", "shipped p1"]


async def test_an_idempotent_final_activity_runs_again_with_the_same_key(store: Store) -> None:
    crash_in.add("ship p1 fi/2")
    with pytest.raises(Crash):
        await durable.execute(notifies, id="fi", store=store)
    assert await durable.execute(notifies, id="fi", store=store) == ["sent ann", "shipped p1"]
    assert log == ["email ann fi/1", "ship p1 fi/2"]
    history = await durable.get_handle("fi", store).history()
    assert [s.status for s in history] == [StepStatus.COMPLETED, StepStatus.COMPLETED]


@durable.activity
async def mark(tag: str) -> str:
    log.append(tag)
    return tag


@durable.workflow
async def two_branches_after_cancel() -> list[str]:
    await long_task(0.4)
    seen: list[str] = []

    async def branch(tag: str) -> None:
        try:
            await mark(tag)
        except durable.Cancelled:
            seen.append(f"cancelled {tag}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(branch, "a")
        tg.start_soon(branch, "b")
    return sorted(seen)


async def test_concurrent_steps_take_the_cancellation_once(store: Store) -> None:
    async def cancel_soon() -> None:
        await _long_task_started()
        await durable.get_handle("x5", store).cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_soon)
        result = await durable.execute(two_branches_after_cancel, id="x5", store=store)
    assert len(result) == 1  # exactly one branch got it; the other ran its step
    run = await store.get_run("x5")
    assert run is not None and run.cancelled_seq in (2, 3)
    other = "b" if result == ["cancelled a"] else "a"
    assert log == ["long started", "long finished", other]
