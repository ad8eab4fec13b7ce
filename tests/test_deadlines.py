"""Deadlines: ``timeout=`` on `durable.run` / `execute` / `start` times a run out the way
`cancel()` cancels it (compensations run once each, newest first), ends it ``timed_out`` and
raises `durable.WorkflowTimeout` to its caller; across parks, children, crashes and retries,
and on the test environment's virtual clock."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
import sqlalchemy as sa
from support import PROGRAMS, Processes, durable_cli, eventually, eventually_sync, python

import durable
from durable import RunStatus
from durable.backends import MemoryStore, SQLStore
from durable.store import RunUpdate, Store
from durable.testing import WorkflowEnvironment

sys.path.insert(0, str(PROGRAMS))
import deadline_app

booked: list[int] = []
undone: list[int] = []
cleaned: list[str] = []
counted: list[str] = []
STORES: dict[str, Store] = {}  # run id -> its store, for activities that look at their run


@pytest.fixture(autouse=True)
def _fresh() -> None:
    for seen in (booked, undone, cleaned, counted):
        seen.clear()
    STORES.clear()


async def _past_deadline(run_id: str) -> None:
    """Return once the run's recorded deadline has passed."""
    run = await STORES[run_id].get_run(run_id)
    assert run is not None and run.deadline is not None
    deadline = run.deadline
    await eventually("the run's deadline to pass", lambda: _passed_epoch(deadline), every=0.02)


async def _passed_epoch(when: float) -> bool:
    return time.time() > when


async def unbook(i: int, hold_at: int) -> None:
    undone.append(i)


@durable.activity(compensate=unbook)
async def book(i: int, hold_at: int) -> int:
    booked.append(i)
    if i == hold_at:  # in flight while the deadline passes: it finishes, the next step times out
        await _past_deadline(durable.info().run_id)
    return i


@durable.workflow
async def booking_loop(n: int, hold_at: int) -> int:
    for i in range(n):
        await book(i, hold_at)
    return n


@durable.workflow
async def napper(seconds: float) -> str:
    await durable.sleep(seconds)
    return "woke"


@durable.workflow
async def parent_of_napper() -> str:
    return await napper(3600)  # a plain call: the child inherits this run's deadline


@durable.workflow
async def parent_with_child_timeout(child_timeout: float) -> str:
    kid = f"{durable.info().run_id}/kid"
    try:
        return await durable.execute(napper, 3600, id=kid, timeout=child_timeout)
    except durable.WorkflowTimeout as exc:
        return f"child timed out: {exc.run_id}"


@durable.activity
async def count(tag: str) -> str:
    counted.append(tag)
    return tag


@durable.workflow
async def count_then_wait(tag: str) -> str:
    await count(tag)
    return str(await durable.wait_signal("go"))


@durable.activity
async def clean_up(tag: str) -> None:
    cleaned.append(tag)


@durable.workflow
async def careful(tag: str) -> str:
    try:
        await durable.sleep(3600)
    except durable.Cancelled:  # a timeout is a Cancelled: the same clean-up runs
        await clean_up(tag)
        raise
    return "slept"


async def _info(store: Store, run_id: str) -> durable.RunInfo:
    return await durable.get_handle(run_id, store=store).describe()


# -- on every store ----------------------------------------------------------------------------


async def test_a_run_times_out_in_its_activity_loop_and_is_compensated(store: Store) -> None:
    STORES["loop"] = store
    with pytest.raises(durable.WorkflowTimeout) as caught:
        await durable.execute(booking_loop, 100, 3, id="loop", store=store, timeout=2.0)
    error = caught.value
    assert isinstance(error, TimeoutError) and isinstance(error, durable.DurableError)
    assert isinstance(error, durable.Cancelled)
    info = await _info(store, "loop")
    assert info.status == RunStatus.TIMED_OUT
    assert error.run_id == "loop" and error.deadline == info.deadline
    assert info.deadline is not None and "'loop'" in str(error)
    assert f"{info.deadline:%Y-%m-%d %H:%M:%S}" in str(error)
    assert booked == [0, 1, 2, 3]  # the step after the deadline never started
    assert undone == [3, 2, 1, 0]  # each undo once, newest first
    with pytest.raises(durable.WorkflowTimeout):  # the recorded outcome, nothing runs again
        await durable.get_handle("loop", store=store).result(timeout=60)
    assert booked == [0, 1, 2, 3] and undone == [3, 2, 1, 0]


