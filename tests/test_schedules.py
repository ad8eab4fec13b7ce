"""Cron schedules (`durable.schedule`): one run per tick on the virtual clock, catch-up after
downtime and after a pause, time zones, updates, triggers, bad input; and under three real
worker processes on SQLite and Postgres, exactly one run per tick, also when a worker is
SIGKILLed and restarted."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from support import PROGRAMS, Processes, durable_cli, eventually, python

import durable
from durable.backends import MemoryStore, SQLStore
from durable.store import Store
from durable.testing import VirtualClock, WorkflowEnvironment

sys.path.insert(0, str(PROGRAMS))
import sched_app

DAY = timedelta(days=1)
START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # midday: the first daily tick is tomorrow


@durable.workflow
async def report(kind: str, *, day: str = "?") -> str:
    return f"{kind} {day} {durable.info().run_id}"


@durable.workflow
async def other(kind: str) -> str:
    return kind


@durable.activity
async def not_a_workflow() -> None:
    return None


def _day(d: int, hour: int = 0) -> str:
    return datetime(2026, 12, d, hour, tzinfo=UTC).isoformat()


async def _ids(store: Store, prefix: str = "nightly@") -> list[str]:
    runs = await store.list_runs(limit=10_000)
    return sorted(run.id for run in runs if run.id.startswith(prefix))


async def _schedule(env: WorkflowEnvironment, **options: object) -> durable.ScheduleInfo:
    """`durable.schedule` at the environment's virtual time, in its store."""
    with durable.executor_config(clock=env.clock):
        return await durable.schedule(
            str(options.pop("name", "nightly")),
            options.pop("workflow", report),
            cron=str(options.pop("cron", "0 0 * * *")),
            store=env.store,
            **options,  # type: ignore[arg-type]
        )


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with WorkflowEnvironment(start=START, workflows=[report]) as environment:
        yield environment


# -- on the virtual clock ----------------------------------------------------------------------


async def test_a_daily_schedule_runs_once_a_day_over_a_virtual_week(
    env: WorkflowEnvironment,
) -> None:
    info = await _schedule(env, args=("sales",), kwargs={"day": "d"})
    assert info.next_run == datetime(2026, 12, 2, tzinfo=UTC)
    await env.advance(7 * DAY)
    ids = await _ids(env.store)
    assert ids == [f"nightly@{_day(d)}" for d in range(2, 9)]
    for run_id in ids:
        assert await env.get_handle(run_id).result() == f"sales d {run_id}"
    (listed,) = await durable.list_schedules(store=env.store)
    assert listed.last_run == datetime(2026, 12, 8, tzinfo=UTC)
    assert listed.next_run == datetime(2026, 12, 9, tzinfo=UTC)


async def test_a_seconds_field_fires_every_ten_seconds(env: WorkflowEnvironment) -> None:
    await _schedule(env, name="often", cron="*/10 * * * * *")
    await env.advance(60)
    ids = await _ids(env.store, "often@")
    assert ids == [f"often@2026-12-01T12:00:{s:02d}+00:00" for s in (10, 20, 30, 40, 50)] + [
        "often@2026-12-01T12:01:00+00:00"
    ]


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [("latest", [4]), ("all", [2, 3, 4]), ("none", [])],
)
async def test_ticks_missed_while_no_worker_ran_follow_catch_up(
    store: Store, catch_up: str, expected: list[int]
) -> None:
    # The schedule is stored on 1 December; no worker runs until 4 December, 12:00.
    with durable.executor_config(clock=VirtualClock(START.timestamp())):
        await durable.schedule(
            "nightly", report, cron="0 0 * * *", args=("x",), catch_up=catch_up, store=store
        )
    later = START + timedelta(days=3)
    async with WorkflowEnvironment(start=later, store=store, workflows=[report]) as env:
        await env.advance(0)
        assert await _ids(store) == [f"nightly@{_day(d)}" for d in expected]
        await env.advance(DAY)  # from now on it runs on time, whatever catch_up says
        assert await _ids(store) == [f"nightly@{_day(d)}" for d in [*expected, 5]]
        for run_id in await _ids(store):
            assert (await env.get_handle(run_id).result()).startswith("x ? nightly@")


