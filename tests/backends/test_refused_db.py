"""A SQLite database durable refuses is left exactly as it was: same bytes, same journal mode,
no ``-wal`` / ``-shm`` files. Only a database durable accepts (a new one, or its own) is
switched to WAL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from durable.backends import SQLStore
from durable.backends._schema import SCHEMA_VERSION
from durable.store import SchemaVersionError, StoreError


def _runs_table_of_another_app(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE durable_runs (name TEXT)")
    db.execute("INSERT INTO durable_runs VALUES ('theirs')")


def _no_version_row(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE durable_runs (id TEXT)")
    db.execute("CREATE TABLE durable_schema (id INTEGER PRIMARY KEY, version INTEGER)")


def _invalid_version(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE durable_runs (id TEXT)")
    db.execute("CREATE TABLE durable_schema (id INTEGER PRIMARY KEY, version INTEGER)")
    db.execute("INSERT INTO durable_schema VALUES (1, 0)")


def _newer_version(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE durable_runs (id TEXT)")
    db.execute("CREATE TABLE durable_schema (id INTEGER PRIMARY KEY, version INTEGER)")
    db.execute("INSERT INTO durable_schema VALUES (1, ?)", (SCHEMA_VERSION + 1,))


@pytest.mark.parametrize(
    ("make", "error", "says"),
    [
        (_runs_table_of_another_app, StoreError, "not a durable database"),
        (_no_version_row, StoreError, "not a durable database"),
        (_invalid_version, StoreError, "invalid durable schema version"),
        (_newer_version, SchemaVersionError, "upgrade durable"),
    ],
)
def test_a_refused_database_is_left_byte_identical(
    tmp_path: Path,
    make: Callable[[sqlite3.Connection], None],
    error: type[StoreError],
    says: str,
) -> None:
    path = tmp_path / "theirs.db"
    db = sqlite3.connect(path)
    make(db)
    db.commit()
    db.close()
    before = path.read_bytes()
    assert before[18:20] == b"\x01\x01"  # the header says: rollback journal, not WAL

    with pytest.raises(error, match=says):
        SQLStore(f"sqlite:///{path}")

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.db"]  # no -wal, -shm
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        check.close()


def test_a_file_that_is_not_a_database_is_left_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"my notes, not a database\n" * 200)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a SQLite database"):
        SQLStore(f"sqlite:///{path}")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


async def test_a_new_or_own_database_is_switched_to_wal(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    async with SQLStore(f"sqlite:///{path}"):
        pass
    empty = tmp_path / "empty.db"  # an existing empty file is a new database too
    empty.touch()
    async with SQLStore(f"sqlite:///{empty}"):
        pass
    for db_path in (path, empty):
        check = sqlite3.connect(db_path)
        try:
            assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            check.close()


async def test_an_app_database_without_durable_tables_is_adopted(tmp_path: Path) -> None:
    """A database with other tables only (an application's own) gets durable's tables beside
    them, as on Postgres: it is not refused, so it may be switched to WAL."""
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    db.commit()
    db.close()
    async with SQLStore(f"sqlite:///{path}") as store:
        assert await store.get_run("x") is None
    check = sqlite3.connect(path)
    try:
        names = {row[0] for row in check.execute("SELECT name FROM sqlite_master")}
    finally:
        check.close()
    assert {"orders", "durable_runs", "durable_steps"} <= names
