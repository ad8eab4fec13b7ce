"""A full disk under SQLite (``SQLITE_FULL``, "database or disk is full") during a commit: a
`StoreError` naming the run and the step and saying to free disk space; nothing recorded
before is lost, and once there is space the run resumes where it stopped.

Two real full conditions: the database's page limit (``PRAGMA max_page_count`` on the store's
own connection: SQLite reports it as SQLITE_FULL, exactly as a full disk), and, where this
process may mount one, a small tmpfs filled up with another file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import durable
from durable.backends import SQLStore

calls: list[str] = []


@durable.activity(name="diskfull.small")
async def small() -> str:
    calls.append("small")
    return "ok"


@durable.activity(name="diskfull.large")
async def large() -> str:
    calls.append("large")
    return os.urandom(150_000).hex()  # 300 kB that does not compress


@durable.workflow(name="diskfull.flow")
async def flow() -> int:
    await small()
    return len(await large())


@contextlib.contextmanager
def _tmpfs(size: str) -> Iterator[Path]:
    where = Path(f"/tmp/durable-tmpfs-{uuid.uuid4().hex[:8]}")
    where.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({exc})")
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)


async def _fails_then_resumes(store: SQLStore, make_room: Callable[[], object]) -> None:
    calls.clear()
    with pytest.raises(durable.StoreError) as error:
        await durable.execute(flow, id="full-run", store=store)
    message = str(error.value)
    assert "'full-run'" in message and "step 2" in message, message
    assert "full" in message and "Free disk space" in message, message
    assert "everything recorded before is kept" in message, message
    history = await durable.get_handle("full-run", store=store).history()
    assert [(s.seq, s.name, s.status) for s in history][:1] == [
        (1, "diskfull.small", durable.StepStatus.COMPLETED)
    ]
    make_room()
    assert await durable.execute(flow, id="full-run", store=store) == 300_000
    assert calls.count("small") == 1  # step 1 was kept: not executed again
    assert await durable.get_handle("full-run", store=store).status() == (
        durable.RunStatus.COMPLETED
    )


async def test_the_page_limit_reached_names_run_and_step(tmp_path: Path) -> None:
    async with SQLStore(f"sqlite:///{tmp_path / 'full.db'}") as store:
        raw = store._runner._raw  # type: ignore[attr-defined]  # the store's own connection: the limit is per connection
        pages = raw.execute("PRAGMA page_count").fetchone()[0]
        raw.execute(f"PRAGMA max_page_count = {pages + 8}")
        await _fails_then_resumes(store, lambda: raw.execute("PRAGMA max_page_count = 1000000"))


async def test_a_full_tmpfs_names_run_and_step() -> None:
    with _tmpfs("2m") as where:
        async with SQLStore(f"sqlite:///{where / 'full.db'}") as store:
            await durable.start(flow, id="warm-up", store=store)  # the schema is written
            filler = where / "filler"
            with filler.open("wb") as out:  # fill the disk, leaving ~100 kB
                free = shutil.disk_usage(where).free
                out.write(b"\0" * max(0, free - 100_000))
            await _fails_then_resumes(store, filler.unlink)
