"""The pytest plugin, as a user's project sees it: a test file that imports only the user's
module gets the ``durable_env`` fixture from the installed package (entry point
``pytest11``), on asyncio and on trio, in memory or on SQLite."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from support import python

USER_MODULE = """
from datetime import timedelta

import durable


@durable.activity
async def send_reminder(invoice: str) -> str:
    return f"reminded {invoice}"


@durable.workflow
async def dunning(invoice: str) -> list[str]:
    sent = []
    for _ in range(3):
        try:
            await durable.wait_signal("paid", timeout=timedelta(days=7))
            return sent + ["paid"]
        except durable.SignalTimeout:
            sent.append(await send_reminder(invoice))
    return sent
"""

USER_TESTS = """
from datetime import timedelta

import pytest

from billing import dunning, send_reminder


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.mark.anyio
async def test_three_weeks_of_reminders(durable_env):
    started = durable_env.now()
    result = await durable_env.execute(dunning, "inv-1", id="inv-1")
    assert result == ["reminded inv-1"] * 3
    assert durable_env.now() - started == timedelta(days=21)


@pytest.mark.anyio
@pytest.mark.durable(store="sqlite")
async def test_paid_after_the_first_reminder_on_sqlite(durable_env, tmp_path):
    handle = await durable_env.start(dunning, "inv-2", id="inv-2")
    await durable_env.advance(timedelta(days=8))
    await durable_env.signal("inv-2", "paid")
    assert await handle.result() == ["reminded inv-2", "paid"]
    assert (tmp_path / "durable.db").exists()


@pytest.mark.anyio
async def test_a_mocked_reminder(durable_env):
    durable_env.mock(send_reminder, lambda invoice: "sms")
    assert await durable_env.execute(dunning, "inv-3", id="inv-3") == ["sms"] * 3
"""


@pytest.mark.timeout(600)  # a pytest process with a timeout of its own (300 s)
def test_the_fixture_works_in_a_users_project(tmp_path: Path) -> None:
    (tmp_path / "billing.py").write_text(textwrap.dedent(USER_MODULE))
    (tmp_path / "test_billing.py").write_text(textwrap.dedent(USER_TESTS))
    proc = python(
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_billing.py", cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 passed" in proc.stdout, proc.stdout
