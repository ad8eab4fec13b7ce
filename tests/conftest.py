"""Shared fixtures: async tests run on asyncio and trio; store-backed tests on every store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from durable.backends import MemoryStore, SQLStore
from durable.store import Store


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(store_kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store
    if store_kind == "memory":
        s = MemoryStore()
    else:
        s = SQLStore(f"sqlite:///{tmp_path / 'durable.db'}")
    async with s:
        yield s
