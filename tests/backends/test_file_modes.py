"""A SQLite database durable creates is private to its owner: the file, its WAL and its
shared-memory file are mode 0600; an existing file keeps its mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import anyio
import pytest

import durable
from durable.backends import SQLStore

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


@durable.activity
async def one() -> int:
    return 1


@durable.workflow
async def flow() -> int:
    return await one()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_database_and_its_wal_are_private(tmp_path: Path) -> None:
    db = tmp_path / "private.db"
    old = os.umask(0o022)  # the usual umask, which would give 0644
    store = SQLStore(f"sqlite:///{db}")
    try:
        assert durable.run(flow, id="m", store=store) == 1
        wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
        assert wal.exists() and shm.exists()
        assert (mode(db), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)
    finally:
        os.umask(old)
        anyio.run(store.close)


def test_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    db.touch()
    db.chmod(0o640)
    store = SQLStore(f"sqlite:///{db}")
    try:
        assert durable.run(flow, id="k", store=store) == 1
    finally:
        anyio.run(store.close)
    assert mode(db) == 0o640
