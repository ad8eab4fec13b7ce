"""Shared fixtures: async tests run on asyncio and trio; store-backed tests on every store."""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest

from durable.backends import MemoryStore, SQLStore
from durable.store import Store


async def eventually(what: str, check: Callable[[], Awaitable[bool]], within: float = 60.0) -> None:
    """Poll ``check`` until it is true. ``within`` only bounds a hang (it fails the test with
    ``what``): it is never a speed requirement, so a test must not rely on it to prove one."""
    with anyio.move_on_after(within):
        for _ in range(10_000_000):  # a state in another task or process: polled
            if await check():
                return
            await anyio.sleep(0.005)
    raise AssertionError(f"{what} did not happen within {within} s")


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


POSTGRES_URL = os.environ.get(
    "DURABLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _postgres_problem() -> str | None:
    """Why the test Postgres cannot be used, or ``None`` when it answers."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"no Postgres answers at {POSTGRES_URL} ({exc})".strip()
    return None


def require_postgres() -> str:
    """The test Postgres URL; fails the test in CI when it is missing, else skips it."""
    problem = _postgres_problem()
    if problem is None:
        return POSTGRES_URL
    if os.environ.get("CI"):
        pytest.fail(f"Postgres tests must run in CI: {problem}")
    pytest.skip(
        f"{problem}; start Postgres (or set DURABLE_TEST_POSTGRES_URL) to run the Postgres tests"
    )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def postgres_schema(prefix: str = "durable_test") -> Iterator[str]:
    """A Postgres URL whose tables live in a new schema of their own (its ``search_path``), so
    test sessions (a developer's and CI's) can share one server; the schema is dropped after."""
    import sqlalchemy as sa

    base = require_postgres()
    schema = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(
        base.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True
    )
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


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
        _empty(url)
    async with s:
        yield s


def _empty(url: str) -> None:
    """Remove every run from this session's schema so each test starts from nothing."""
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE durable_steps, durable_runs, durable_signals"))
    engine.dispose()
