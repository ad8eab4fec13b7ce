"""Shared fixtures: async tests run on asyncio and trio; store-backed tests on every store."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from durable.backends import MemoryStore, SQLStore
from durable.store import Store


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


@pytest.fixture
async def store(store_kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store
    if store_kind == "memory":
        s = MemoryStore()
    elif store_kind == "sqlite":
        s = SQLStore(f"sqlite:///{tmp_path / 'durable.db'}")
    else:
        url = require_postgres()
        _reset_postgres_once()
        s = SQLStore(url)
        await _empty(s)
    async with s:
        yield s


_reset = False


def _reset_postgres_once() -> None:
    """Drop durable's tables once per test session, so the schema is always this code's."""
    global _reset
    if _reset:
        return
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "DROP TABLE IF EXISTS durable_signals, durable_steps, durable_runs, durable_schema"
            )
        )
    engine.dispose()
    _reset = True


async def _empty(store: Store) -> None:
    """Remove every run from the shared test database so each test starts from nothing."""
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE durable_steps, durable_runs, durable_signals"))
    engine.dispose()
