"""A SQLite write that waits for another process's write lock does not stop the event loop:
the other tasks of the process (here, the one that will release the lock) keep running."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import anyio

from durable.backends import SQLStore
from durable.store import RunRecord, RunStatus


async def test_a_write_waiting_for_the_lock_lets_the_loop_run(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with SQLStore(f"sqlite:///{path}", busy_timeout=5.0) as store:
        now = time.time()
        run = RunRecord(
            id="a",
            workflow="wf",
            status=RunStatus.PENDING,
            args=b"x",
            created_at=now,
            updated_at=now,
        )
        await store.create_run(run)
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
        ticks = 0
        written: list[bool] = []

        async def write() -> None:
            await store.send_signal("a", "go", b"payload", now=time.time())
            written.append(True)

        async def release_after_ten_ticks() -> None:
            # Runs only while the write waits without blocking the loop: if the write held
            # the thread for the whole busy_timeout, the lock would never be released here
            # and the write would fail with StoreError after 5 s.
            nonlocal ticks
            while ticks < 10:
                await anyio.sleep(0.01)
                ticks += 1
            assert not written  # the write was still waiting for the lock
            other.execute("COMMIT")

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            tg.start_soon(release_after_ten_ticks)
        other.close()
        assert written == [True] and ticks == 10