@pytest.mark.parametrize(
    ("catch_up", "on_resume"),
    [("latest", [5]), ("all", [3, 4, 5]), ("none", [])],
)
async def test_ticks_missed_while_paused_follow_catch_up_at_resume(
    env: WorkflowEnvironment, catch_up: str, on_resume: list[int]
) -> None:
    await _schedule(env, args=("x",), catch_up=catch_up)
    await env.advance(DAY)  # 2 December, 12:00: one run
    paused = await durable.pause_schedule("nightly", store=env.store)
    assert paused.paused and paused.next_run is None
    await env.advance(3 * DAY)  # 5 December, 12:00: nothing while paused
    assert await _ids(env.store) == [f"nightly@{_day(2)}"]
    with durable.executor_config(clock=env.clock):
        resumed = await durable.resume_schedule("nightly", store=env.store)
    assert not resumed.paused
    await env.advance(0)
    assert await _ids(env.store) == [f"nightly@{_day(d)}" for d in [2, *on_resume]]
    await env.advance(DAY)
    assert await _ids(env.store) == [f"nightly@{_day(d)}" for d in [2, *on_resume, 6]]


async def test_an_alias_fires_like_its_expression(env: WorkflowEnvironment) -> None:
    info = await _schedule(env, name="alias", cron="@Daily")
    assert info.cron == "@daily" and info.next_run == datetime(2026, 12, 2, tzinfo=UTC)
    await env.advance(2 * DAY)
    assert await _ids(env.store, "alias@") == [f"alias@{_day(2)}", f"alias@{_day(3)}"]


async def test_a_cron_in_a_time_zone_fires_at_its_utc_instant() -> None:
    # Paris is UTC+1 until the clocks go forward on 29 March 2026, UTC+2 after.
    start = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
    async with WorkflowEnvironment(start=start, workflows=[report]) as env:
        await _schedule(env, name="paris", cron="0 9 * * *", timezone="Europe/Paris")
        await env.advance(4 * DAY)
        assert await _ids(env.store, "paris@") == [
            "paris@2026-03-28T08:00:00+00:00",
            "paris@2026-03-29T07:00:00+00:00",
            "paris@2026-03-30T07:00:00+00:00",
            "paris@2026-03-31T07:00:00+00:00",
        ]


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        # Clocks go forward at 02:00: 02:30 does not exist that night and fires at 03:00.
        (datetime(2026, 3, 28, 12, tzinfo=UTC), ["2026-03-29T01:00:00", "2026-03-30T00:30:00"]),
        # Clocks go back at 03:00: 02:30 happens twice that night and fires at both instants.
        (
            datetime(2026, 10, 24, 12, tzinfo=UTC),
            ["2026-10-25T00:30:00", "2026-10-25T01:30:00", "2026-10-26T01:30:00"],
        ),
    ],
)
async def test_daylight_saving_changes_fire_as_documented(
    start: datetime, expected: list[str]
) -> None:
    async with WorkflowEnvironment(start=start, workflows=[report]) as env:
        await _schedule(env, name="dst", cron="30 2 * * *", timezone="Europe/Paris")
        await env.advance(2 * DAY)
        assert await _ids(env.store, "dst@") == [f"dst@{t}+00:00" for t in expected]


async def test_updating_a_schedule_keeps_its_tick_unless_the_cron_changes(
    env: WorkflowEnvironment,
) -> None:
    first = await _schedule(env, args=("old",))
    again = await _schedule(env, args=("new",), catch_up="all")
    assert again.next_run == first.next_run and again.created_at == first.created_at
    assert again.catch_up == "all"
    await env.advance(DAY)
    (run_id,) = await _ids(env.store)
    assert (await env.get_handle(run_id).result()).startswith("new ")
    moved = await _schedule(env, args=("new",), cron="0 6 * * *")  # 2 Dec 12:00 now
    assert moved.next_run == datetime(2026, 12, 3, 6, tzinfo=UTC)
    await env.advance(DAY)
    assert await _ids(env.store) == [f"nightly@{_day(2)}", f"nightly@{_day(3, 6)}"]


async def test_a_trigger_starts_one_run_now_and_leaves_the_ticks_alone(
    env: WorkflowEnvironment,
) -> None:
    await _schedule(env, args=("manual",))
    await durable.pause_schedule("nightly", store=env.store)  # a paused one can be triggered
    with durable.executor_config(clock=env.clock):
        handle = await durable.trigger_schedule("nightly", store=env.store)
    assert handle.id.startswith("nightly@trigger-2026-12-01T12:00:00.000000+00:00-")
    assert await env.get_handle(handle.id).result() == f"manual ? {handle.id}"
    (info,) = await durable.list_schedules(store=env.store)
    assert info.paused and info.last_run is None
    await durable.resume_schedule("nightly", store=env.store)
    await env.advance(DAY)
    assert await _ids(env.store) == [f"nightly@{_day(2)}", handle.id]


