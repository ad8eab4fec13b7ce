"""Shared fixtures and hooks: async tests run on asyncio and trio; store-backed tests on every
store. Shared helpers are in ``support.py``."""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support import Processes, empty_postgres, postgres_schema

from durable.backends import MemoryStore, SQLStore
from durable.store import Store


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "alone: the test disturbs what every test shares (it restarts the Postgres server), so "
        "under pytest-xdist no other worker runs a test meanwhile",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``alone`` tests first: under pytest-xdist they then wait only for the other workers'
    first tests, not for whatever long test is running when their turn comes."""
    items.sort(key=lambda item: item.get_closest_marker("alone") is None)  # a stable sort


@pytest.fixture(autouse=True)
def _alone_or_together(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under pytest-xdist, a test marked ``alone`` waits for the other workers' tests to end
    and keeps them from starting until it is done (a reader-writer lock on files the workers
    of one run share, with a turnstile so that a waiting ``alone`` test is not starved)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    shared_dir = factory.getbasetemp().parent  # one directory per run, above each worker's
    alone = request.node.get_closest_marker("alone") is not None
    with open(shared_dir / "turnstile.lock", "a") as turnstile:
        with open(shared_dir / "tests.lock", "a") as tests:
            fcntl.flock(turnstile, fcntl.LOCK_EX)
            try:
                fcntl.flock(tests, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
            finally:
                if not alone:
                    fcntl.flock(turnstile, fcntl.LOCK_UN)
            yield  # the locks go with the files' closing


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A Postgres schema for this test session (see `postgres_schema`)."""
    with postgres_schema() as url:
        yield url


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """A new, empty Postgres schema for one test."""
    with postgres_schema("durable_fresh") as url:
        yield url


@pytest.fixture
async def store(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Store]:
    s: Store
    if store_kind == "memory":
        s = MemoryStore()
    elif store_kind == "sqlite":
        s = SQLStore(f"sqlite:///{tmp_path / 'durable.db'}")
    else:
        url = request.getfixturevalue("postgres_url")
        s = SQLStore(url)
        empty_postgres(url)
    async with s:
        yield s


@pytest.fixture
def processes() -> Iterator[Processes]:
    """The processes a test starts: whichever still run at its end are killed and reaped."""
    started = Processes()
    try:
        yield started
    finally:
        started.close()
