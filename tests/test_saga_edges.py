"""Saga edge cases found in review: ordering across crashes, cancellation races and nesting,
results that cannot be encoded, rollback preconditions, late undos, schema upgrades."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import Crash, FaultyStore, eventually

import durable
from durable import RetryPolicy, RunStatus, StepKind
from durable.backends import SQLStore
from durable.backends._schema import SCHEMA_VERSION
from durable.store import RunRecord, Store

log: list[str] = []
crash_in: set[str] = set()


class Declined(Exception):
    pass


@pytest.fixture(autouse=True)
def _clear() -> None:
    log.clear()
    crash_in.clear()


async def _timers_started(store: Store, run_id: str, count: int) -> None:
    """Wait until ``run_id`` has ``count`` sleeps under way (a cancel then meets them)."""

    async def started() -> bool:
        if await store.get_run(run_id) is None:
            return False
        history = await durable.get_handle(run_id, store).history()
        return len([s for s in history if s.kind == StepKind.TIMER]) >= count

    await eventually(f"{count} sleep(s) of {run_id!r}", started)


def _effect(name: str) -> None:
    if name in crash_in:
        crash_in.discard(name)
        raise Crash
    log.append(name)


async def release_seat(seat: str, delay: float) -> None:
    _effect(f"release {seat}")


@durable.activity(compensate=release_seat)
async def reserve_seat(seat: str, delay: float) -> str:
    await anyio.sleep(delay)
    _effect(f"reserve {seat}")
    return seat


@durable.activity
async def pay() -> None:
    raise Declined("declined")


@durable.workflow
async def seats() -> None:
    await durable.gather(reserve_seat("1A", 0.0), reserve_seat("1B", 0.02))
    await pay()


async def test_undo_order_is_the_same_after_a_crash_when_commits_lag() -> None:
    # 1A finishes first, but its commit returns after 1B's: the order must not depend on that.
    store = FaultyStore(
        lambda steps, update: 0.1 if any(s.seq == 1 and s.status != "started" for s in steps) else 0
    )
    crash_in.add("release 1B")
    with pytest.raises(Crash):
        await durable.execute(seats, id="o", store=store)
    with pytest.raises(Declined):
        await durable.execute(seats, id="o", store=store)
    # each seat released exactly once in total, newest reservation first
    reserved = [e.split()[1] for e in log if e.startswith("reserve")]
    released = [e.split()[1] for e in log if e.startswith("release")]
    assert sorted(reserved) == ["1A", "1B"] and released == reserved[::-1]
    history = await durable.get_handle("o", store).history()
    undone = [s.seq for s in history if s.kind == StepKind.COMPENSATION]
    assert len(undone) == 2


@durable.workflow
async def naps_a_day() -> str:
    await reserve_seat("9Z", 0.0)
    await durable.sleep(86400)
    return "woke"


async def test_a_cancel_seen_while_the_sleep_is_being_recorded_is_not_lost() -> None:
    store = FaultyStore(
        lambda steps, update: 0.5 if update is not None and update.status == "sleeping" else 0
    )

    async def cancel_soon() -> None:
        await anyio.sleep(0.05)
        await durable.get_handle("nap", store).cancel()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_soon)
            with pytest.raises(durable.Cancelled):
                await durable.execute(naps_a_day, id="nap", store=store)
    assert log == ["reserve 9Z", "release 9Z"]


async def failing_release(seat: str) -> None:
    raise OSError(f"cannot release {seat}")


@durable.activity(compensate=failing_release, compensate_retry=RetryPolicy(max_attempts=1))
async def hold(seat: str) -> str:
    return seat


@durable.workflow
async def block_fails_uncaught() -> None:
    async with durable.saga():
        await hold("3C")
        raise Declined("inside the block")


async def test_an_undo_failing_in_an_uncaught_block_ends_compensation_failed(
    store: Store,
) -> None:
    with pytest.raises(durable.CompensationFailed) as info:
        await durable.execute(block_fails_uncaught, id="bf", store=store)
    assert "failing_release (undoing step 1)" in str(info.value)
    assert await durable.get_handle("bf", store).status() == RunStatus.COMPENSATION_FAILED


cancel_sent: list[anyio.Event] = []


@durable.activity
async def wait_for_the_cancel() -> None:
    log.append("waiting")
    with anyio.move_on_after(30):  # a hang guard: the test sends the cancel meanwhile
        await cancel_sent[0].wait()


@durable.workflow
async def cancel_in_branches() -> None:
    await reserve_seat("4D", 0.0)
    await wait_for_the_cancel()
    async with anyio.create_task_group() as tg:
        tg.start_soon(reserve_seat, "4E", 0.0)
        tg.start_soon(reserve_seat, "4F", 0.0)


async def test_a_cancel_delivered_inside_a_task_group_ends_cancelled(store: Store) -> None:
    cancel_sent[:] = [anyio.Event()]

    async def _is_waiting() -> bool:
        return "waiting" in log

    async def cancel_soon() -> None:
        # Once 4D is reserved and the run waits in the step before the task group (a fixed
        # delay here raced the reservation on a busy machine).
        await eventually("the step before the task group", _is_waiting)
        await durable.get_handle("tgc", store).cancel()
        cancel_sent[0].set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_soon)
        with pytest.raises(durable.Cancelled):
            await durable.execute(cancel_in_branches, id="tgc", store=store)
    assert await durable.get_handle("tgc", store).status() == RunStatus.CANCELLED
    assert "release 4D" in log


@durable.activity
async def remind(tag: str) -> None:
    _effect(f"reminder {tag}")


@durable.workflow
async def two_sleepers() -> None:
    await reserve_seat("5A", 0.0)

    async def sleeper(tag: str) -> None:
        await durable.sleep(3600)
        await remind(tag)

    await durable.gather(sleeper("a"), sleeper("b"))


async def test_a_cancel_wakes_only_the_sleep_that_takes_it(store: Store) -> None:
    async def cancel_soon() -> None:
        await _timers_started(store, "ts", 2)  # both sleeps began (not a fixed delay)
        await durable.get_handle("ts", store).cancel()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_soon)
            with pytest.raises(durable.Cancelled):
                await durable.execute(two_sleepers, id="ts", store=store)
    assert not any(e.startswith("reminder") for e in log)
    assert log == ["reserve 5A", "release 5A"]


class Unencodable:
    def __reduce__(self) -> Any:
        raise TypeError("this object refuses to be pickled")


@durable.workflow
async def returns_garbage() -> Any:
    await reserve_seat("6B", 0.0)
    return Unencodable()


async def test_an_unencodable_result_compensates_and_a_crash_there_resumes(store: Store) -> None:
    crash_in.add("release 6B")
    with pytest.raises(Crash):
        await durable.execute(returns_garbage, id="ug", store=store)
    with pytest.raises(durable.SerializationError):
        await durable.execute(returns_garbage, id="ug", store=store)
    assert log == ["reserve 6B", "release 6B"]
    assert await durable.get_handle("ug", store).status() == RunStatus.FAILED


async def test_rollback_of_an_unknown_workflow_changes_nothing(store: Store) -> None:
    now = time.time()
    await store.create_run(
        RunRecord("elsewhere", "other.app.flow", RunStatus.COMPLETED, b"", now, now)
    )
    with pytest.raises(durable.DurableError, match=r"'other\.app\.flow' is not registered"):
        await durable.get_handle("elsewhere", store).rollback()
    assert await durable.get_handle("elsewhere", store).status() == RunStatus.COMPLETED


@durable.workflow
async def sleepy_child() -> str:
    await reserve_seat("7C", 0.0)
    await durable.sleep(3600)
    return "child done"


@durable.workflow
async def parent_of_sleeper() -> str:
    await reserve_seat("7P", 0.0)
    return await sleepy_child()


async def test_cancelling_a_parent_reaches_its_running_child(store: Store) -> None:
    async def cancel_soon() -> None:
        await _timers_started(store, "pc/2", 1)  # the child sleeps (not a fixed delay)
        await durable.get_handle("pc", store).cancel()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_soon)
            with pytest.raises(durable.Cancelled):
                await durable.execute(parent_of_sleeper, id="pc", store=store)
    assert await durable.get_handle("pc/2", store).status() == RunStatus.CANCELLED
    assert await durable.get_handle("pc", store).status() == RunStatus.CANCELLED
    assert log == ["reserve 7P", "reserve 7C", "release 7C", "release 7P"]


@durable.workflow
async def late_undo() -> None:
    async with anyio.create_task_group() as outer:
        async with durable.saga():
            outer.start_soon(reserve_seat, "8L", 0.05)  # completes after the block ended
        await anyio.sleep(0.1)
    raise Declined("after everything")


async def test_an_undo_registered_after_its_block_ended_is_not_lost(store: Store) -> None:
    with pytest.raises(Declined):
        await durable.execute(late_undo, id="lu", store=store)
    assert log == ["reserve 8L", "release 8L"]


@durable.activity(name="edges.unbook")
async def unbook(room: str) -> None:
    if "unbook" not in log:
        log.append("unbook")
        raise ConnectionError("transient")
    log.append(f"unbooked {room}")


@durable.activity(compensate=unbook)
async def book_room(room: str) -> str:
    return room


@durable.workflow
async def rooms() -> None:
    await book_room("12")
    raise Declined("no")


async def test_an_undo_activity_without_retry_gets_the_default_compensation_retries(
    store: Store,
) -> None:
    with pytest.raises(Declined):
        await durable.execute(rooms, id="ur", store=store)
    assert log == ["unbook", "unbooked 12"]


def test_var_positional_activities_need_var_positional_undos() -> None:
    def undo(city: str, a: str, b: str) -> None: ...

    with pytest.raises(TypeError, match=r"\*args"):

        @durable.activity(compensate=undo)
        async def book(city: str, *more: str) -> None: ...


def test_a_version_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE durable_runs (id VARCHAR PRIMARY KEY, workflow VARCHAR, status VARCHAR,
              args BLOB, created_at FLOAT, updated_at FLOAT, parent_id VARCHAR, result BLOB,
              error BLOB, error_text VARCHAR, lease_owner VARCHAR, lease_host VARCHAR,
              lease_pid BIGINT, lease_token BIGINT, lease_expires_at FLOAT);
            CREATE TABLE durable_steps (run_id VARCHAR, seq INTEGER, kind VARCHAR, name VARCHAR,
              status VARCHAR, attempts INTEGER, started_at FLOAT, finished_at FLOAT,
              result BLOB, error BLOB, location VARCHAR, PRIMARY KEY (run_id, seq));
            CREATE TABLE durable_schema (id INTEGER PRIMARY KEY, version INTEGER);
            INSERT INTO durable_schema VALUES (1, 1);
            INSERT INTO durable_runs (id, workflow, status, args, created_at, updated_at,
              lease_token) VALUES ('old', 'w', 'completed', x'', 1.0, 1.0, 0);
            """
        )
    db.close()

    async def read() -> RunRecord | None:
        async with SQLStore(f"sqlite:///{path}") as store:
            return await store.get_run("old")

    run = anyio.run(read)
    assert run is not None and run.cancel_requested is False and run.cancelled_seq is None
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM durable_schema").fetchone() == (SCHEMA_VERSION,)
    db.close()
