"""Store checks of cron schedules: storing, updating, pausing and deleting them, firing a tick
exactly once (compare-and-set on ``next_tick``, even among concurrent callers), and waking the
tasks that wait for schedule changes."""

from __future__ import annotations

import dataclasses

import anyio

from durable.store import RunRecord, ScheduleRecord, Store

from ._support import WORKFLOW, _check, _get, _run, _same


def _schedule(name: str = "nightly", **fields: object) -> ScheduleRecord:
    record = ScheduleRecord(
        name=name,
        workflow=WORKFLOW,
        cron="0 0 * * *",
        timezone="UTC",
        args=b"\x80args",
        catch_up="latest",
        queue=None,
        paused=False,
        next_tick=1000.0,
        last_tick=None,
        created_at=0.0,
        updated_at=0.0,
    )
    return dataclasses.replace(record, **fields)  # type: ignore[arg-type]


def _tick_run(run_id: str, now: float = 1001.0) -> RunRecord:
    return _run(run_id, created_at=now)


@_check
async def put_schedule_creates_and_updates_a_schedule(store: Store) -> None:
    """`put_schedule` stores a new schedule as given (created and updated ``now``); an update
    takes the new definition, keeps ``created_at``, ``paused`` and ``last_tick``, and keeps
    ``next_tick`` unless the cron expression or the time zone changed."""
    _same(await store.get_schedule("nightly"), None, "get_schedule of a missing schedule")
    stored = await store.put_schedule(_schedule(), now=10.0)
    _same(stored, _schedule(created_at=10.0, updated_at=10.0), "the new schedule")
    _same(await store.get_schedule("nightly"), stored, "get_schedule after put_schedule")
    await store.set_schedule_paused("nightly", True, now=11.0)
    await store.fire_schedule(
        "nightly", expected_tick=1000.0, next_tick=2000.0, last_tick=1000.0, runs=(), now=12.0
    )  # paused: nothing fires
    same_times = _schedule(args=b"new", catch_up="all", queue="q", next_tick=5000.0)
    updated = await store.put_schedule(same_times, now=20.0)
    expected = _schedule(
        args=b"new", catch_up="all", queue="q", paused=True, created_at=10.0, updated_at=20.0
    )
    _same(updated, expected, "the schedule updated with the same cron and time zone")
    moved = await store.put_schedule(_schedule(cron="0 6 * * *", next_tick=7000.0), now=30.0)
    _same(
        (moved.cron, moved.next_tick, moved.paused, moved.created_at, moved.updated_at),
        ("0 6 * * *", 7000.0, True, 10.0, 30.0),
        "the schedule updated with another cron expression",
    )
    rezoned = await store.put_schedule(
        _schedule(cron="0 6 * * *", timezone="Europe/Paris", next_tick=8000.0), now=40.0
    )
    _same(rezoned.next_tick, 8000.0, "next_tick after a change of time zone")
    await store.put_schedule(_schedule("a-first"), now=50.0)
    names = [s.name for s in await store.list_schedules()]
    _same(names, ["a-first", "nightly"], "list_schedules, by name")


@_check
async def set_schedule_paused_pauses_and_resumes(store: Store) -> None:
    """`set_schedule_paused` sets ``paused`` and ``updated_at``; a resume given a
    ``next_tick`` takes it, a pause ignores it; a missing schedule gives ``None``."""
    _same(
        await store.set_schedule_paused("nightly", True, now=1.0),
        None,
        "pausing a missing schedule",
    )
    await store.put_schedule(_schedule(), now=10.0)
    paused = await store.set_schedule_paused("nightly", True, now=11.0, next_tick=9.0)
    assert paused is not None, "set_schedule_paused returned None for a schedule that exists"
    _same((paused.paused, paused.next_tick, paused.updated_at), (True, 1000.0, 11.0), "paused")
    resumed = await store.set_schedule_paused("nightly", False, now=12.0)
    assert resumed is not None
    _same((resumed.paused, resumed.next_tick), (False, 1000.0), "resumed without a next tick")
    await store.set_schedule_paused("nightly", True, now=13.0)
    moved = await store.set_schedule_paused("nightly", False, now=14.0, next_tick=3000.0)
    assert moved is not None
    _same((moved.paused, moved.next_tick), (False, 3000.0), "resumed with a next tick")
    _same(await store.get_schedule("nightly"), moved, "get_schedule after the resume")


@_check
async def delete_schedule_removes_it_and_keeps_its_runs(store: Store) -> None:
    """`delete_schedule` says whether the schedule existed; the runs it started stay."""
    await store.put_schedule(_schedule(), now=10.0)
    await store.fire_schedule(
        "nightly",
        expected_tick=1000.0,
        next_tick=2000.0,
        last_tick=1000.0,
        runs=[_tick_run("nightly@1000")],
        now=1001.0,
    )
    _same(await store.delete_schedule("nightly"), True, "deleting a schedule")
    _same(await store.delete_schedule("nightly"), False, "deleting it again")
    _same(await store.get_schedule("nightly"), None, "get_schedule after delete")
    _same(await store.list_schedules(), [], "list_schedules after delete")
    await _get(store, "nightly@1000")