async def test_two_triggers_at_one_instant_are_two_runs(env: WorkflowEnvironment) -> None:
    await _schedule(env, args=("manual",))
    with durable.executor_config(clock=env.clock):
        first = await durable.trigger_schedule("nightly", store=env.store)
        second = await durable.trigger_schedule("nightly", store=env.store)
    assert first.id != second.id
    assert await first.result() == f"manual ? {first.id}"
    assert await second.result() == f"manual ? {second.id}"


async def test_a_deleted_schedule_fires_no_more_and_its_runs_stay(
    env: WorkflowEnvironment,
) -> None:
    await _schedule(env)
    await env.advance(DAY)
    await durable.delete_schedule("nightly", store=env.store)
    await env.advance(3 * DAY)
    assert await _ids(env.store) == [f"nightly@{_day(2)}"]
    assert await durable.list_schedules(store=env.store) == []


async def test_a_worker_fires_only_the_schedules_of_workflows_it_knows(
    env: WorkflowEnvironment,
) -> None:
    await _schedule(env, name="elsewhere", workflow=other, args=("x",))
    await env.advance(2 * DAY)
    assert await _ids(env.store, "elsewhere@") == []
    (info,) = await durable.list_schedules(store=env.store)
    assert info.next_run == datetime(2026, 12, 2, tzinfo=UTC)  # due: a worker that knows it


async def test_the_runs_of_a_schedule_carry_its_queue(env: WorkflowEnvironment) -> None:
    await _schedule(env, args=("x",), queue="reports")
    with durable.executor_config(clock=env.clock):
        triggered = await durable.trigger_schedule("nightly", store=env.store)
    await env.advance(DAY)
    for run_id in (f"nightly@{_day(2)}", triggered.id):
        run = await env.store.get_run(run_id)
        assert run is not None and run.queue == "reports", run_id


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"cron": "61 * * * *"}, ValueError, "not a valid cron expression"),
        ({"cron": "* * *"}, ValueError, "five fields"),
        ({"cron": "* * * * * * *"}, ValueError, "not a valid cron expression"),
        ({"cron": ""}, ValueError, "needs a cron expression"),
        ({"cron": "0 0 30 2 *"}, ValueError, "never fires"),
        ({"timezone": "Mars/Olympus"}, ValueError, "unknown time zone 'Mars/Olympus'"),
        ({"timezone": ""}, ValueError, "IANA time zone"),
        ({"catch_up": "some"}, ValueError, "catch_up= must be 'latest', 'all' or 'none'"),
        ({"name": "a@b"}, ValueError, "may not contain '@'"),
        ({"name": ""}, ValueError, "non-empty string"),
        ({"name": "bad\nname"}, ValueError, "control characters"),
        ({"name": "x" * 300}, ValueError, "at most 191 characters"),
        ({"workflow": not_a_workflow}, durable.NotAWorkflowError, "@activity"),
        ({"workflow": print}, durable.NotAWorkflowError, "@durable.workflow"),
        ({"args": "abc"}, TypeError, "args= takes a tuple or list"),
        ({"kwargs": ["a"]}, TypeError, "kwargs= takes a dict"),
        ({"queue": ""}, ValueError, "queue= takes a durable.Queue or a queue name"),
    ],
)
async def test_bad_input_is_refused_with_a_clear_error(
    options: dict[str, object], error: type[Exception], match: str
) -> None:
    store = MemoryStore()
    call: dict[str, object] = {"name": "nightly", "workflow": report, "cron": "0 0 * * *"}
    call.update(options)
    name, workflow = call.pop("name"), call.pop("workflow")
    with pytest.raises(error, match=match):
        await durable.schedule(name, workflow, store=store, **call)  # type: ignore[arg-type]
    assert await store.list_schedules() == []


async def test_acting_on_a_missing_schedule_raises_schedule_not_found() -> None:
    store = MemoryStore()
    for act in (
        durable.pause_schedule,
        durable.resume_schedule,
        durable.delete_schedule,
        durable.trigger_schedule,
    ):
        with pytest.raises(durable.ScheduleNotFound, match="no schedule 'nope'") as caught:
            await act("nope", store=store)
        assert caught.value.name == "nope"


# -- worker processes --------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An initialised store shared by the worker processes of one test."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'schedules.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    init = durable_cli(PROGRAMS, "db", "init", url, timeout=120)
    assert init.returncode == 0, init.stderr
    return url


