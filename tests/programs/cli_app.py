"""Workflows for tests/test_cli_runs.py: the test starts their runs in its own process and acts
on them with ``durable runs ...``; a ``durable worker cli_app`` process executes them.

``cli.flaky`` fails until the environment variable CLI_APP_FIXED is set (a bug, then its fix).
"""

from __future__ import annotations

import os
from typing import Any

import durable


@durable.activity(name="cli.add")
async def add(a: int, b: int) -> int:
    return a + b


@durable.workflow(name="cli.approve_json", codec=durable.JSONCodec())
async def approve_json(order: str) -> dict[str, Any]:
    """Waits for the signal ``approve`` and returns its payload (JSON codec)."""
    total = await add(1, 2)
    payload = await durable.wait_signal("approve")
    return {"order": order, "total": total, "payload": payload}


@durable.workflow(name="cli.approve_pickle")
async def approve_pickle(order: str) -> dict[str, Any]:
    """The same on the default (pickle) codec."""
    total = await add(1, 2)
    payload = await durable.wait_signal("approve")
    return {"order": order, "total": total, "payload": payload}


@durable.activity(
    name="cli.check", retry=durable.RetryPolicy(max_attempts=2, initial_interval=0.01)
)
async def check(x: int) -> int:
    if not os.environ.get("CLI_APP_FIXED"):
        raise KeyError(f"missing {x}")
    return x * 10


@durable.workflow(name="cli.flaky")
async def flaky(x: int) -> int:
    """Fails at its second step until CLI_APP_FIXED is set."""
    first = await add(x, 1)
    return first + await check(x)


@durable.workflow(name="cli.three")
async def three(x: int) -> int:
    """Three activity steps."""
    a = await add(x, 1)
    b = await add(a, 1)
    return await add(b, 1)