@_check
async def fire_schedule_records_a_tick_once(store: Store) -> None:
    """`fire_schedule` records the runs and moves ``next_tick`` / ``last_tick`` only while
    the schedule expects ``expected_tick`` and is not paused; a run id already taken is
    skipped (the existing run is left as it was); ``last_tick=None`` keeps the last tick."""
    _same(
        await store.fire_schedule(
            "nightly", expected_tick=1.0, next_tick=2.0, last_tick=1.0, runs=(), now=3.0
        ),
        None,
        "firing a missing schedule",
    )
    await store.put_schedule(_schedule(), now=10.0)
    taken = _run("nightly@taken", created_at=5.0)
    await store.create_run(taken)
    fired = await store.fire_schedule(
        "nightly",
        expected_tick=1000.0,
        next_tick=2000.0,
        last_tick=1000.0,
        runs=[_tick_run("nightly@1000"), _run("nightly@taken", created_at=1001.0)],
        now=1001.0,
    )
    assert fired is not None, "fire_schedule returned None for a schedule that exists"
    _same(
        (fired.next_tick, fired.last_tick, fired.updated_at),
        (2000.0, 1000.0, 1001.0),
        "the schedule after its tick fired",
    )
    _same(await _get(store, "nightly@1000"), _tick_run("nightly@1000"), "the tick's run")
    _same(await _get(store, "nightly@taken"), taken, "a run whose id was taken before")
    again = await store.fire_schedule(
        "nightly",
        expected_tick=1000.0,
        next_tick=2000.0,
        last_tick=1000.0,
        runs=[_tick_run("nightly@1000-again")],
        now=1002.0,
    )
    _same(again, fired, "the schedule after firing the same tick again")
    _same(await store.get_run("nightly@1000-again"), None, "a run of a tick fired twice")
    skipped = await store.fire_schedule(
        "nightly", expected_tick=2000.0, next_tick=3000.0, last_tick=None, runs=(), now=2500.0
    )
    assert skipped is not None
    _same((skipped.next_tick, skipped.last_tick), (3000.0, 1000.0), "after a skipped tick")
    await store.set_schedule_paused("nightly", True, now=2600.0)
    paused = await store.fire_schedule(
        "nightly",
        expected_tick=3000.0,
        next_tick=4000.0,
        last_tick=3000.0,
        runs=[_tick_run("nightly@3000")],
        now=3001.0,
    )
    assert paused is not None
    _same((paused.next_tick, paused.paused), (3000.0, True), "firing a paused schedule")
    _same(await store.get_run("nightly@3000"), None, "a run of a paused schedule")


@_check
async def fire_schedule_lets_one_of_concurrent_callers_fire(store: Store) -> None:
    """Of many concurrent `fire_schedule` calls for the same tick, exactly one records its
    runs and moves the schedule on."""
    await store.put_schedule(_schedule(), now=10.0)

    async def fire(caller: int) -> None:
        await store.fire_schedule(
            "nightly",
            expected_tick=1000.0,
            next_tick=2000.0,
            last_tick=1000.0,
            runs=[_tick_run(f"nightly@1000-{caller}")],
            now=1001.0 + caller,
        )

    async with anyio.create_task_group() as tg:
        for caller in range(8):
            tg.start_soon(fire, caller)
    found = [await store.get_run(f"nightly@1000-{caller}") for caller in range(8)]
    _same(sum(run is not None for run in found), 1, "callers whose runs were recorded")
    after = await store.get_schedule("nightly")
    assert after is not None
    _same((after.next_tick, after.last_tick), (2000.0, 1000.0), "the schedule after the race")


@_check
async def wait_for_schedules_wakes_on_a_change(store: Store) -> None:
    """A task in `wait_for_schedules` wakes when a schedule is stored or resumed (not after
    the 60 s it asked for); with nothing written it returns by ``within``."""
    with anyio.move_on_after(10) as scope:
        await store.wait_for_schedules(within=0.05)
    assert not scope.cancelled_caught, "wait_for_schedules(within=0.05) did not return"
    for change in ("put", "resume"):
        woke: list[bool] = []

        async def waiter(woke: list[bool] = woke) -> None:
            woke.append(await store.wait_for_schedules(within=60))

        with anyio.move_on_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await anyio.sleep(0.2)
                if change == "put":
                    await store.put_schedule(_schedule(), now=10.0)
                    await store.set_schedule_paused("nightly", True, now=11.0)
                else:
                    await store.set_schedule_paused("nightly", False, now=12.0)
        assert woke == [True], f"wait_for_schedules did not wake on a schedule's {change}"
