"""Entry points, handles, the same-id rules, and clear errors for bad input."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import sys
import time
from pathlib import Path

import anyio
import pytest
from support import eventually

import durable
from durable import RunStatus
from durable.backends import MemoryStore, SQLStore
from durable.store import LeaseOwner, Store


@durable.activity
async def double(x: int) -> int:
    return 2 * x


@durable.workflow
async def doubler(x: int) -> int:
    return await double(x)


@durable.workflow
async def other() -> None:
    return None


async def test_start_records_pending_and_execute_runs_it(store: Store) -> None:
    handle = await durable.start(doubler, 4, id="st", store=store)
    assert handle.id == "st" and await handle.status() == RunStatus.PENDING
    assert await durable.start(doubler, 4, id="st", store=store) is not None  # idempotent
    with pytest.raises(TimeoutError):
        await handle.result(timeout=0.05)  # result() never executes the run itself
    with pytest.raises(durable.WorkflowIdConflict, match=r"'st'.*other arguments"):
        await durable.execute(doubler, 999, id="st", store=store)  # the id is taken: by 4
    assert await handle.status() == RunStatus.PENDING
    assert await durable.execute(doubler, 4, id="st", store=store) == 8
    assert await handle.result(timeout=1) == 8
    assert await handle.status() == RunStatus.COMPLETED


async def test_same_id_for_another_workflow_conflicts(store: Store) -> None:
    await durable.execute(doubler, 1, id="same", store=store)
    with pytest.raises(durable.WorkflowIdConflict) as info:
        await durable.execute(other, id="same", store=store)
    assert "'same'" in str(info.value) and info.value.recorded == f"{__name__}.doubler"
    with pytest.raises(durable.WorkflowIdConflict):
        await durable.start(other, id="same", store=store)


async def test_handle_errors_for_unknown_runs(store: Store) -> None:
    handle = durable.get_handle("nope", store)
    with pytest.raises(durable.WorkflowNotFound, match="'nope'"):
        await handle.status()
    with pytest.raises(durable.WorkflowNotFound, match="'nope'"):
        await handle.history()


async def test_missing_or_empty_id_is_refused(store: Store) -> None:
    with pytest.raises(TypeError):
        await durable.execute(doubler, 1, store=store)  # type: ignore[call-arg]
    for bad in ("", "  ", None, 5):
        with pytest.raises(ValueError, match="id="):
            await durable.execute(doubler, 1, id=bad, store=store)  # type: ignore[arg-type]


async def test_non_workflow_is_refused(store: Store) -> None:
    async def plain() -> None: ...

    with pytest.raises(durable.NotAWorkflowError, match=r"@durable\.workflow"):
        await durable.execute(plain, id="x", store=store)
    with pytest.raises(durable.NotAWorkflowError, match=r"the @activity 'test_runner\.double'"):
        await durable.execute(double, 1, id="x", store=store)
    with pytest.raises(durable.NotAWorkflowError, match=r"id='x'.*<built-in function print>"):
        durable.run(print, id="x", store=store)  # type: ignore[arg-type]
    assert await store.get_run("x") is None  # nothing was recorded


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_run_inside_a_running_loop_points_to_execute() -> None:
    with pytest.raises(durable.RunningLoopError, match=r"id='loop'.*await durable\.execute"):
        durable.run(doubler, 1, id="loop", store="memory://loop")


async def test_workflow_calls_outside_a_run_are_refused() -> None:
    for call, name in ((durable.now, "now"), (durable.uuid4, "uuid4"), (durable.random, "random")):
        with pytest.raises(durable.NotInWorkflowError, match=rf"durable\.{name}\(\)"):
            call()
    with pytest.raises(durable.NotInWorkflowError, match=r"durable\.sleep\(\)"):
        await durable.sleep(1)
    with pytest.raises(durable.NotInWorkflowError, match=r"durable\.info\(\)"):
        durable.info()


async def test_bad_sleep_arguments() -> None:
    with pytest.raises(TypeError, match="timedelta"):
        await durable.sleep("1s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        await durable.sleep(-1)


def test_sync_run_uses_the_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert durable.run(doubler, 21, id="sync") == 42
    assert (tmp_path / "env.db").exists()
    assert durable.run(doubler, 21, id="sync") == 42  # a second anyio.run in the same process


def test_unknown_store_scheme_is_a_clear_error() -> None:
    handle = durable.get_handle("x", "mysql://nowhere/db")  # only builds the handle
    with pytest.raises(durable.StoreError, match=r"'mysql://nowhere/db'.*unknown scheme"):
        durable.run(doubler, 1, id="x", store="mysql://nowhere/db")
    with pytest.raises(durable.StoreError, match="mysql"):
        anyio.run(handle.status)


def test_get_handle_opens_nothing(tmp_path: Path) -> None:
    durable.get_handle("x", f"sqlite:///{tmp_path / 'lazy.db'}")
    assert not (tmp_path / "lazy.db").exists()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(durable.StoreError, match=r"notes\.txt"):
        SQLStore(f"sqlite:///{path}")
    assert path.read_text().startswith("these are my notes")


class Thing:
    pass


@durable.activity
async def make_thing() -> Thing:
    return Thing()


@durable.workflow
async def thing_flow() -> str:
    await make_thing()
    await double(1)
    return "ok"


async def test_corrupt_payload_names_run_and_step_and_other_rows_stay_readable(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    async with SQLStore(url) as store:
        await durable.execute(thing_flow, id="bad", store=store)
        await durable.execute(thing_flow, id="good", store=store)
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute(
            "UPDATE durable_steps SET result = ? WHERE run_id = 'bad' AND seq = 1",
            (b"\xd1p\x00\x00\x00\x00garbage",),
        )
    async with SQLStore(url) as store:
        with pytest.raises(durable.PayloadDecodeError) as info:
            await durable.get_handle("bad", store).history()
        assert "'bad'" in str(info.value) and "step 1" in str(info.value)
        assert len(await durable.get_handle("good", store).history()) == 2
        assert await durable.get_handle("good", store).result() == "ok"
        assert await durable.get_handle("bad", store).result() == "ok"  # the run's own row is fine


async def test_a_corrupt_step_blocks_the_run_and_a_repaired_row_resumes_it(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    async with SQLStore(url) as store:
        await durable.execute(thing_flow, id="hurt", store=store)
    with sqlite3.connect(tmp_path / "r.db") as db:
        good = db.execute("SELECT result FROM durable_steps WHERE run_id = 'hurt' AND seq = 1")
        original = good.fetchone()[0]
        db.execute("DELETE FROM durable_steps WHERE run_id = 'hurt' AND seq = 2")
        db.execute("UPDATE durable_runs SET status = 'running', result = NULL WHERE id = 'hurt'")
        db.execute(
            "UPDATE durable_steps SET result = ? WHERE run_id = 'hurt' AND seq = 1",
            (original[:-1] + bytes([original[-1] ^ 0xFF]),),
        )
    async with SQLStore(url) as store:
        with pytest.raises(durable.PayloadDecodeError) as info:
            await durable.execute(thing_flow, id="hurt", store=store)
        assert "'hurt'" in str(info.value) and "step 1" in str(info.value)
        handle = durable.get_handle("hurt", store)
        assert await handle.status() == RunStatus.BLOCKED
    with sqlite3.connect(tmp_path / "r.db") as db:
        db.execute(
            "UPDATE durable_steps SET result = ? WHERE run_id = 'hurt' AND seq = 1", (original,)
        )
    async with SQLStore(url) as store:
        assert await durable.execute(thing_flow, id="hurt", store=store) == "ok"
        assert len(await durable.get_handle("hurt", store).history()) == 2


async def test_a_run_held_by_a_dead_local_process_is_taken_over_at_once(store: Store) -> None:
    handle = await durable.start(doubler, 5, id="orphan", store=store)
    proc = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
    dead_pid = int(proc.stdout)
    lease = await store.acquire_lease(
        "orphan",
        LeaseOwner("dead-owner", socket.gethostname(), dead_pid),
        now=time.time(),
        duration=3600,
    )
    assert lease is not None
    with anyio.fail_after(60):  # at once: the lease it took over is for an hour
        assert await durable.execute(doubler, 5, id="orphan", store=store) == 10
    assert await handle.status() == RunStatus.COMPLETED


async def test_a_run_held_by_another_host_is_taken_over_when_its_lease_expires(
    store: Store,
) -> None:
    handle = await durable.start(doubler, 6, id="remote", store=store)
    lease = await store.acquire_lease(
        "remote", LeaseOwner("elsewhere", "another-host", 1), now=time.time(), duration=0.5
    )
    assert lease is not None
    started = time.time()
    with anyio.fail_after(60):  # a hang guard
        assert await durable.execute(doubler, 6, id="remote", store=store) == 12
    assert time.time() - started >= 0.3  # it waited for the expiry (not a timing bound)
    with pytest.raises(durable.LeaseLost, match="'remote'"):  # the old holder is fenced out
        await store.commit(lease, (), now=time.time())
    assert await handle.status() == RunStatus.COMPLETED


async def _leased(store: Store, run_id: str) -> bool:
    run = await store.get_run(run_id)
    return run is not None and run.lease_owner is not None


async def test_a_run_held_by_a_live_executor_is_waited_for(store: Store) -> None:
    gate = anyio.Event()

    @durable.activity
    async def gated() -> str:
        await gate.wait()
        return "opened"

    @durable.workflow
    async def waits_for_gate() -> str:
        return await gated()

    results: list[str] = []

    async def run_once() -> None:
        results.append(await durable.execute(waits_for_gate, id="live", store=store))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_once)
            await eventually("the first executor's lease", lambda: _leased(store, "live"))
            tg.start_soon(run_once)  # the same id while the first executor holds the lease
            await anyio.sleep(0.1)  # the second executor finds it held (not observable)
            gate.set()
    assert results == ["opened", "opened"]
    (only,) = await durable.get_handle("live", store).history()
    assert only.attempts == 1


def test_memory_store_is_the_same_object_per_url() -> None:
    assert (
        durable.get_handle("a", "memory://same")._store
        is durable.get_handle("b", "memory://same")._store
    )
    assert isinstance(durable.get_handle("a", "memory://same")._store, MemoryStore)


def test_run_works_across_event_loops_on_one_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'loops.db'}"
    assert durable.run(doubler, 1, id="l1", store=url) == 2
    assert anyio.run(lambda: durable.execute(doubler, 2, id="l2", store=url), backend="trio") == 4
    assert asyncio.run(durable.get_handle("l1", url).result()) == 2
    assert os.path.exists(tmp_path / "loops.db")


@durable.workflow
async def greets(name: str, greeting: str = "hello") -> str:
    return f"{greeting} {name}"


async def test_the_same_arguments_bound_differently_are_the_same_call(store: Store) -> None:
    """Positional or by name, a default given or left out: the same call, no conflict."""
    assert await durable.execute(greets, "ann", id="gb", store=store) == "hello ann"
    assert await durable.execute(greets, name="ann", id="gb", store=store) == "hello ann"
    assert await durable.execute(greets, "ann", "hello", id="gb", store=store) == "hello ann"
    with pytest.raises(durable.WorkflowIdConflict, match="other arguments"):
        await durable.execute(greets, "ann", greeting="hi", id="gb", store=store)


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def test_close_stores_releases_the_stores_opened_for_urls(tmp_path: Path) -> None:
    """Stores durable opened for URLs are closed by close_stores (their files released); a
    URL used again is opened again."""
    before = _open_files()
    urls = [f"sqlite:///{tmp_path / f'many-{i}.db'}" for i in range(20)]
    for i, url in enumerate(urls):
        assert durable.run(doubler, i, id="c", store=url) == 2 * i
    assert _open_files() > before
    anyio.run(durable.close_stores)
    assert _open_files() <= before
    assert durable.run(doubler, 3, id="c", store=urls[3]) == 6  # opened again, data kept
    anyio.run(durable.close_stores)
