"""Tests for examples/approval.py, written as a user of durable writes them: the
``durable_env`` fixture (from durable's pytest plugin) runs the workflow on a virtual clock,
so a three-day wait takes milliseconds.

Run them from the examples directory: ``python -m pytest test_approval.py``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from approval import expense_approval, pay_out

import durable
from durable.testing import WorkflowEnvironment, format_history

THREE_DAYS = timedelta(days=3).total_seconds()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_an_approved_expense_is_paid(durable_env: WorkflowEnvironment) -> None:
    handle = await durable_env.start(expense_approval, "exp-1", 2500, THREE_DAYS, id="exp-1")
    await durable_env.advance(timedelta(hours=5))  # the approver takes their time
    await durable_env.signal("exp-1", "decision", "approve")
    assert await handle.result() == "paid"


@pytest.mark.anyio
async def test_no_decision_in_three_days_expires(durable_env: WorkflowEnvironment) -> None:
    started = durable_env.now()
    result = await durable_env.execute(expense_approval, "exp-2", 900, THREE_DAYS, id="exp-2")
    assert result == "expired"
    assert durable_env.now() - started == timedelta(days=3)


@pytest.mark.anyio
async def test_a_failed_payout_is_retried_by_the_caller_not_lost(
    durable_env: WorkflowEnvironment,
) -> None:
    durable_env.fail(pay_out, attempts=[1], exc=ConnectionError)
    handle = await durable_env.start(expense_approval, "exp-3", 100, THREE_DAYS, id="exp-3")
    await durable_env.signal("exp-3", "decision", "approve")
    with pytest.raises(ConnectionError):  # pay_out has no retry policy: the run fails
        await handle.result()
    steps = await durable_env.history("exp-3")
    assert steps[-1].status == durable.StepStatus.FAILED, format_history(steps)


@pytest.mark.anyio
async def test_a_crash_while_paying_out_pays_once_more_with_the_same_key(
    durable_env: WorkflowEnvironment,
) -> None:
    keys: list[str] = []

    async def fake_pay_out(expense_id: str, cents: int) -> str:
        keys.append(durable.info().idempotency_key or "")
        return f"payment-{expense_id}"

    durable_env.mock(pay_out, fake_pay_out)
    durable_env.crash(pay_out, when="after")  # the process dies before the result is recorded
    handle = await durable_env.start(expense_approval, "exp-4", 100, THREE_DAYS, id="exp-4")
    await durable_env.signal("exp-4", "decision", "approve")
    assert await handle.result() == "paid"
    assert len(keys) == 2 and keys[0] == keys[1]  # the payment provider can deduplicate