@durable.workflow
async def fan_out() -> list[int]:
    await book(0, 0)  # holds until the deadline has passed
    return list(await durable.gather(book(1, -1), book(2, -1), book(3, -1)))


async def test_concurrent_steps_after_the_deadline_never_start(store: Store) -> None:
    STORES["fan"] = store
    with pytest.raises(durable.WorkflowTimeout):
        await durable.execute(fan_out, id="fan", store=store, timeout=1.0)
    assert booked == [0] and undone == [0]
    assert (await _info(store, "fan")).status == RunStatus.TIMED_OUT


async def _cancel_requested(run_id: str) -> None:
    store = STORES[run_id]

    async def asked() -> bool:
        run = await store.get_run(run_id)
        return run is not None and run.cancel_requested

    await eventually("the cancel request", asked)


@durable.activity(compensate=unbook)
async def book_until_cancelled(i: int, hold_at: int) -> int:
    booked.append(i)
    if i == hold_at:
        await _cancel_requested(durable.info().run_id)
    return i


@durable.workflow
async def fan_out_cancelled() -> list[int]:
    await book_until_cancelled(0, 0)
    steps = (book_until_cancelled(i, -1) for i in (1, 2, 3))
    return list(await durable.gather(*steps))


async def test_concurrent_steps_after_a_cancel_never_start(store: Store) -> None:
    """The same for a cancel (the engine's delivery is shared): the gather's other branches,
    whichever took the delivery, are cancelled before they start."""
    STORES["fan-c"] = store
    handle = await durable.start(fan_out_cancelled, id="fan-c", store=store)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel_when_booked, handle)
        with pytest.raises(durable.Cancelled):
            await durable.execute(fan_out_cancelled, id="fan-c", store=store)
    assert booked == [0] and undone == [0]


async def _cancel_when_booked(handle: durable.WorkflowHandle) -> None:
    await eventually("the first booking", _booked_any)
    await handle.cancel()


async def _booked_any() -> bool:
    return bool(booked)