def _spawn(processes: Processes, url: str, logs: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SCHED_LOG": str(log)}
    options = ("--grace", "1")  # a killed worker's runs: taken over by its host's workers
    name = logs / f"worker-{uuid.uuid4().hex[:8]}.log"
    return processes.spawn_worker("sched_app", url, name, *options, env=env)


def _seconds(run_ids: list[str], name: str) -> list[float]:
    return sorted(datetime.fromisoformat(i.removeprefix(f"{name}@")).timestamp() for i in run_ids)


async def _fired(store: Store, name: str) -> list[str]:
    return await _ids(store, f"{name}@")


async def _every_second(
    url: str, processes: Processes, tmp_path: Path, *, ticks: int, kill: bool
) -> None:
    log = tmp_path / "executions.log"
    workers = [_spawn(processes, url, tmp_path, log) for _ in range(3)]
    async with SQLStore(url) as store:
        info = await durable.schedule(
            "every-second",
            sched_app.tick,
            cron="* * * * * *",
            args=("t",),
            catch_up="all",
            store=store,
        )
        assert info.next_run is not None
        first = info.next_run.timestamp()
        killed = 0
        for target in range(3, ticks + 1, 3):

            async def enough(target: int = target) -> bool:
                return len(await _fired(store, "every-second")) >= target

            await eventually(f"{target} ticks fired", enough, within=120, every=0.05)
            if kill and killed < 2:  # SIGKILL a worker (maybe mid-transaction), start another
                victim = workers.pop(killed)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                workers.append(_spawn(processes, url, tmp_path, log))
                killed += 1
        await durable.pause_schedule("every-second", store=store)
        fired = await _fired(store, "every-second")

        async def finished() -> bool:
            runs = [await store.get_run(i) for i in fired]
            return all(r is not None and r.status.finished for r in runs)

        await eventually("every scheduled run finished", finished, within=120, every=0.1)
        assert sorted(r.id for r in await store.list_runs(limit=10_000)) == fired
    seconds = _seconds(fired, "every-second")
    assert len(seconds) >= ticks
    # One run per tick, from the first tick on: no gap, no tick twice.
    assert seconds == [first + i for i in range(len(seconds))]
    executed = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert set(executed) == set(fired)
    if not kill:
        assert set(executed.values()) == {1}


@pytest.mark.timeout(300)
def test_three_workers_fire_each_second_exactly_once(
    db_url: str, processes: Processes, tmp_path: Path
) -> None:
    anyio.run(functools.partial(_every_second, db_url, processes, tmp_path, ticks=6, kill=False))


@pytest.mark.timeout(300)
def test_a_worker_killed_and_restarted_doubles_no_tick(
    db_url: str, processes: Processes, tmp_path: Path
) -> None:
    anyio.run(functools.partial(_every_second, db_url, processes, tmp_path, ticks=12, kill=True))


async def test_a_worker_started_after_downtime_catches_up_on_a_real_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stored ten seconds "ago" (on a clock ten seconds behind); a worker starts now.
    url = f"sqlite:///{tmp_path / 'late.db'}"
    monkeypatch.setenv("SCHED_LOG", str(tmp_path / "late.log"))
    async with SQLStore(url) as store:
        behind = VirtualClock(time.time() - 10)
        with durable.executor_config(clock=behind):
            info = await durable.schedule(
                "late",
                sched_app.tick,
                cron="* * * * * *",
                args=("t",),
                catch_up="latest",
                store=store,
            )
        assert info.next_run is not None
        worker = durable.Worker(store, workflows=[sched_app.tick])
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)

            async def fired() -> bool:
                return len(await _fired(store, "late")) >= 2

            await eventually("the latest missed tick, then the next one", fired, within=60)
            worker.stop()
        seconds = _seconds(await _fired(store, "late"), "late")
        # None of the first nine missed ticks ran: only the most recent one, then the next.
        assert seconds[0] >= info.next_run.timestamp() + 9


def test_the_docs_example_runs_a_week_of_ticks(tmp_path: Path) -> None:
    docs = (Path(__file__).parent.parent / "docs" / "schedules.md").read_text()
    section = docs[docs.index("## In tests") :]
    begin = section.index("```python\n") + len("```python\n")
    code = section[begin : section.index("\n```", begin)]
    script = tmp_path / "week.py"
    script.write_text(code)
    done = python(str(script), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:-1] == [f"nightly@{_day(d)} report for ops" for d in range(2, 9)]
    assert lines[-1] == "next run: 2026-12-09 00:00:00+00:00"
