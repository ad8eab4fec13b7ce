"""`Store.watch`: a write to a watched run wakes its watchers (in this process at once, from
other processes through the store's notifications); writes to other runs do not."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import anyio
import pytest

from durable.store import LeaseOwner, RunRecord, RunStatus, RunUpdate, Store


def _run(run_id: str) -> RunRecord:
    now = time.time()
    return RunRecord(
        id=run_id,
        workflow="wf",
        status=RunStatus.PENDING,
        args=b"\xd1p\x00\x00\x00\x00",
        created_at=now,
        updated_at=now,
    )


async def _woken_by(store: Store, watched: str, write: object) -> bool:
    """Whether watching ``watched`` returns woken when ``write()`` runs while it waits."""
    result: list[bool] = []

    async def watcher() -> None:
        result.append(await store.watch([watched], within=2.0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher)
        await anyio.wait_all_tasks_blocked()
        await write()  # type: ignore[operator]
    return result[0]


async def test_nothing_written_means_not_woken(store: Store) -> None:
    await store.create_run(_run("a"))
    assert await store.watch(["a"], within=0.05) is False


@pytest.mark.parametrize("write", ["signal", "cancel", "pause", "resume", "rollback", "release"])
async def test_writes_to_the_run_wake_its_watchers(store: Store, write: str) -> None:
    await store.create_run(_run("a"))
    now = time.time()

    async def do() -> None:
        if write == "signal":
            await store.send_signal("a", "go", b"x", now=now)
        elif write == "cancel":
            await store.request_cancel("a", now=now)
        elif write == "pause":
            await store.request_pause("a", now=now)
        elif write == "resume":
            await store.request_pause("a", now=now)
            await store.resume("a", now=now)
        elif write == "rollback":
            await store.request_rollback("a", now=now)
        else:
            lease = await store.acquire_lease("a", LeaseOwner("o", "h", 1), now=now, duration=30)
            assert lease is not None
            await store.commit(lease, (), RunUpdate(RunStatus.COMPLETED, release=True), now=now)

    assert await _woken_by(store, "a", do) is True


async def test_a_write_to_another_run_does_not_wake(store: Store) -> None:
    await store.create_run(_run("a"))
    await store.create_run(_run("b"))

    async def signal_b() -> None:
        await store.send_signal("b", "go", b"x", now=time.time())

    result: list[bool] = []

    async def watcher() -> None:
        result.append(await store.watch(["a"], within=0.3))

    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher)
        await anyio.wait_all_tasks_blocked()
        await signal_b()
    assert result == [False]


async def test_another_process_wakes_the_watcher(store: Store, store_kind: str) -> None:
    if store_kind == "memory":
        pytest.skip("a memory store lives in one process")
    url = store.url  # type: ignore[attr-defined]
    await store.create_run(_run("x"))
    program = textwrap.dedent(
        f"""
        import anyio, time
        from durable.backends import SQLStore

        async def main():
            async with SQLStore({url!r}) as store:
                await store.send_signal("x", "go", b"x", now=time.time())

        anyio.run(main)
        """
    )
    result: list[bool] = []

    async def watcher() -> None:
        result.append(await store.watch(["x"], within=60.0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher)
        await anyio.wait_all_tasks_blocked()
        done = await anyio.run_process(
            [sys.executable, "-c", program], cwd="/", check=False, stderr=subprocess.STDOUT
        )
        assert done.returncode == 0, done.stdout.decode()[-2000:]
    assert result == [True]  # woken by the other process's write, not by the 60 s limit