class _ParkWatch:
    """A store that notes how runs were parked (the updates that released them asleep)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.parked: list[RunUpdate] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def commit(self, lease: Any, steps: Any = (), update: Any = None, **kw: Any) -> Any:
        result = await self._store.commit(lease, steps, update, **kw)
        if result is None and update is not None and update.release:
            if update.status == RunStatus.SLEEPING:
                self.parked.append(update)
        return result


async def test_a_parked_run_wakes_for_its_deadline_and_times_out(store: Store) -> None:
    watched = _ParkWatch(store)
    worker = durable.Worker(cast(Store, watched), [napper], park_after=0.1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        handle = await durable.start(napper, 3600, id="nap", store=store, timeout=2)
        with pytest.raises(durable.WorkflowTimeout):
            await handle.result(timeout=60)
        worker.stop()
    info = await handle.describe()
    assert info.status == RunStatus.TIMED_OUT and info.deadline is not None
    run = await store.get_run("nap")
    (parked,) = watched.parked  # parked once, due at its deadline rather than in an hour
    assert run is not None and parked.wake_at == run.deadline
    assert info.attempts == 2  # taken up again (by the worker) for the deadline


async def test_a_child_inherits_its_parents_deadline(store: Store) -> None:
    with pytest.raises(durable.WorkflowTimeout) as caught:
        await durable.execute(parent_of_napper, id="p", store=store, timeout=1.5)
    assert caught.value.run_id == "p"
    parent = await _info(store, "p")
    (child,) = (await durable.list_runs(parent="p", store=store)).runs
    assert child.deadline == parent.deadline
    assert parent.status == child.status == RunStatus.TIMED_OUT


async def test_a_child_timeout_shorter_than_the_parents_is_its_own(store: Store) -> None:
    result = await durable.execute(
        parent_with_child_timeout, 0.3, id="q", store=store, timeout=3600
    )
    assert result == "child timed out: q/kid"
    parent, child = await _info(store, "q"), await _info(store, "q/kid")
    assert parent.status == RunStatus.COMPLETED and child.status == RunStatus.TIMED_OUT
    assert parent.deadline is not None and child.deadline is not None
    assert child.deadline < parent.deadline
    # A longer child timeout is cut to the parent's deadline. The parent catches the child's
    # timeout and returns: no step of its own came after its deadline.
    await durable.start(parent_with_child_timeout, 7200, id="r", store=store, timeout=0.5)
    result = await durable.execute(parent_with_child_timeout, 7200, id="r", store=store)
    assert result == "child timed out: r/kid"
    assert (await _info(store, "r/kid")).deadline == (await _info(store, "r")).deadline


async def test_a_retried_timed_out_run_has_no_deadline_and_completes(store: Store) -> None:
    with pytest.raises(durable.WorkflowTimeout):
        await durable.execute(count_then_wait, "t", id="t", store=store, timeout=0.5)
    handle = durable.get_handle("t", store=store)
    await handle.retry()
    info = await handle.describe()
    assert info.status == RunStatus.PENDING and info.deadline is None
    await handle.signal("go", "went")
    assert await durable.execute(count_then_wait, "t", id="t", store=store) == "went"
    assert counted == ["t"]  # the step before the timeout was kept, not run again


async def test_a_workflow_cleaning_up_on_cancelled_cleans_up_on_a_timeout(store: Store) -> None:
    with pytest.raises(durable.WorkflowTimeout):
        await durable.execute(careful, "c", id="c", store=store, timeout=0.3)
    assert cleaned == ["c"]  # delivered once: the clean-up step after it ran
    assert (await _info(store, "c")).status == RunStatus.TIMED_OUT


@durable.activity
async def report_timeout(tag: str) -> None:
    cleaned.append(f"{tag} timed out")


@durable.workflow
async def tells_timeouts_apart(tag: str) -> str:
    try:
        await durable.sleep(3600)
    except durable.WorkflowTimeout:
        await report_timeout(tag)
        raise
    except durable.Cancelled:
        await clean_up(f"{tag} cancelled")
        raise
    return "slept"


async def test_the_exported_history_of_a_timed_out_run_replays() -> None:
    store = MemoryStore()
    with pytest.raises(durable.WorkflowTimeout):
        await durable.execute(tells_timeouts_apart, "h", id="h", store=store, timeout=0.2)
    assert cleaned == ["h timed out"]
    history = await durable.get_handle("h", store=store).export_history()
    await durable.testing.replay(tells_timeouts_apart, history)  # the timeout again, not a cancel


async def test_a_cancel_before_the_deadline_wins(store: Store) -> None:
    handle = await durable.start(careful, "k", id="k", store=store, timeout=3600)
    await handle.cancel()
    with pytest.raises(durable.Cancelled) as caught:
        await durable.execute(careful, "k", id="k", store=store)
    assert not isinstance(caught.value, durable.WorkflowTimeout)
    assert (await handle.status()) == RunStatus.CANCELLED


async def test_a_run_picked_up_after_its_deadline_times_out_at_its_first_step(
    store: Store,
) -> None:
    handle = await durable.start(count_then_wait, "late", id="late", store=store, timeout=0.05)
    deadline = (await handle.describe()).deadline
    assert deadline is not None
    await eventually("the deadline to pass", lambda: _passed(deadline))
    with pytest.raises(durable.WorkflowTimeout):
        await durable.execute(count_then_wait, "late", id="late", store=store)
    assert counted == []  # its first step was where the timeout was delivered
    assert [s.seq for s in await handle.history()] == []


async def _passed(when: datetime) -> bool:
    return datetime.now(UTC) > when


async def test_an_existing_run_keeps_its_own_deadline(store: Store) -> None:
    first = await durable.start(count_then_wait, "x", id="x", store=store, timeout=3600)
    deadline = (await first.describe()).deadline
    await durable.start(count_then_wait, "x", id="x", store=store, timeout=1)
    assert (await first.describe()).deadline == deadline
    assert deadline is not None and (await first.describe()).deadline is not None


# -- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "words"),
    [
        (0, "finite number of seconds > 0"),
        (-1, "finite number of seconds > 0"),
        (timedelta(seconds=-5), "finite number of seconds > 0"),
        (float("nan"), "finite number"),
        (float("inf"), "finite number"),
        (True, "seconds or a timedelta"),
        ("5", "seconds or a timedelta"),
    ],
)
async def test_bad_timeouts_are_refused_naming_the_run(given: Any, words: str) -> None:
    store = MemoryStore()
    with pytest.raises(ValueError, match=words) as caught:
        await durable.start(count_then_wait, "b", id="bad-1", store=store, timeout=given)
    assert "'bad-1'" in str(caught.value) and "durable.start" in str(caught.value)
    with pytest.raises(ValueError, match=words) as caught:
        await durable.execute(count_then_wait, "b", id="bad-2", store=store, timeout=given)
    assert "'bad-2'" in str(caught.value) and "durable.execute" in str(caught.value)
    assert await store.get_run("bad-1") is None and await store.get_run("bad-2") is None


def test_durable_run_takes_a_timeout() -> None:
    store = MemoryStore()
    with pytest.raises(durable.WorkflowTimeout):
        durable.run(napper, 3600, id="sync", store=store, timeout=timedelta(seconds=0.2))
    with pytest.raises(ValueError, match="'sync-bad'"):
        durable.run(napper, 1, id="sync-bad", store=store, timeout=-1)


def test_a_delayed_start_counts_its_timeout_from_its_start_time() -> None:
    async def main() -> None:
        store = MemoryStore()
        handle = await durable.start(napper, 1, id="d", store=store, delay=60, timeout=10)
        info = await handle.describe()
        assert info.wake_at is not None and info.deadline is not None
        assert info.deadline - info.wake_at == timedelta(seconds=10)

    anyio.run(main)


# -- the virtual clock -------------------------------------------------------------------------


async def test_the_test_environment_times_runs_out_on_its_virtual_clock() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    async with WorkflowEnvironment(start=start, workflows=[napper, careful]) as env:
        began = time.monotonic()
        with pytest.raises(durable.WorkflowTimeout) as caught:
            await env.execute(napper, 2 * 86400, id="v", timeout=timedelta(days=1))
        assert caught.value.deadline == start + timedelta(days=1)
        assert env.now() == start + timedelta(days=1)  # not the two days of the sleep
        assert (await env.get_handle("v").status()) == RunStatus.TIMED_OUT
        with pytest.raises(durable.WorkflowTimeout):
            await env.execute(careful, "v2", id="v2", timeout=timedelta(minutes=30))
        assert cleaned == ["v2"]
        assert time.monotonic() - began < 30  # a bound against hanging, not a timing check


# -- crashes: real worker processes ------------------------------------------------------------


def _move_deadline(url: str, run_id: str, when: float) -> None:
    """Set the run's recorded deadline (the test's stand-in for waiting until it comes)."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE durable_runs SET deadline = :d WHERE id = :id"),
            {"d": when, "id": run_id},
        )
    engine.dispose()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _crash_then_time_out(processes: Processes, url: str, tmp_path: Path) -> None:
    """A worker process is SIGKILLed while the third booking is in flight; the deadline
    passes while no worker runs; a new worker process times the run out."""
    side = tmp_path / "side.txt"
    env = {**os.environ, "SIDE_FILE": str(side)}
    first = processes.spawn_worker(
        "deadline_app", url, tmp_path / "first.log", env={**env, "HOLD_AT": "2"}
    )

    async def start() -> None:
        async with SQLStore(url) as store:
            await durable.start(deadline_app.trip, 5, id="trip", store=store, timeout=3600)

    anyio.run(start)
    eventually_sync("the third booking in flight", lambda: "start 2" in _lines(side))
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    deadline = time.time() + 0.2
    _move_deadline(url, "trip", deadline)  # it passes while no worker runs
    eventually_sync("the deadline to pass", lambda: time.time() > deadline)
    second = processes.spawn_worker("deadline_app", url, tmp_path / "second.log", env=env)

    async def outcome() -> tuple[BaseException | None, RunStatus]:
        async with SQLStore(url) as store:
            handle = durable.get_handle("trip", store=store)
            try:
                await handle.result(timeout=120)
            except durable.WorkflowTimeout as exc:
                return exc, await handle.status()
            return None, await handle.status()

    error, status = anyio.run(outcome)
    second.send_signal(signal.SIGTERM)
    second.wait(timeout=60)
    assert isinstance(error, durable.WorkflowTimeout) and status == RunStatus.TIMED_OUT
    # The booking in flight was not started again after the deadline, nothing after it ran,
    # and the completed bookings were undone once each, newest first.
    assert _lines(side) == ["start 0", "done 0", "start 1", "done 1", "start 2", "undo 1", "undo 0"]


