"""The pytest plugin (entry point ``pytest11``: ``durable``), loaded when durable is installed.

* ``durable_env``: a started `WorkflowEnvironment` for one test (async: the test runs under the
  anyio plugin, on asyncio or trio). It uses a `MemoryStore`, or with
  ``@pytest.mark.durable(store="sqlite")`` a SQLite file in the test's temporary directory.
* ``@pytest.mark.durable(store=..., auto_skip=...)``: options for ``durable_env``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from durable.testing._environment import WorkflowEnvironment

__all__ = ["durable_env", "pytest_configure"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``durable`` marker."""
    config.addinivalue_line(
        "markers",
        'durable(store="memory", auto_skip=True): options for the durable_env fixture; '
        'store="sqlite" runs the test against a SQLite file in its temporary directory',
    )


@pytest.fixture
async def durable_env(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[WorkflowEnvironment]:
    """A started `durable.testing.WorkflowEnvironment` (see the module docstring)."""
    marker = request.node.get_closest_marker("durable")
    options = dict(marker.kwargs) if marker is not None else {}
    kind = options.pop("store", "memory")
    auto_skip = options.pop("auto_skip", True)
    if options:
        raise pytest.UsageError(f"@pytest.mark.durable got unknown options {sorted(options)}")
    if kind == "memory":
        async with WorkflowEnvironment(auto_skip=auto_skip) as env:
            yield env
    elif kind == "sqlite":
        from durable.backends import SQLStore

        async with (
            SQLStore(f"sqlite:///{tmp_path / 'durable.db'}") as store,
            WorkflowEnvironment(auto_skip=auto_skip, store=store) as env,
        ):
            yield env
    else:
        raise pytest.UsageError(
            f'@pytest.mark.durable(store=...) is "memory" or "sqlite", not {kind!r}'
        )