def test_deadline_after_a_crash_sqlite(processes: Processes, tmp_path: Path) -> None:
    _crash_then_time_out(processes, f"sqlite:///{tmp_path / 'deadline.db'}", tmp_path)


def test_deadline_after_a_crash_postgres(
    processes: Processes, tmp_path: Path, fresh_postgres_url: str
) -> None:
    init = durable_cli(PROGRAMS, "db", "init", fresh_postgres_url, timeout=120)
    assert init.returncode == 0, init.stderr
    _crash_then_time_out(processes, fresh_postgres_url, tmp_path)


# -- what operators see ------------------------------------------------------------------------


def test_the_cli_and_the_web_view_show_timed_out_runs_and_deadlines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from starlette.testclient import TestClient

    import durable.ui
    from durable._cli import main

    url = f"sqlite:///{tmp_path / 'ops.db'}"
    try:
        with pytest.raises(durable.WorkflowTimeout):
            durable.run(napper, 3600, id="ops", store=url, timeout=0.2)
        durable.run(napper, 0, id="fine", store=url)
        capsys.readouterr()
        assert main(["runs", "list", "--status", "timed_out", "--store", url, "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [run["id"] for run in listed] == ["ops"]
        assert main(["runs", "show", "ops", "--store", url, "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        info = anyio.run(durable.get_handle("ops", store=url).describe)
        assert info.deadline is not None
        assert shown["status"] == "timed_out"
        assert shown["deadline"] == info.deadline.isoformat()
        assert main(["runs", "show", "ops", "--store", url]) == 0
        text = capsys.readouterr().out
        (line,) = [line for line in text.splitlines() if line.startswith("deadline ")]
        assert "timed_out" in text and f"{info.deadline:%Y-%m-%d %H:%M:%S} UTC" in line
        with TestClient(durable.ui.create_app(url)) as client:
            page = client.get("/run", params={"id": "ops"})
            assert page.status_code == 200
            assert 's-timed_out">timed out<' in page.text and "Deadline" in page.text
            listing = client.get("/", params={"status": "timed_out"})
            assert "ops" in listing.text
    finally:
        anyio.run(durable.close_stores)


def test_the_example_in_the_docs_runs(tmp_path: Path) -> None:
    doc = (Path(__file__).parent.parent / "docs" / "deadlines.md").read_text()
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.py").write_text(example)
    done = python("example.py", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "released o-1"  # the undo ran before the caller saw it
    assert done.stdout.splitlines()[1].startswith("o-1 timed out at ")
